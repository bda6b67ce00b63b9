"""Tool-world tasks: deterministic generation, disjoint splits (entities and held-out template
combinations), the knobs, and the world's database."""

from __future__ import annotations

import itertools
from collections import Counter
from dataclasses import replace

import pytest

from agentenv.envs.tooluse.world.db import WorldConfig, build_world, state_hash
from agentenv.envs.tooluse.world.tasks import (
    HELD_OUT_PAIRS,
    TEMPLATE_CALLS,
    TEMPLATES,
    TaskConfig,
    combination_allowed,
    generate,
    parse_task_id,
    replay,
    task_by_id,
)
from agentenv.envs.tooluse.world.tools import TOOLS

WORLD = WorldConfig()
KNOBS = TaskConfig()


def tasks(split: str, count: int, config: TaskConfig = KNOBS, world: WorldConfig = WORLD):
    return [task_by_id(world, config, f"{split}-{i}") for i in range(count)]


def customers_of(task) -> set[str]:
    world = build_world(WORLD)
    ids = set()
    for call in task.gold_calls:
        for key in ("customer_id", "order_id"):
            if key in call.arguments:
                value = call.arguments[key]
                if key == "order_id":
                    rows = world.query(
                        "SELECT customer_id FROM orders WHERE order_id = ?", (value,)
                    )
                    value = rows[0]["customer_id"] if rows else None
                if value:
                    ids.add(value)
    return ids


def test_generation_is_deterministic_and_ids_round_trip() -> None:
    again = [generate(WORLD, KNOBS, "test", i) for i in range(40)]
    assert again == tasks("test", 40)
    assert [t.id for t in again] == [f"test-{i}" for i in range(40)]
    assert task_by_id(WORLD, KNOBS, "compositional-7") == generate(WORLD, KNOBS, "compositional", 7)
    assert generate(replace(WORLD, seed=1), KNOBS, "test", 0) != again[0]


@pytest.mark.parametrize("bad", ["test-500", "dev-1", "test-x", "test", ""])
def test_bad_task_ids_are_refused_with_the_form(bad: str) -> None:
    with pytest.raises(KeyError, match="task id|ids are"):
        parse_task_id(bad, KNOBS)


def test_the_world_is_seeded_and_has_ambiguous_names() -> None:
    world = build_world(WORLD)
    assert world.fingerprint == state_hash(world.template)
    assert build_world(replace(WORLD, seed=3)).fingerprint != world.fingerprint
    rows = world.query("SELECT name, COUNT(DISTINCT city) AS n FROM customers GROUP BY name")
    shared = [r["name"] for r in rows if r["n"] > 1]
    assert len(shared) >= 10
    rows = world.query("SELECT name, city, COUNT(*) AS n FROM customers GROUP BY name, city")
    assert max(r["n"] for r in rows) == 1  # a name and a city always tell customers apart


def test_gold_replay_reproduces_each_task_state_and_facts() -> None:
    world = build_world(WORLD)
    for task in tasks("train", 60):
        calls, facts, state = replay(world, task.plan, task.answer)
        assert (tuple(calls), tuple(facts), state) == (task.gold_calls, task.facts, task.gold_state)
        writes = any(TOOLS[c.name].writes for c in task.gold_calls)
        assert (state != world.fingerprint) == writes, task.id


def test_test_tasks_ask_only_about_test_customers_and_train_tasks_about_train_ones() -> None:
    world = build_world(WORLD)
    split_of = {r["customer_id"]: r["split"] for r in world.query("SELECT * FROM customers")}
    for split, entities in (("train", "train"), ("test", "test"), ("compositional", "test")):
        for task in tasks(split, 80):
            assert {split_of[c] for c in customers_of(task)} <= {entities}, task.id


def test_compositional_combinations_never_occur_in_train_or_test() -> None:
    def combos(split: str, count: int) -> set[frozenset[str]]:
        return {frozenset(t.templates) for t in tasks(split, count) if not t.no_tool}

    train, test, held = combos("train", 600), combos("test", 300), combos("compositional", 300)
    assert not held & train and not held & test
    assert all(any(pair <= c for pair in HELD_OUT_PAIRS) for c in held)
    assert not any(pair <= c for pair in HELD_OUT_PAIRS for c in train | test)
    # ... while every template of the held-out split is trained on.
    assert set().union(*held) <= set().union(*train)
    assert all(len(c) >= 2 for c in held)


def test_every_template_has_train_partners_and_held_out_pairs_exist() -> None:
    assert 5 <= len(HELD_OUT_PAIRS) <= 30
    for name in TEMPLATES:
        partners = [o for o in TEMPLATES if o != name and combination_allowed([name, o], "train")]
        assert partners, name
    for a, b in itertools.combinations(sorted(TEMPLATES), 2):
        pair = frozenset((a, b))
        assert combination_allowed([a, b], "compositional") == (pair in HELD_OUT_PAIRS)


def test_call_count_knobs_bound_the_gold_calls() -> None:
    config = TaskConfig(min_calls=4, max_calls=5, irrelevance=0.0)
    sizes = [t.num_calls for t in tasks("train", 100, config)]
    assert set(sizes) <= {4, 5} and set(sizes) == {4, 5}
    one = TaskConfig(min_calls=1, max_calls=1, max_parts=1, irrelevance=0.0)
    assert {t.templates for t in tasks("train", 60, one)} <= {
        (n,) for n, calls in TEMPLATE_CALLS.items() if calls == 1
    }
    for task in tasks("train", 60):
        assert task.num_calls == sum(TEMPLATE_CALLS.get(n, 0) for n in task.templates)


def test_compositional_needs_two_parts() -> None:
    with pytest.raises(ValueError, match="no combination"):
        generate(WORLD, TaskConfig(max_parts=1), "compositional", 0)


def test_distractor_knob_shows_that_many_unneeded_tools() -> None:
    for count in (0, 3, 6):
        for task in tasks("train", 30, TaskConfig(distractors=count, irrelevance=0.0)):
            needed = {c.name for c in task.gold_calls}
            assert needed <= set(task.tools)
            assert len(set(task.tools) - needed) == count
            assert len(task.tools) == len(set(task.tools))


def test_irrelevance_and_ambiguity_knobs() -> None:
    none = tasks("train", 200, TaskConfig(irrelevance=0.0))
    assert not any(t.no_tool for t in none)
    share = sum(t.no_tool for t in tasks("train", 400, TaskConfig(irrelevance=0.5))) / 400
    assert 0.4 < share < 0.6
    for task in tasks("train", 50, TaskConfig(irrelevance=1.0)):
        assert task.no_tool and not task.plan and task.facts[0] in task.prompt
        assert task.gold_state == build_world(WORLD).fingerprint
    clear = sum(t.ambiguous for t in tasks("train", 200, TaskConfig(ambiguity=0.0)))
    murky = sum(t.ambiguous for t in tasks("train", 200, TaskConfig(ambiguity=1.0)))
    assert clear == 0 and murky > 100


def test_ambiguous_lookups_return_several_customers_and_name_the_city() -> None:
    world = build_world(WORLD)
    config = TaskConfig(ambiguity=1.0, irrelevance=0.0)
    seen = 0
    for task in tasks("train", 80, config):
        for call in task.gold_calls:
            if call.name == "find_customer":
                rows = world.query(
                    "SELECT city FROM customers WHERE name LIKE ?", (f"%{call.arguments['name']}%",)
                )
                assert len(rows) > 1
                assert any(
                    f"{call.arguments['name']} from {r['city']}" in task.prompt for r in rows
                )
                seen += 1
    assert seen > 30


def test_templates_mix_in_train() -> None:
    counts = Counter(n for t in tasks("train", 400) for n in t.templates)
    assert set(counts) == {*TEMPLATES, "irrelevance"}
