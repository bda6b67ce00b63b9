"""WebShop goals and splits over the generated catalogue, and the loaders of the real files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from agentenv.envs.webshop.catalog import (
    CatalogConfig,
    catalog_variants,
    generate_catalog,
)
from agentenv.envs.webshop.products import Goal, Product
from agentenv.envs.webshop.tasks import (
    NO_PRICE_BOUND,
    DataFormatError,
    GoalConfig,
    generate_goals,
    goal_by_id,
    goal_ids,
    goal_space,
    load_attributes,
    load_human_goals,
    load_products,
    parse_pricing,
    price_upper,
    split_sizes,
    synthetic_goals,
)

DATA = Path(__file__).parent / "data"
SHUFFLE, INS, HUMAN = (
    DATA / "items_shuffle_small.json",
    DATA / "items_ins_v2_small.json",
    DATA / "items_human_ins_small.json",
)
CATALOG, GOALS = CatalogConfig(), GoalConfig()
_GOAL_SCRIPT = (
    "from agentenv.envs.webshop.catalog import CatalogConfig\n"
    "from agentenv.envs.webshop.tasks import GoalConfig, goal_by_id\n"
    "for i in ('train-0', 'train-99', 'test-0', 'test-499', 'compositional-7'):\n"
    "    g = goal_by_id(CatalogConfig(), GoalConfig(), i)\n"
    "    print(g.asin, g.instruction, g.price_upper)\n"
)


def _by_asin(config: CatalogConfig = CATALOG) -> dict[str, Product]:
    return {p.asin: p for p in generate_catalog(config)}


def _train(n: int, catalog: CatalogConfig = CATALOG, goals: GoalConfig = GOALS) -> list[Goal]:
    return [goal_by_id(catalog, goals, f"train-{k}") for k in range(n)]


def _finite(split: str, catalog: CatalogConfig = CATALOG, goals: GoalConfig = GOALS) -> list[Goal]:
    return [goal_by_id(catalog, goals, i) for i in goal_ids(catalog, goals, split)]


def _pairs(goal: Goal) -> set[tuple[str, str]]:
    return {(a, goal.product_category) for a in goal.attributes}


def _key(goal: Goal) -> tuple:
    return goal.asin, frozenset(goal.attributes), tuple(sorted(goal.options.items()))


# ---------------------------------------------------------------------------------------------
# Goals and splits
# ---------------------------------------------------------------------------------------------
def test_split_sizes_follow_the_config() -> None:
    assert split_sizes(GOALS) == {"train": None, "test": 500, "compositional": 200}
    assert split_sizes(GoalConfig(train_size=10, test_size=3))["train"] == 10
    assert len(goal_ids(CATALOG, GOALS, "test")) == 500
    assert goal_ids(CATALOG, GoalConfig(train_size=4), "train") == [f"train-{k}" for k in range(4)]
    with pytest.raises(ValueError, match="unlimited"):
        goal_ids(CATALOG, GOALS, "train")
    with pytest.raises(ValueError, match="unknown split"):
        goal_ids(CATALOG, GOALS, "dev")


def test_goals_are_identical_in_another_process() -> None:
    here = [
        goal_by_id(CATALOG, GOALS, i)
        for i in ("train-0", "train-99", "test-0", "test-499", "compositional-7")
    ]
    env = {**os.environ, "PYTHONHASHSEED": "777"}
    out = subprocess.run(
        [sys.executable, "-c", _GOAL_SCRIPT], capture_output=True, text=True, env=env, check=True
    )
    assert out.stdout.splitlines() == [f"{g.asin} {g.instruction} {g.price_upper}" for g in here]


def test_every_goal_is_satisfiable_by_its_target() -> None:
    products = _by_asin()
    for goal in _train(300) + _finite("test") + _finite("compositional"):
        target = products[goal.asin]
        assert set(goal.attributes) <= set(target.attributes)
        assert all(target.options[k] and v in target.options[k] for k, v in goal.options.items())
        assert target.price <= goal.price_upper
        assert (goal.name, goal.query, goal.category, goal.product_category) == (
            target.title,
            target.query,
            target.category,
            target.product_category,
        )
        assert 1 <= len(goal.attributes) <= 3 and goal.weight > 0


def test_instructions_name_what_the_goal_checks() -> None:
    for goal in _train(200):
        text = goal.instruction
        assert text.startswith(("i ", "i'm ", "find me ")) and text.endswith(".")
        assert goal.query in text and all(a in text for a in goal.attributes)
        assert all(f"{k}: {v}" in text for k, v in goal.options.items())
        assert text.endswith(f", and price lower than {goal.price_upper:.2f} dollars.")


def test_goals_ask_for_all_options_by_default_and_none_with_max_options_0() -> None:
    products = _by_asin()
    assert all(goal.options.keys() == products[goal.asin].options.keys() for goal in _train(100))
    no_options = GoalConfig(max_options=0)
    assert all(not g.options for g in _train(100, goals=no_options))


def test_attribute_count_knob() -> None:
    three = GoalConfig(min_attributes=3, max_attributes=3)
    space = goal_space(CATALOG, three)
    products = _by_asin()
    for goal in _train(100, goals=three):
        target = products[goal.asin]
        allowed = [
            a for a in target.attributes if (a, target.product_category) not in space.heldout
        ]
        assert len(goal.attributes) == min(3, len(allowed))


def test_test_and_train_targets_are_disjoint_and_finite_splits_distinct() -> None:
    test = _finite("test")
    comp = _finite("compositional")
    assert len({_key(g) for g in test}) == len(test) == 500
    assert len({_key(g) for g in comp}) == len(comp) == 200
    test_targets = {g.asin for g in test}
    assert test_targets.isdisjoint(g.asin for g in _train(2000))
    assert test_targets.isdisjoint(g.asin for g in comp)


def test_compositional_goals_pair_seen_attributes_and_categories_in_unseen_ways() -> None:
    space = goal_space(CATALOG, GOALS)
    assert space.heldout
    train = _train(3000)
    train_pairs = set().union(*map(_pairs, train))
    assert train_pairs.isdisjoint(space.heldout)
    assert all(_pairs(g).isdisjoint(space.heldout) for g in _finite("test"))
    train_attrs = {a for a, _ in train_pairs}
    train_cats = {c for _, c in train_pairs}
    for goal in _finite("compositional"):
        held = _pairs(goal) & space.heldout
        assert held
        assert all(a in train_attrs and c in train_cats for a, c in held)


def test_heldout_fraction_knob() -> None:
    none = goal_space(CATALOG, GoalConfig(heldout_fraction=0.0, compositional_size=0))
    assert not none.heldout
    many = goal_space(CATALOG, GoalConfig(heldout_fraction=0.4))
    assert len(many.heldout) > len(goal_space(CATALOG, GOALS).heldout)


def test_price_bound_follows_webshops_rule_seeded() -> None:
    rng = np.random.default_rng(0)
    bounds = {price_upper(23.5, rng) for _ in range(200)}
    assert bounds == {40.0, 50.0, 60.0}  # larger of two of 30, 40, 50, 60
    assert price_upper(20.0, rng, candidates=1) == 30.0
    assert price_upper(19.99, rng, candidates=1) == 20.0
    a = price_upper(55.0, np.random.default_rng([3, 4]))
    assert a == price_upper(55.0, np.random.default_rng([3, 4]))


def test_tight_prices_put_price_distractors_out_of_budget() -> None:
    tight = GoalConfig(price_candidates=1)
    products = _by_asin()
    for goal in _train(200, goals=tight):
        price = products[goal.asin].price
        assert price < goal.price_upper <= price + 10.0
    variants = catalog_variants(CATALOG)
    price_twins = {base: asin for asin, (base, kind) in variants.items() if kind == "price"}
    checked = 0
    for goal in _train(3000):
        if goal.asin in price_twins:
            assert products[price_twins[goal.asin]].price > goal.price_upper
            checked += 1
    assert checked > 10


def test_rarer_attributes_weigh_more() -> None:
    products = generate_catalog(CATALOG)
    counts: dict[str, int] = {}
    for p in products:
        for a in p.attributes:
            counts[a] = counts.get(a, 0) + 1
    singles = [g for g in _train(500) if len(g.attributes) == 1]
    rare = min(singles, key=lambda g: counts[g.attributes[0]])
    common = max(singles, key=lambda g: counts[g.attributes[0]])
    assert rare.weight > common.weight


def test_bad_goal_ids_are_refused() -> None:
    for bad in ("dev-1", "test-500", "train", "compositional-x"):
        with pytest.raises(KeyError):
            goal_by_id(CATALOG, GOALS, bad)


def test_generate_goals_over_any_product_list() -> None:
    products = generate_catalog(CatalogConfig(seed=5, num_products=400))
    config = GoalConfig(test_size=20, compositional_size=10)
    goals = generate_goals(products, config, split="test")
    assert len(goals) == 20 and all(g.id.startswith("test-") for g in goals)
    assert generate_goals(products, config, "train", n=5) == generate_goals(
        products, config, "train", n=5
    )
    with pytest.raises(ValueError, match="only"):
        generate_goals(products[:10], GoalConfig(test_size=500), "test")


def test_bad_goal_configs_are_refused() -> None:
    for bad in (
        {"min_attributes": 0},
        {"min_attributes": 3, "max_attributes": 2},
        {"price_candidates": 0},
        {"test_fraction": 1.0},
        {"heldout_fraction": -0.1},
        {"test_size": -1},
    ):
        with pytest.raises(ValueError):
            GoalConfig(**bad)


# ---------------------------------------------------------------------------------------------
# Loaders of the real WebShop files (small synthetic files in their format)
# ---------------------------------------------------------------------------------------------
def test_load_products_maps_webshop_fields() -> None:
    products = load_products(SHUFFLE, load_attributes(INS))
    assert [p.asin for p in products] == ["B0TEST0001", "B0TEST0002", "B0TEST0003", "B0TEST0004"]
    shampoo, earbuds, table, sofa = products
    assert shampoo.title.startswith("Lumora Sulfate Free Shampoo")
    assert shampoo.description == "A gentle shampoo with natural ingredients."
    assert shampoo.bullet_points[0] == "Sulfate free formula"
    assert shampoo.query == "shampoo" and shampoo.category == "beauty"
    assert shampoo.options == {
        "size": ("8 fl oz", "16 fl oz"),
        "scent": ("lavender | mint", "unscented"),
    }
    assert shampoo.attributes == ("sulfate free", "dry hair", "natural ingredients")
    assert (shampoo.pricing, shampoo.price) == ((12.99,), 12.99)
    assert (earbuds.pricing, earbuds.price) == ((5.0, 9.5), 7.25)
    assert earbuds.bullet_points == ("Up to 30 hours of battery life",)
    assert earbuds.options == {"color": ("black | white", "navy blue", "rose gold")}
    assert (table.pricing, table.price, table.options) == ((100.0,), 100.0, {})
    assert sofa.price == 1249.0
    assert len(load_products(SHUFFLE, num_products=2)) == 2
    assert load_products(SHUFFLE)[0].attributes == ()


def test_parse_pricing() -> None:
    assert parse_pricing("$1,299.00") == (1299.0,)
    assert parse_pricing("$5 - $9") == (5.0, 9.0)
    assert parse_pricing(None) == parse_pricing("") == (100.0,)
    with pytest.raises(DataFormatError, match="pricing"):
        parse_pricing("12.99")


def test_load_attributes() -> None:
    entries = load_attributes(INS)
    assert entries["B0TEST0002"].instruction_attributes == ("wireless", "noise cancelling")
    assert entries["B0TEST0003"].instruction is None
    assert entries["B0TEST0003"].attributes == ("solid wood",)


def test_load_human_goals() -> None:
    products = load_products(SHUFFLE, load_attributes(INS))
    goals = load_human_goals(HUMAN, products)
    assert [(g.id, g.asin) for g in goals] == [
        ("human-0", "B0TEST0001"),
        ("human-1", "B0TEST0002"),
        ("human-2", "B0TEST0004"),
    ]
    shampoo, earbuds, sofa = goals
    assert shampoo.options == {"scent": "lavender | mint"}
    assert shampoo.attributes == ("sulfate free",)
    assert shampoo.instruction == (
        "i need a sulfate free shampoo in lavender mint scent, and price lower than "
        f"{shampoo.price_upper:.2f} dollars"
    )
    assert shampoo.price_upper in (30.0, 40.0, 50.0)
    assert earbuds.options == {"color": "navy blue"} and earbuds.price_upper in (20.0, 30.0, 40.0)
    assert (
        sofa.price_upper == NO_PRICE_BOUND and sofa.instruction == "a grey sofa for the living room"
    )
    assert all(g.weight == 1.0 for g in goals)
    assert load_human_goals(HUMAN, products) == goals


def test_synthetic_goals_from_loaded_products() -> None:
    instructions = load_attributes(INS)
    products = load_products(SHUFFLE, instructions)
    goals = synthetic_goals(products, instructions)
    assert [g.asin for g in goals].count("B0TEST0001") == 4  # 2 sizes x 2 scents
    assert [g.asin for g in goals].count("B0TEST0002") == 3
    assert [g.asin for g in goals].count("B0TEST0004") == 2
    assert "B0TEST0003" not in {g.asin for g in goals}  # no instruction
    first = goals[0]
    assert first.instruction.startswith(
        "i need a sulfate free shampoo for dry hair with scent: lavender | mint, and size: 8 fl oz"
    )
    assert len({g.price_upper for g in goals if g.asin == "B0TEST0001"}) == 1
    assert first.weight == pytest.approx(0.25)  # each attribute asked by 4 goals


def _write(tmp_path: Path, data: object, name: str = "items.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(data))
    return path


def _item(**fields: object) -> dict:
    item = json.loads(SHUFFLE.read_text())[1]
    item.update(fields)
    return item


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"name": None}, r"item 1 \(asin 'B0BAD00001'\): field 'name' must be str"),
        ({"pricing": "12.99"}, r"item 1 .*field 'pricing'"),
        ({"pricing": 12.99}, r"item 1 .*field 'pricing' must be a string"),
        (
            {"customization_options": {"Color": [{"value": 3}]}},
            r"'customization_options.Color\[0\].value'",
        ),
        ({"small_description": [1, 2]}, r"field 'small_description' must be a list of strings"),
        ({"query": ["x"]}, r"field 'query'"),
    ],
)
def test_bad_product_entries_name_file_item_and_field(
    tmp_path: Path, change: dict, message: str
) -> None:
    good = _item(asin="B0GOOD0001")
    bad = _item(asin="B0BAD00001", **change)
    path = _write(tmp_path, [good, bad])
    with pytest.raises(DataFormatError, match=message) as info:
        load_products(path)
    assert str(path) in str(info.value)


def test_missing_product_field_and_bad_files(tmp_path: Path) -> None:
    item = _item(asin="B0BAD00002")
    del item["product_category"]
    with pytest.raises(DataFormatError, match="item 0 .*missing field 'product_category'"):
        load_products(_write(tmp_path, [item]))
    broken = tmp_path / "broken.json"
    broken.write_text('[\n{"asin": "B0X",\n oops}\n]')
    with pytest.raises(DataFormatError, match=rf"{broken}:3: invalid JSON"):
        load_products(broken)
    with pytest.raises(DataFormatError, match="expected a JSON list"):
        load_products(_write(tmp_path, {"asin": "B0X"}))
    with pytest.raises(DataFormatError, match="field 'asin' must be a string"):
        load_products(_write(tmp_path, [_item(asin=7)]))


def test_bad_attribute_and_human_entries_name_file_asin_and_field(tmp_path: Path) -> None:
    path = _write(tmp_path, {"B0X": {"instruction": 5}}, "ins.json")
    with pytest.raises(DataFormatError, match=rf"{path}: asin 'B0X': field 'instruction'"):
        load_attributes(path)
    path = _write(tmp_path, {"B0X": {"attributes": "wireless"}}, "ins2.json")
    with pytest.raises(DataFormatError, match="field 'attributes' must be a list of strings"):
        load_attributes(path)
    products = load_products(SHUFFLE)
    entry = {"instruction": "i want earbuds", "instruction_attributes": ["wireless"]}
    path = _write(tmp_path, {"B0TEST0002": [entry]}, "human.json")
    with pytest.raises(
        DataFormatError,
        match=rf"{path}: asin 'B0TEST0002' entry 0: missing field 'instruction_options'",
    ):
        load_human_goals(path, products)
    path = _write(tmp_path, {"B0TEST0002": {"instruction": "x"}}, "human2.json")
    with pytest.raises(DataFormatError, match="expected a list of entries"):
        load_human_goals(path, products)
