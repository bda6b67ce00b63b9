"""WebShop's reward (goal.py) as golden values worked by hand from the formula
``total = r_type · (n_att + n_opt + r_price) / (|A| + |O| + 1)``."""

from __future__ import annotations

from dataclasses import replace

import pytest

from agentenv.rewards.webshop import (
    COLOR_SET,
    attribute_matches,
    normalize_color,
    option_matches,
    price_reward,
    title_nouns,
    title_score,
    token_set_ratio,
    type_reward,
    webshop_reward,
)
from tests.webshop.shop import BOOTS, LAMP, SHAMPOO, goal_for

BOOTS_GOAL = goal_for(BOOTS, {"color": "black", "size": "10"})  # |A| = 2, |O| = 2: n + 1 = 5


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("", ""),
        ("black forest", "black"),
        ("violet lavender", "lavender"),  # list order, not position in the string
        ("steelivy fuchsia", "fuchsia"),
        ("123alabaster", "alabaster"),
        ("dark brown", "brown"),  # "brown" precedes "dark" in the list
        ("webshop", "webshop"),  # no colour: unchanged
    ],
)
def test_normalize_color(value: str, expected: str) -> None:
    assert normalize_color(value) == expected


def test_color_set_is_webshops() -> None:
    assert len(COLOR_SET) == 102 and COLOR_SET[0] == "alabaster" and COLOR_SET[-1] == "yellow"


def test_token_set_ratio_is_thefuzz_rounded() -> None:
    # sect "of pack" + "12" vs + "2": indel distance 1 over 10 + 9 chars -> 100·18/19 = 94.7 -> 95
    assert token_set_ratio("Pack of 12", "pack of 2") == 95
    # a token subset scores 100; punctuation and case are processed away
    assert token_set_ratio("Sulfate-Free", "sulfate free shampoo") == 100
    # no shared token: 1 - d/(L1+L2); 8 vs 6 chars, d = 2 -> 85.71 -> 86 (> 85: a match)
    assert token_set_ratio("abcdefgh", "abcdef") == 86
    # 27 vs 20 chars, d = 7 -> 100·40/47 = 85.11, rounded to 85: not above the threshold
    long, short = "abcdefghijklmnopqrstuvwxyza", "abcdefghijklmnopqrst"
    assert token_set_ratio(long, short) == 85


def test_threshold_is_strictly_above_85_after_rounding() -> None:
    long, short = "abcdefghijklmnopqrstuvwxyza", "abcdefghijklmnopqrst"
    assert option_matches(["abcdefgh"], ["abcdef"]) == 1  # 86
    assert option_matches([short], [long]) == 0  # 85.11 rounds to 85
    product = replace(BOOTS, attributes=(short,), title="x", description="", bullet_points=())
    assert attribute_matches(product, [long]) == 0
    assert attribute_matches(product, ["abcdefghijklmnopqrstu"]) == 1  # 21 vs 20: 97.6


def test_option_matching_normalizes_colours_both_sides() -> None:
    assert option_matches(["black forest", "10"], ["black", "10"]) == 2
    assert option_matches(["dark brown"], ["black"]) == 0
    assert option_matches(["jet black"], ["matte black"]) == 1  # both normalise to "black"
    assert option_matches(["pack of 2"], ["pack of 12"]) == 1  # 95: WebShop's fuzzy quirk
    assert option_matches([], ["black"]) == 0


def test_attribute_falls_back_to_title_bullets_description() -> None:
    product = replace(BOOTS, attributes=(), description="With ankle support for long trails.")
    assert attribute_matches(product, ["ankle support"]) == 1  # description substring
    assert attribute_matches(product, ["leather hiking"]) == 1  # title, lower-cased
    assert attribute_matches(product, ["boots bullet"]) == 1  # bullet points joined
    assert attribute_matches(product, ["vegan"]) == 0


def test_title_noun_rule() -> None:
    # digits, colours, units/adjectives of the list and function words are not nouns
    assert title_nouns("Leather Hiking Boots, Waterproof, Size 10 - Black") == [
        "leather",
        "hiking",
        "boots",
        "size",
    ]
    assert title_nouns("The Best 100 for You") == []
    assert title_score("Hiking Boots", "Leather Hiking Boots") == pytest.approx(2 / 3)
    assert title_score("anything", "The Best 100") == 0.2  # goal name without nouns


@pytest.mark.parametrize(
    ("purchased", "goal_name", "r_type", "score"),
    [
        # same query: r_type 1 whatever the title overlap above 0.1
        (dict(query="hiking boots"), "Leather Hiking Boots Trail Shoes", 1.0, 1 / 5),
        # no query/category match, title 1/5 = 0.2 (not > 0.2) -> 0.5
        (dict(), "Leather Hiking Boots Trail Shoes", 0.5, 1 / 5),
        # no match, 1 of 11 nouns = 0.0909 < 0.1 -> 0.1
        (dict(), "trail alpha beta gamma delta kappa omega sigma theta zeta lambda", 0.1, 1 / 11),
        # no shared noun -> 0 even with a category match
        (dict(product_category="A › B › C"), "Desk Lamp", 0.0, 0.0),
        # category match (2 shared levels) and title 1/5
        (dict(product_category="A › B › D"), "Leather Hiking Boots Trail Shoes", 1.0, 1 / 5),
        # goal name without nouns: title_score 0.2, no other match -> 0.5
        (dict(), "The Best 100", 0.5, 0.2),
    ],
)
def test_type_reward_levels(purchased, goal_name, r_type, score) -> None:
    fields = {"title": "Trail Mix Snack", "query": "snack", "product_category": "E › F"}
    product = replace(LAMP, **{**fields, **purchased})
    goal = goal_for(BOOTS, {}, name=goal_name, query="hiking boots", product_category="A › B › C")
    result = type_reward(product, goal)
    assert result.r_type == r_type
    assert result.title_score == pytest.approx(score)


def test_full_purchase_scores_one() -> None:
    result = webshop_reward(BOOTS, BOOTS_GOAL, 50.0, {"color": "black forest", "size": "10"})
    assert result.total == 1.0 and result.success
    assert (result.num_attr_matches, result.num_option_matches, result.r_price) == (2, 2, True)
    assert result.w_att == pytest.approx(2 / 5) and result.w_option == pytest.approx(2 / 5)
    assert result.w_price == pytest.approx(1 / 5)


def test_buy_without_options_gets_attributes_and_price() -> None:
    result = webshop_reward(BOOTS, BOOTS_GOAL, 50.0, {})
    assert result.total == pytest.approx(3 / 5) and not result.success  # (2 + 0 + 1) / 5
    assert result.r_option == 0.0


def test_partial_options_and_price_over_bound() -> None:
    wrong_colour = webshop_reward(BOOTS, BOOTS_GOAL, 50.0, {"color": "dark brown", "size": "10"})
    assert wrong_colour.total == pytest.approx(4 / 5)  # (2 + 1 + 1) / 5
    too_dear = webshop_reward(BOOTS, BOOTS_GOAL, 70.0, {"color": "black", "size": "10"})
    assert too_dear.total == pytest.approx(4 / 5) and too_dear.r_price is False  # (2 + 2 + 0) / 5
    assert price_reward(60.0, 60.0) is True and price_reward(5.0, 0.0) is None


def test_wrong_type_zeroes_everything() -> None:
    # the lamp shares no noun with "Leather Hiking Boots": r_type 0 whatever else matches
    result = webshop_reward(LAMP, BOOTS_GOAL, 1.0, {"color": "black", "size": "10"})
    assert result.r_type == 0.0 and result.total == 0.0
    assert result.num_option_matches == 2


def test_r_type_half_scales_the_total() -> None:
    shampoo_goal = goal_for(SHAMPOO, {"scent": "mint"}, query="other", product_category="Z › Y")
    # title nouns of the goal: herbal shampoo hair; purchased "Shampoo number 3 for all hair"
    # shares shampoo, hair -> 2/3 > 0.2 -> r_type 1.0
    product = replace(SHAMPOO, title="Shampoo number 3 for all hair")
    assert type_reward(product, shampoo_goal).r_type == 1.0
    # goal name with 5 nouns, 1 shared, no query/category match -> r_type 0.5:
    # total = 0.5 · (2 + 1 + 1) / (2 + 1 + 1) = 0.5
    goal = replace(shampoo_goal, name="Herbal Tonic Elixir Potion Brew")
    result = webshop_reward(SHAMPOO, goal, 12.5, {"scent": "mint"})
    assert result.r_type == 0.5 and result.total == pytest.approx(0.5)


def test_breakdown_has_the_original_verbose_keys() -> None:
    info = webshop_reward(BOOTS, BOOTS_GOAL, 50.0, {}).as_dict()
    for key in ("r_type", "r_att", "w_att", "r_option", "w_option", "r_price", "w_price"):
        assert key in info
    assert {"query_match", "category_match", "title_score", "total"} <= set(info)
    no_options = webshop_reward(LAMP, goal_for(LAMP, {}), 25.99, {})
    assert no_options.r_option is None and no_options.w_option is None
    assert no_options.total == 1.0  # (1 + 0 + 1) / (1 + 0 + 1)
