"""Fuzzing WebShopEnv with 10,000+ random, malformed and out-of-place actions: nothing raises,
every invalid action is explained (and changes nothing), sessions stay apart, and the service
refuses every action after ``buy now``."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

import numpy as np

from agentenv.envs.webshop.env import SERVICE_FACTORY, WebShopEnv
from agentenv.envs.webshop.server import goal_body
from agentenv.launch import connect
from agentenv.sessions import ServiceSession

ACTIONS = 10_500
WORDS = ("usb", "cable", "shampoo", "boots", "lavender", "navy blue", "pack of 12", "x" * 40)
Bad = Callable[[dict, np.random.Generator], str]


def _junk(rng: np.random.Generator, n: int) -> str:
    codes = rng.integers(0x20, 0x10FFFF, size=n)
    codes = np.where((codes >= 0xD800) & (codes < 0xE000), 0x41, codes)
    return "".join(map(chr, codes))


def unicode_junk(info, rng):
    return _junk(rng, int(rng.integers(1, 60)))


def huge(info, rng):
    size = int(rng.choice([20_000, 70_000, 300_000]))
    return ("click[" if rng.random() < 0.5 else "search[") + "a" * size + "]"


def nested(info, rng):
    depth = int(rng.integers(1, 40))
    return "click[" + "[" * depth + "buy now" + "]" * (depth + 1)


def unterminated(info, rng):
    return str(rng.choice(["click[", "search[", "click[buy now", "search[usb cable", "[]", "]["]))


def not_clickable(info, rng):
    clickables = set(info["available_actions"]["clickables"])
    value = str(rng.choice(["search", "buy", "b0zzzzzzzz", "next", "lavender oil", "é✓"]))
    return f"click[{value}]" if value not in clickables else "click[%%%]"


def search_without_bar(info, rng):
    if info["available_actions"]["has_search_bar"]:
        return "search[]"  # on the search page, an empty search is the invalid one
    return f"search[{rng.choice(WORDS)}]"


def surrogates(info, rng):
    return "click[\udcff" + _junk(rng, 5) + "]"


def wrong_verb(info, rng):
    return str(rng.choice(["buy[now]", "select[10]", "search", "click", "<action></action>", ""]))


BAD: tuple[Bad, ...] = (
    unicode_junk, huge, nested, unterminated, not_clickable, search_without_bar, surrogates,
    wrong_verb,
)  # fmt: skip


def valid_move(info, rng) -> str:
    actions = info["admissible_actions"]
    action = str(actions[int(rng.integers(len(actions)))])
    return action.replace("<keywords>", " ".join(rng.choice(WORDS, size=int(rng.integers(1, 4)))))


async def test_fuzz_never_raises_and_explains_every_invalid_action() -> None:
    rng = np.random.default_rng(7)
    env = WebShopEnv(max_turns=40)
    counts: Counter[str] = Counter()
    try:
        _, info = await env.areset(seed=0)
        for step in range(ACTIONS):
            bad = rng.random() < 0.6
            kind = BAD[int(rng.integers(len(BAD)))] if bad else valid_move
            action = kind(info, rng)
            before = info["anchor"]
            observation, reward, terminated, truncated, info = await env.astep(action)
            counts[kind.__name__] += 1
            assert isinstance(observation, str) and observation
            if bad:
                assert not info["action_valid"], (kind.__name__, action[:80])
            if not info["action_valid"]:
                assert observation.startswith("Invalid action: "), observation[:200]
                assert "Available actions: " in observation
                assert info["anchor"] == before and reward == 0.0 and not terminated
                assert info["reward_components"]["format"] == 0.0
            else:
                assert not observation.startswith("Invalid action")
            if terminated or truncated:
                counts["episodes"] += 1
                _, info = await env.areset(seed=step)
    finally:
        await env.aclose()
    assert sum(v for k, v in counts.items() if k != "episodes") == ACTIONS
    assert all(counts[b.__name__] > 500 for b in BAD) and counts["episodes"] > 20


async def test_every_action_after_buying_is_refused_and_sessions_stay_apart() -> None:
    env = WebShopEnv()
    client = await connect(SERVICE_FACTORY, None, config=env.service_config)
    rng = np.random.default_rng(3)
    task_a, task_b = env.get_task("test-0"), env.get_task("test-1")
    a, b = await ServiceSession.open(client), await ServiceSession.open(client)
    try:
        await a.reset({"goal": goal_body(task_a)})
        start_b = await b.reset({"goal": goal_body(task_b)})
        for action in (f"search[{task_a.name}]", f"click[{task_a.asin.lower()}]", "click[buy now]"):
            assert (await a.step({"action": action}))["valid"]
        for _ in range(300):
            kind = (*BAD, lambda i, r: "click[buy now]", lambda i, r: "search[usb]")[
                int(rng.integers(len(BAD) + 2))
            ]
            action = kind({"available_actions": {"clickables": [], "has_search_bar": False}}, rng)
            sent = action[:20_000].encode("utf-8", "replace").decode()  # JSON carries no surrogates
            body = await a.step({"action": sent, "length": len(action)})
            assert not body["valid"] and body["done"] and body["page"]["kind"] == "done"
            assert body["observation"].startswith("Invalid action: ")
        assert (await b.step({"action": "click[nothing]"}))["page"] == start_b["page"]
    finally:
        await a.aclose()
        await b.aclose()
        await client.aclose()
        await env.aclose()
