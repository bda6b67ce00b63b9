"""A small tool env for the core tests: two integer tools and a text tool over seeded tasks."""

from __future__ import annotations

import asyncio
import inspect
from typing import Any

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


register("calc-tools-test-v0", f"{__name__}:CalcToolsEnv", description="tool env of the tests")
