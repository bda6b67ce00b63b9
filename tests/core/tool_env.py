"""A small tool env for the core tests: two integer tools and a text tool over seeded tasks."""

from __future__ import annotations

import asyncio
import inspect
import json
from typing import Any

import numpy as np

from agentenv import register
from agentenv.envs.tooluse.base import Outcome, ToolEnv, ToolError
from agentenv.envs.tooluse.schema import function_tool
from agentenv.toolcalls import ToolCall


def add(a: int, b: int) -> int:
    """Add two integers.

    Args:
        a: the first number
        b: the second number
    """
    return a + b


def shout(text: str) -> str:
    """Upper-case a text.

    Args:
        text: what to shout
    """
    if not text:
        raise ToolError("shout needs a non-empty text")
    return text.upper()


async def nap(seconds: float) -> str:
    """Sleep, then say so.

    Args:
        seconds: how long
    """
    await asyncio.sleep(seconds)
    return "rested"


TOOLS = {fn.__name__: fn for fn in (add, shout, nap)}


class CalcToolsEnv(ToolEnv):
    """Task ``seed``: add ``seed`` and ``seed + 1``, shout ``"ok"``, then answer the sum."""

    reward_components = ("answer",)

    async def _areset(self, *, seed: int | None, options: dict[str, Any]) -> tuple[str, dict]:
        seed = seed or 0
        self.task = {"id": f"calc-{seed}", "a": seed, "b": seed + 1}
        info = self.begin(
            [function_tool(fn) for fn in TOOLS.values()],
            "You are a careful assistant with tools.",
            {"task_id": self.task["id"], "ground_truth": str(2 * seed + 1)},
        )
        return f"What is {seed} + {seed + 1}? Also shout ok.", info

    async def call_tool(self, call: ToolCall) -> str:
        result = TOOLS[call.name](**call.arguments)
        return str(await result if inspect.isawaitable(result) else result)

    async def judge(self, answer: str | None) -> Outcome:
        right = answer is not None and str(self.task["a"] + self.task["b"]) in answer
        return Outcome(float(right), right, {"answer": float(right)})


def solve(task: dict, messages: list[dict]) -> str:
    """The expert: both calls in the first turn, then the sum."""
    if any(m["role"] == "assistant" for m in messages):
        return f"The sum is {task['a'] + task['b']}."
    calls = [("add", {"a": task["a"], "b": task["b"]}), ("shout", {"text": "ok"})]
    return "\n".join(
        f"<tool_call>{json.dumps({'name': n, 'arguments': a})}</tool_call>" for n, a in calls
    )


def random_action(task: dict, messages: list[dict], rng: np.random.Generator) -> str:
    """One or two calls of random tools (or a made-up one) with random integer or text
    arguments; sometimes a bare reply."""
    if rng.random() < 0.2:
        return "I do not know."
    names = [*TOOLS, "divide"]
    calls = []
    for _ in range(int(rng.integers(1, 3))):
        name = names[int(rng.integers(len(names)))]
        keys = rng.choice(
            ["a", "b", "text", "seconds"], size=int(rng.integers(0, 3)), replace=False
        )
        args = {str(k): int(rng.integers(-3, 9)) if rng.random() < 0.6 else "x" for k in keys}
        calls.append(f"<tool_call>{json.dumps({'name': name, 'arguments': args})}</tool_call>")
    return "\n".join(calls)


register(
    "calc-tools-test-v0",
    f"{__name__}:CalcToolsEnv",
    description="tool env of the tests",
    expert=__name__,
)
