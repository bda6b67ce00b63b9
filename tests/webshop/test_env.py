"""WebShopEnv in-process over the generated catalogue: the expert solves generated goals, the
random baseline does not, and the info keys (components, anchor, actions, breakdown) hold."""

from __future__ import annotations

import copy
import pickle

import numpy as np
import pytest

import agentenv
from agentenv.env import EpisodeOverError
from agentenv.envs.webshop import expert
from agentenv.envs.webshop.catalog import CatalogConfig, generate_catalog
from agentenv.envs.webshop.env import WebShopEnv
from agentenv.envs.webshop.pretraining import pretraining_texts
from agentenv.play import play_episode


@pytest.fixture
async def env():
    shop = WebShopEnv()
    yield shop
    await shop.aclose()


@pytest.mark.parametrize("split", ["test", "compositional"])
async def test_expert_solves_at_least_95_percent(env, split) -> None:
    ids = env.task_ids(split)
    assert len(ids) >= 200
    results = [await play_episode(env, expert.solve, options={"task": task_id}) for task_id in ids]
    success = np.mean([r.info["success"] for r in results])
    assert success >= 0.95, f"{split}: expert success {success:.3f}"
    for r in results:
        assert r.info["success"] == (r.rewards[-1] == 1.0)


async def test_random_baseline_rarely_succeeds(env) -> None:
    rng = np.random.default_rng(0)
    results = [
        await play_episode(env, lambda t, m: expert.random_action(t, m, rng), seed=seed)
        for seed in range(100)
    ]
    success = np.mean([r.info["success"] for r in results])
    assert success < 0.1
    assert any(not all(i["action_valid"] for i in r.infos[1:]) for r in results)


async def test_progress_components_add_up_and_breakdown_is_reported(env) -> None:
    task = next(t for t in (env.get_task(i) for i in env.task_ids("test")) if len(t.options) >= 2)
    result = await play_episode(env, expert.solve, options={"task": task.id})
    steps = result.infos[1:]
    totals = {
        key: sum(i["reward_components"][key] for i in steps)
        for key in ("target_in_results", "target_opened", "options_progress", "format")
    }
    assert totals["target_in_results"] == 1.0 and totals["target_opened"] == 1.0
    assert totals["options_progress"] == pytest.approx(1.0)
    assert totals["format"] == len(steps)
    option_steps = [i["reward_components"]["options_progress"] for i in steps]
    assert option_steps.count(pytest.approx(1 / len(task.options))) == len(task.options)
    last = result.info
    assert last["reward_components"]["score"] == 1.0 and last["reward_components"]["success"] == 1.0
    breakdown = last["reward_breakdown"]
    assert breakdown["total"] == 1.0 and breakdown["r_type"] == 1.0
    assert breakdown["w_option"] == pytest.approx(
        len(task.options) / (len(task.attributes) + len(task.options) + 1)
    )
    assert set(env.reward_components) >= set(last["reward_components"])


async def test_reset_info_anchor_and_available_actions(env) -> None:
    observation, info = await env.areset(options={"task": "test-0"})
    assert observation.startswith("WebShop [SEP] Instruction: [SEP] ")
    assert info["task_id"] == "test-0" and info["ground_truth"]["asin"] == env.task.asin
    assert info["available_actions"] == {"has_search_bar": True, "clickables": []}
    assert info["anchor"] == ("start", "", 0, "", ())
    assert "search[keywords]" in info["system_prompt"] and "15" in info["system_prompt"]


async def test_identical_pages_share_an_anchor(env) -> None:
    await env.areset(options={"task": "test-1"})
    _, _, _, _, direct = await env.astep("search[usb cable]")
    asin = direct["available_actions"]["clickables"][-1]
    _, _, _, _, opened = await env.astep(f"click[{asin}]")
    assert opened["anchor"][0] == "item" and opened["anchor"][3] == asin.upper()
    _, _, _, _, back = await env.astep("click[< prev]")
    assert back["anchor"] == direct["anchor"] == ("results", "usb cable", 1, "", ())
    _, _, _, _, invalid = await env.astep("click[nothing here]")
    assert invalid["anchor"] == back["anchor"] and not invalid["action_valid"]


async def test_invalid_action_is_explained(env) -> None:
    await env.areset(options={"task": "test-2"})
    observation, reward, terminated, truncated, info = await env.astep("click[buy now]")
    assert not info["action_valid"] and info["reward_components"]["format"] == 0.0
    assert observation.startswith("Invalid action: 'buy now' is not clickable on the search page")
    assert "Available actions: search[<keywords>]" in observation
    assert (reward, terminated, truncated) == (0.0, False, False)


async def test_tagged_and_reasoned_actions_are_accepted(env) -> None:
    await env.areset(options={"task": "test-3"})
    _, _, _, _, info = await env.astep("<think>find it</think>\n<action>search[Usb Cable]</action>")
    assert info["action_valid"] and info["anchor"][:2] == ("results", "usb cable")
    _, _, _, _, info = await env.astep("The first product looks right.\nclick[< PREV]")
    assert not info["action_valid"]  # no < prev on results page 1: explained, not silent
    _, _, _, _, info = await env.astep("Next page.\nclick[Next >]")
    assert info["action_valid"] and info["anchor"][2] == 2


async def test_truncation_after_max_turns() -> None:
    env = WebShopEnv(max_turns=3)
    try:
        await env.areset(options={"task": "test-4"})
        ends = [(await env.astep("click[nothing]"))[2:4] for _ in range(3)]
        assert ends == [(False, False), (False, False), (False, True)]
        with pytest.raises(EpisodeOverError):
            await env.astep("click[nothing]")
    finally:
        await env.aclose()


async def test_success_reward_pays_only_wins() -> None:
    env = WebShopEnv(reward="success")
    try:
        task = env.get_task("test-5")
        result = await play_episode(env, expert.solve, options={"task": task.id})
        assert result.rewards[-1] == 1.0
        await env.areset(options={"task": task.id})
        await env.astep(f"search[{task.name}]")
        await env.astep(f"click[{task.asin.lower()}]")
        _, reward, terminated, _, info = await env.astep("click[buy now]")  # no options chosen
        assert terminated and not info["success"]
        assert reward == 0.0 and 0 < info["reward_components"]["score"] < 1
    finally:
        await env.aclose()


async def test_show_actions_lists_the_page_actions() -> None:
    env = WebShopEnv(show_actions=True)
    try:
        observation, _ = await env.areset(options={"task": "test-6"})
        assert observation.endswith("\nAvailable actions: search[<keywords>]")
        observation, *_ = await env.astep("search[usb]")
        assert "\nAvailable actions: click[back to search], click[next >], click[B" in observation
        listed = observation.split("\nAvailable actions: ")[1].split(", ")[2].removeprefix("click[")
        assert listed.removesuffix("]") in observation.split("\nAvailable actions: ")[0]
    finally:
        await env.aclose()


def test_copies_mid_episode_resume_the_same_page() -> None:
    env = agentenv.make("webshop-v0")
    try:
        env.reset(options={"task": "test-7"})
        env.step("search[usb cable]")
        _, _, _, _, info = env.step("click[next >]")
        for clone in (pickle.loads(pickle.dumps(env)), copy.deepcopy(env)):
            try:
                _, _, _, _, again = clone.step("click[< prev]")
                assert again["action_valid"] and again["anchor"] == (
                    "results",
                    "usb cable",
                    1,
                    "",
                    (),
                )
            finally:
                clone.close()
        assert env.step("click[< prev]")[4]["anchor"] == again["anchor"]
    finally:
        env.close()


def test_unknown_knobs_and_splits_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown catalog knob"):
        WebShopEnv(catalog={"colour": 1})
    with pytest.raises(ValueError, match="no split"):
        WebShopEnv(split="dev")
    assert WebShopEnv().splits() == {"train": None, "test": 500, "compositional": 200}


@pytest.mark.parametrize("per_page", [1, 3])
async def test_results_per_page_lists_that_many_products_and_the_expert_still_wins(per_page):
    shop = WebShopEnv(num_products=200, results_per_page=per_page)
    try:
        episode = await play_episode(shop, expert.solve, seed=4)
        results = next(i for i in episode.infos if i["anchor"][0] == "results")
        products = [a for a in results["available_actions"]["clickables"] if a.startswith("b0")]
        assert len(products) == per_page and episode.success
    finally:
        await shop.aclose()
    with pytest.raises(ValueError, match="results_per_page must be >= 1"):
        WebShopEnv(results_per_page=0)


def test_pretraining_text_shows_other_catalogues_and_copy_drills():
    texts = pretraining_texts(40, num_products=60, results_per_page=2)
    assert len(texts) == 40 and texts == pretraining_texts(40, num_products=60, results_per_page=2)
    drills = [t for t in texts if "\n" not in t]
    assert len(drills) == 20  # drill_fraction 0.5
    for drill in drills:
        parts = drill.split(" [SEP] ")
        half = len(parts) // 2
        assert len(parts) % 2 == 0 and parts[:half] == parts[half:]
    own = {p.asin for p in generate_catalog(CatalogConfig(num_products=60))}
    pages = "\n".join(t for t in texts if "\n" in t)
    assert "search[" in pages and "click[" in pages
    assert not any(asin in pages for asin in own)  # no product of the env's own catalogue
