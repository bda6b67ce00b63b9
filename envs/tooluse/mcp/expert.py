"""Scripted policies for MCP envs: an expert for the time example, and a random baseline.

The expert reads the task row's ``gold_calls`` (the calls a solution makes; the agent never sees
them). On its first turn it makes them, as ``hermes`` text (``<tool_call>`` blocks, which every
protocol of :class:`ToolEnv` reads). Once results are back it answers from them: for
``convert_time`` the ``HH:MM`` of the result's ``target.datetime``, read from the tool message
(``native`` protocol) or the ``<tool_response>`` block (``text`` protocol). A task without gold
calls, or a result it cannot read, gets an answer saying so (and fails its check).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

import numpy as np

from agentenv.envs.tooluse.mcp.tasks import Expected, McpTask

_RESPONSE = re.compile(r"<tool_response>\n?(.*?)\n?</tool_response>", re.DOTALL)
_HHMM = re.compile(r"T(\d{2}:\d{2})")
NO_ANSWER = "I could not find the answer with the tools."


def hermes_calls(calls: Sequence[Expected]) -> str:
    """``calls`` as one ``<tool_call>`` block each."""
    blocks = []
    for call in calls:
        body = json.dumps(
            {"name": call.name, "arguments": dict(call.arguments)}, ensure_ascii=False
        )
        blocks.append(f"<tool_call>\n{body}\n</tool_call>")
    return "\n".join(blocks)


def tool_results(messages: Sequence[dict[str, Any]]) -> list[str]:
    """The tool results after the last assistant message: ``tool`` messages' content, or the
    ``<tool_response>`` blocks of the user message the text protocol answers with."""
    last = max((i for i, m in enumerate(messages) if m.get("role") == "assistant"), default=-1)
    results: list[str] = []
    for message in messages[last + 1 :]:
        content = message.get("content") or ""
        if message.get("role") == "tool":
            results.append(content)
        elif message.get("role") == "user":
            results += _RESPONSE.findall(content)
    return results if last >= 0 else []


def converted_time(result: str) -> str | None:
    """The ``HH:MM`` of a ``convert_time`` result's target time, if ``result`` is one."""
    try:
        data = json.loads(result)
    except json.JSONDecodeError:
        return None
    target = data.get("target") if isinstance(data, dict) else None
    stamp = target.get("datetime") if isinstance(target, dict) else None
    match = _HHMM.search(stamp) if isinstance(stamp, str) else None
    return match.group(1) if match else None


def solve(task: McpTask, messages: list[dict[str, Any]]) -> str:
    """The expert's action: the gold calls on its first turn, then the answer they give."""
    made_calls = any(m.get("role") == "assistant" for m in messages)
    if not made_calls:
        return hermes_calls(task.gold_calls) if task.gold_calls else NO_ANSWER
    for result in tool_results(messages):
        answer = converted_time(result)
        if answer is not None:
            return answer
    return NO_ANSWER


_ZONES = ("Asia/Tokyo", "UTC", "Europe/Paris", "Mars/Olympus", "", "asia/tokyo", "Asia/Kolkata")
_TIMES = ("09:15", "25:00", "9:5", "noon", "", "00:00", "23:59")


def random_action(task: McpTask, messages: list[dict[str, Any]], rng: np.random.Generator) -> str:
    """A random action: a call with random (often invalid) arguments, a call to an unknown
    tool, malformed call text, or a random answer."""
    roll = rng.random()
    if roll < 0.35:
        arguments = {
            "source_timezone": str(rng.choice(_ZONES)),
            "time": str(rng.choice(_TIMES)),
            "target_timezone": str(rng.choice(_ZONES)),
        }
        if rng.random() < 0.3:
            arguments.pop(str(rng.choice(sorted(arguments))))
        return hermes_calls([Expected("convert_time", arguments)])
    if roll < 0.45:
        return hermes_calls([Expected("get_weather", {"city": "Paris"})])
    if roll < 0.65:
        broken = ('{"name": "convert_time", "arguments": {', "[1, 2]", '{"arguments": {}}', "")
        return f"<tool_call>\n{rng.choice(broken)}\n</tool_call>"
    if roll < 0.8:
        return "<tool_call>\n" + '{"name": "convert_time"'
    return f"{int(rng.integers(24)):02d}:{int(rng.integers(60)):02d}"
