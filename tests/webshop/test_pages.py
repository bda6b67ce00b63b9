"""The page state machine: WebShop's exact page texts, clickables and navigation, and explained
invalid actions, over the hand-made catalogue (real BM25 index)."""

from __future__ import annotations

import pytest

from agentenv.envs.webshop.pages import (
    MAX_ACTION_CHARS,
    Browser,
    Page,
    parse_action,
    price_tag,
)
from agentenv.envs.webshop.search import ProductIndex, product_contents
from tests.webshop.shop import BOOTS, SHAMPOO, catalogue

INSTR = "i want leather hiking boots"


@pytest.fixture(scope="module")
def shop() -> ProductIndex:
    return ProductIndex(catalogue())


@pytest.fixture
def browser(shop) -> Browser:
    return Browser(shop, INSTR)


def test_parse_action_forms() -> None:
    assert str(parse_action("search[Red  Shoes ]")) == "search[red shoes]"
    assert str(parse_action("  CLICK[Buy Now]  ")) == "click[buy now]"
    assert str(parse_action("<think>hm</think><action>click[< Prev]</action>")) == "click[< prev]"
    assert str(parse_action("I will look.\nAction: search[boots]")) == "search[boots]"
    assert str(parse_action("click[a[b]]")) == "click[a[b]]"  # first [ to last ]
    for bad in ("click[", "search boots", "click[]x", "buy now", "", "<action>click[</action>"):
        assert parse_action(bad) is None, bad
    assert str(parse_action("click[]")) == "click[]"


def test_price_tags() -> None:
    assert price_tag((19.99,)) == "$19.99"
    assert price_tag((5.0, 9.0)) == "$5.0 to $9.0"
    assert price_tag(()) == "$100.0"


def test_indexed_text_is_webshops_contents() -> None:
    assert product_contents(BOOTS) == (
        "leather hiking boots leather hiking boots. a fine product. leather hiking boots bullet "
        "color: black forest, dark brown, and size: 9, 10, 11"
    )


def test_start_page(browser) -> None:
    assert browser.render() == f"WebShop [SEP] Instruction: [SEP] {INSTR} [SEP] Search"
    assert browser.available_actions() == {"has_search_bar": True, "clickables": []}
    assert browser.admissible_actions() == ["search[<keywords>]"]
    assert browser.page.anchor() == ("start", "", 0, "", ())


def test_results_paging_and_item_navigation(browser) -> None:
    assert browser.act("search[shampoo hair]").valid
    text = browser.render()
    assert text.startswith(
        f"Instruction: [SEP] {INSTR} [SEP] Back to Search [SEP] Page 1 (Total results: 50) "
        "[SEP] Next > [SEP] "
    )
    asins = browser.page_asins()
    assert len(asins) == 10 and len(browser.hits) == 50
    clickables = browser.clickables()
    assert clickables[:2] == ["back to search", "next >"] and clickables[2:] == [
        a.lower() for a in asins
    ]
    assert "< prev" not in clickables
    for _ in range(4):
        assert browser.act("click[next >]").valid
    assert browser.page.page == 5 and "next >" not in browser.clickables()
    assert "Page 5 (Total results: 50) [SEP] < Prev [SEP] B" in browser.render()
    assert not browser.act("click[next >]").valid  # no page 6
    assert browser.act("click[< prev]").valid and browser.page.page == 4
    target = browser.page_asins()[0]
    assert browser.act(f"click[{target.lower()}]").valid
    assert browser.page == Page("item", "shampoo hair", 4, target, ())
    assert browser.act("click[< prev]").valid  # item -> the results page it came from
    assert browser.page == Page("results", "shampoo hair", 4)


def test_item_page_text_options_and_sub_pages(browser) -> None:
    browser.act("search[leather hiking boots]")
    assert browser.page_asins()[0] == BOOTS.asin
    browser.act(f"click[{BOOTS.asin.lower()}]")
    assert browser.render() == (
        f"Instruction: [SEP] {INSTR} [SEP] Back to Search [SEP] < Prev [SEP] color [SEP] "
        "black forest [SEP] dark brown [SEP] size [SEP] 9 [SEP] 10 [SEP] 11 [SEP] Leather "
        "Hiking Boots [SEP] Price: $40.0 to $60.0 [SEP] Rating: N.A. [SEP] Description [SEP] "
        "Features [SEP] Reviews [SEP] Buy Now"
    )
    assert browser.clickables() == [
        "back to search", "< prev", "description", "features", "reviews", "buy now",
        "black forest", "dark brown", "9", "10", "11",
    ]  # fmt: skip
    assert browser.act("click[Dark Brown]").valid
    assert browser.act("click[black forest]").valid  # one value per option name: last wins
    assert browser.act("click[10]").valid
    assert browser.page.options == (("color", "black forest"), ("size", "10"))
    assert browser.act("click[features]").valid
    assert browser.render().endswith(
        "Back to Search [SEP] < Prev [SEP] Leather Hiking Boots bullet [SEP] second bullet"
    )
    assert browser.clickables() == ["back to search", "< prev"]
    assert not browser.act("click[buy now]").valid  # not on a sub-page
    assert browser.act("click[< prev]").valid  # sub-page -> item, options kept
    assert browser.page.kind == "item" and browser.page.chosen == {
        "color": "black forest",
        "size": "10",
    }
    browser.act("click[description]")
    assert browser.render().endswith("< Prev [SEP] Leather Hiking Boots. A fine product.")
    browser.act("click[< prev]")
    browser.act("click[reviews]")
    assert browser.render().endswith("Back to Search [SEP] < Prev")
    browser.act("click[< prev]")
    outcome = browser.act("click[buy now]")
    assert outcome.valid and outcome.bought and browser.page.kind == "done"
    browser.score = 1.0
    assert browser.render() == (
        "Thank you for shopping with us! [SEP] Purchased [SEP] asin [SEP] B000000002 [SEP] "
        'options [SEP] {"color": "black forest", "size": "10"} [SEP] Your score (min 0.0, max '
        "1.0) [SEP] 1.0"
    )
    assert browser.available_actions() == {"has_search_bar": False, "clickables": []}


def test_back_to_search_resets_to_the_start_page(browser) -> None:
    browser.act("search[boots]")
    browser.act(f"click[{BOOTS.asin.lower()}]")
    assert browser.act("click[back to search]").valid
    assert browser.page == Page() and browser.hits == ()


@pytest.mark.parametrize(
    ("actions", "reason"),
    [
        (["click[search]"], "not clickable on the search page"),
        (["search[]"], "needs keywords"),
        (["search[boots]", "search[shoes]"], "no search bar on this page"),
        (["search[boots]", "click[b999999999]"], "'b999999999' is not clickable on this page"),
        (["search[boots]", "click[description]"], "not clickable on this page"),
        (["hello"], "is not an action"),
        (["click["], "is not an action"),
        (["x" * (MAX_ACTION_CHARS + 1)], "over the limit"),
    ],
)
def test_invalid_actions_are_explained_and_change_nothing(browser, actions, reason) -> None:
    for action in actions[:-1]:
        assert browser.act(action).valid
    before = (browser.page, browser.hits)
    outcome = browser.act(actions[-1])
    assert not outcome.valid and reason in outcome.error
    assert (browser.page, browser.hits) == before
    explained = browser.explain(outcome)
    assert explained.startswith("Invalid action: ") and "Available actions: " in explained
    assert explained.endswith(browser.render())
    for action in browser.admissible_actions():
        assert action in explained


def test_actions_after_buying_are_refused(shop) -> None:
    browser = Browser(shop, "x")
    browser.act("search[herbal shampoo]")
    browser.act(f"click[{SHAMPOO.asin.lower()}]")
    assert browser.act("click[buy now]").bought
    for action in ("click[buy now]", "search[more]", "click[back to search]"):
        outcome = browser.act(action)
        assert not outcome.valid and "the episode is over" in outcome.error
    assert browser.page.kind == "done"


def test_shared_option_value_sets_the_later_option_name(shop) -> None:
    product = next(iter(shop.products.values()))
    both = {"first": ("same", "a"), "second": ("b", "same")}
    shop.products[product.asin] = type(product)(**{**product.__dict__, "options": both})
    try:
        browser = Browser(shop, "x", page=Page("item", "q", 1, product.asin))
        assert browser.act("click[same]").valid
        assert browser.page.chosen == {"second": "same"}
    finally:
        shop.products[product.asin] = product
