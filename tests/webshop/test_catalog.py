"""The procedural WebShop catalogue: determinism, realism, knobs and near-duplicate distractors."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections import Counter

import pytest

from agentenv.envs.webshop.catalog import (
    CATEGORY_SEP,
    COLORS,
    LEAVES,
    NOUNS,
    PRICE_DISTRACTOR_MIN_RAISE,
    TAXONOMY,
    CatalogConfig,
    catalog_digest,
    catalog_variants,
    generate_catalog,
    price_point,
    product_by_asin,
)

DEFAULT = CatalogConfig()
_DIGEST_SCRIPT = (
    "from agentenv.envs.webshop.catalog import CatalogConfig, catalog_digest, generate_catalog\n"
    "print(catalog_digest(generate_catalog(CatalogConfig(seed=0, num_products=2000))))\n"
)


def test_catalogue_is_identical_in_another_process() -> None:
    here = catalog_digest(generate_catalog(CatalogConfig(seed=0, num_products=2000)))
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run(
        [sys.executable, "-c", _DIGEST_SCRIPT], capture_output=True, text=True, env=env, check=True
    )
    assert out.stdout.strip() == here


def test_seed_and_size_change_the_catalogue() -> None:
    base = catalog_digest(generate_catalog(DEFAULT))
    assert catalog_digest(generate_catalog(CatalogConfig(seed=1))) != base
    assert len(generate_catalog(CatalogConfig(num_products=37))) == 37


def test_generation_is_memoised_and_returns_fresh_lists() -> None:
    first, second = generate_catalog(DEFAULT), generate_catalog(DEFAULT)
    assert first is not second
    assert all(a is b for a, b in zip(first, second, strict=True))
    first.clear()
    assert len(generate_catalog(DEFAULT)) == DEFAULT.num_products


def test_asins_are_unique_webshop_ids() -> None:
    products = generate_catalog(CatalogConfig(num_products=5000))
    asins = [p.asin for p in products]
    assert len(set(asins)) == len(asins)
    assert all(re.fullmatch(r"B0[0-9A-Z]{8}", a) for a in asins)
    assert product_by_asin(CatalogConfig(num_products=5000), asins[7].lower()) is products[7]
    with pytest.raises(KeyError, match="no product"):
        product_by_asin(DEFAULT, "B0NOTTHERE")


def test_products_look_like_webshop_products() -> None:
    tops = {t.key for t in TAXONOMY}
    for p in generate_catalog(DEFAULT):
        levels = p.product_category.split(CATEGORY_SEP)
        assert len(levels) == 3 and p.category in tops
        assert p.query in NOUNS and p.query in p.title.lower()
        assert 3 <= len(p.bullet_points) <= 5
        assert DEFAULT.min_attributes <= len(p.attributes) <= DEFAULT.max_attributes
        assert len(set(p.attributes)) == len(p.attributes)
        text = " ".join((p.title, p.description, *p.bullet_points)).lower()
        assert all(a in text for a in p.attributes)
        assert len(p.options) <= 3
        assert all(2 <= len(v) <= 6 and len(set(v)) == len(v) for v in p.options.values())
        assert all(x == x.lower() for v in p.options.values() for x in v)
        assert p.price == price_point(p.pricing) and len(p.pricing) in (1, 2)
        assert len(p.pricing) == 1 or p.pricing[0] < p.price < p.pricing[1]


def test_catalogue_has_variety() -> None:
    products = generate_catalog(CatalogConfig(num_products=3000))
    assert len({p.category for p in products}) == len(TAXONOMY) >= 8
    assert len({p.product_category for p in products}) == len(LEAVES)
    originals = [
        p for p in products if p.asin not in catalog_variants(CatalogConfig(num_products=3000))
    ]
    assert len({p.title for p in originals}) > 0.9 * len(originals)
    colors = [v for p in products for v in p.options.get("color", ())]
    assert set(colors) <= set(COLORS)
    assert any(" " in c for c in colors) and any(" | " in c for c in colors)
    n_options = Counter(len(p.options) for p in products)
    assert set(n_options) == {0, 1, 2, 3}
    ranged = sum(len(p.pricing) == 2 for p in products) / len(products)
    assert 0.15 < ranged < 0.35


def test_leaf_nouns_are_unique() -> None:
    nouns = [n for leaf in LEAVES for n in leaf.nouns]
    assert len(nouns) == len(set(nouns))


def test_distractors_differ_from_their_original_in_exactly_one_thing() -> None:
    config = CatalogConfig(num_products=3000, distractor_rate=0.3)
    by_asin = {p.asin: p for p in generate_catalog(config)}
    variants = catalog_variants(config)
    assert len(variants) == round(0.3 * 3000)
    assert set(Counter(kind for _, kind in variants.values())) == {"attribute", "option", "price"}
    for asin, (base_asin, kind) in variants.items():
        p, base = by_asin[asin], by_asin[base_asin]
        assert (p.query, p.product_category, p.category) == (
            base.query,
            base.product_category,
            base.category,
        )
        changed = {
            "attribute": set(p.attributes) != set(base.attributes),
            "option": p.options != base.options,
            "price": p.price != base.price,
        }
        assert [k for k, v in changed.items() if v] == [kind]
        if kind == "attribute":
            assert len(set(p.attributes) ^ set(base.attributes)) == 2
        elif kind == "option":
            assert list(p.options) == list(base.options)
            diffs = [n for n in p.options if p.options[n] != base.options[n]]
            assert len(diffs) == 1
            assert len(set(p.options[diffs[0]]) ^ set(base.options[diffs[0]])) == 2
        else:
            assert p.price - base.price >= PRICE_DISTRACTOR_MIN_RAISE - 1e-9


def test_distractor_rate_knob() -> None:
    assert catalog_variants(CatalogConfig(num_products=500, distractor_rate=0.0)) == {}
    assert len(catalog_variants(CatalogConfig(num_products=500, distractor_rate=0.5))) == 250


def test_option_attribute_price_and_category_knobs() -> None:
    no_opts = generate_catalog(CatalogConfig(num_products=300, max_options=0))
    assert all(not p.options for p in no_opts)
    three = generate_catalog(CatalogConfig(num_products=300, min_attributes=3, max_attributes=3))
    assert all(len(p.attributes) == 3 for p in three)
    fixed = generate_catalog(CatalogConfig(num_products=300, range_rate=0.0))
    assert all(len(p.pricing) == 1 for p in fixed)
    wide = generate_catalog(
        CatalogConfig(
            num_products=300, min_option_values=5, max_option_values=5, categories=("fashion",)
        )
    )
    assert all(len(v) == 5 for p in wide for v in p.options.values())
    food = generate_catalog(CatalogConfig(num_products=300, categories=("food", "pets")))
    assert {p.category for p in food} == {"food", "pets"}


def test_config_from_json_is_hashable_and_bad_knobs_are_refused() -> None:
    config = CatalogConfig(num_products=50, categories=["toys"])  # type: ignore[arg-type]
    assert config.categories == ("toys",) and hash(config)
    for bad in (
        {"num_products": 0},
        {"distractor_rate": 1.0},
        {"min_attributes": 3, "max_attributes": 2},
        {"max_options": 4},
        {"categories": ("cars",)},
        {"range_rate": 1.5},
    ):
        with pytest.raises(ValueError):
            CatalogConfig(**bad)


def test_ten_thousand_products_generate_quickly() -> None:
    start = time.perf_counter()
    products = generate_catalog(CatalogConfig(seed=11, num_products=10_000))
    assert len(products) == 10_000
    assert time.perf_counter() - start < 5.0  # measured ~0.2 s on 2 cores
