"""Fuzzing ToolWorldEnv with 6,000 random and malformed actions: nothing raises, every bad call
is invalid and explained, and no database outside the episode's own changes."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from agentenv.envs.tooluse.world import expert
from agentenv.envs.tooluse.world.db import WorldConfig, build_world, state_hash
from agentenv.envs.tooluse.world.env import ToolWorldEnv
from agentenv.envs.tooluse.world.tools import TOOLS
from agentenv.service import ServiceClient
from agentenv.sessions import ServiceSession

WORLD = build_world(WorldConfig())
Bad = Callable[[list[str], np.random.Generator], tuple[str, str]]
"""(shown tool names, rng) -> (an action that must be invalid, what its observation says:
``|``-separated alternatives)."""


def block(*calls: Any) -> str:
    return "\n".join(f"<tool_call>\n{json.dumps(c)}\n</tool_call>" for c in calls)


def _tool(tools: list[str], rng: np.random.Generator, need=lambda props: True) -> str | None:
    fitting = [t for t in tools if need(TOOLS[t].tool.parameters["properties"])]
    return fitting[int(rng.integers(len(fitting)))] if fitting else None


def malformed(tools, rng):
    return expert.malformed_action(rng), "could not be read as tool calls"


def unknown_tool(tools, rng):
    name = rng.choice(["drop_table", "exec_sql", "get_orders", "admin", "x" * 64])
    return block({"name": str(name), "arguments": {}}), "unknown tool"


def wrong_type(tools, rng):
    name = _tool(tools, rng, lambda p: any(s.get("type") == "string" for s in p.values()))
    if name is None:
        return unknown_tool(tools, rng)
    props = TOOLS[name].tool.parameters["properties"]
    key = next(k for k, s in props.items() if s.get("type") == "string")
    value = [7, ["a"], {"x": 1}, True, None, 3.5][int(rng.integers(6))]
    return block({"name": name, "arguments": {key: value}}), f"{key} must be string"


def missing_argument(tools, rng):
    name = _tool(tools, rng, bool)
    required = TOOLS[name].tool.parameters["required"] if name else []
    if not required:
        return unknown_tool(tools, rng)
    return block({"name": name, "arguments": {}}), "missing required argument"


def huge_argument(tools, rng):
    def text_keys(props: dict) -> list[str]:
        return [k for k, p in props.items() if p.get("type") == "string" and "enum" not in p]

    name = _tool(tools, rng, text_keys) or "get_order"
    key = text_keys(TOOLS[name].tool.parameters["properties"])[0]
    text = "A" * int(rng.choice([300, 5000, 20_000, 200_000]))
    return block({"name": name, "arguments": {key: text}}), "at most|missing required argument"


def injection(tools, rng):
    name = _tool(tools, rng, bool) or "find_customer"
    props = TOOLS[name].tool.parameters["properties"]
    attack = expert.INJECTIONS[int(rng.integers(len(expert.INJECTIONS)))]
    return block({"name": name, "arguments": dict.fromkeys(props, attack)}), "Error:"


def not_finite(tools, rng):
    value = ["NaN", "Infinity", "-Infinity"][int(rng.integers(3))]
    action = (
        '<tool_call>\n{"name": "search_products", "arguments": {"query": "kettle", '
        f'"max_price": {value}}}}}\n</tool_call>'
    )
    return action, "Error:"


def too_many_calls(tools, rng):
    call = {"name": tools[0], "arguments": {}}
    return block(*[call] * 9), "at most 8"


def surrogate(tools, rng):
    return (
        '<tool_call>\n{"name": "find_customer", "arguments": {"name": "\\ud800"}}\n</tool_call>',
        "Error:",
    )


BAD: tuple[Bad, ...] = (
    malformed, unknown_tool, wrong_type, missing_argument, huge_argument, injection,
    not_finite, too_many_calls, surrogate,
)  # fmt: skip
FORMAT_ERRORS = (malformed, unknown_tool, wrong_type, missing_argument, too_many_calls)
"""Bad actions that fail before any tool runs (parse or schema): ``format`` is 0."""


async def fuzz(env: ToolWorldEnv, actions: int, seed: int) -> Counter:
    rng = np.random.default_rng(seed)
    counts: Counter = Counter()
    episode = 0
    while counts["actions"] < actions:
        observation, info = await env.areset(seed=episode, options={"split": "test"})
        episode += 1
        messages = [
            {"role": "system", "content": info["system_prompt"]},
            {"role": "user", "content": observation},
        ]
        done = False
        while not done:
            if rng.random() < 0.5:
                maker = BAD[int(rng.integers(len(BAD)))]
                action, says = maker(list(env.task.tools), rng)
            else:
                maker, says = None, ""
                action = expert.random_action(env.task, messages, rng)
            observation, reward, terminated, truncated, info = await env.astep(action)
            counts["actions"] += 1
            assert isinstance(observation, str) and np.isfinite(reward)
            if maker is not None and (says != "Error:" or "<tool_call>" in action):
                assert info["action_valid"] is False, (
                    maker.__name__,
                    action[:200],
                    observation[:300],
                )
                assert any(s in observation for s in says.split("|")), (
                    maker.__name__,
                    action[:200],
                    observation[:300],
                )
                if maker in FORMAT_ERRORS:
                    assert info["reward_components"]["format"] == 0.0
                counts[maker.__name__] += 1
            counts["invalid"] += not info["action_valid"]
            messages += [
                {"role": "assistant", "content": action},
                {"role": "user", "content": observation},
            ]
            done = terminated or truncated
        counts["episodes"] += 1
        counts["success"] += info["success"]
    return counts


@pytest.mark.parametrize(("protocol", "actions"), [("native", 5000), ("text", 1000)])
async def test_fuzzing_never_breaks_the_env_or_the_world(protocol: str, actions: int) -> None:
    env = ToolWorldEnv(protocol=protocol)
    counts = await fuzz(env, actions, seed=len(protocol))
    assert counts["actions"] >= actions
    assert all(counts[bad.__name__] >= 20 for bad in BAD), counts
    assert counts["invalid"] > actions / 2
    assert counts["success"] <= counts["episodes"] // 10
    # The world the sessions copy from is untouched, and a new session starts from it.
    assert state_hash(WORLD.template) == WORLD.fingerprint
    client = await env._connect()
    session = await ServiceSession.open(client)
    assert (await session.reset())["state"] == WORLD.fingerprint
    await session.aclose()
    health = await ServiceClient.health(client)
    assert health["sessions"]["open"] == 0  # every episode released its session
    await env.aclose()
