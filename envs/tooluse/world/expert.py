"""Scripted policies for ToolWorldEnv: an expert that follows the task's plan, reading the values
later calls need from the tool results in the chat, and a random baseline.

The expert is stateless. From ``messages`` it pairs each call that ran with its result
(``tool`` messages, or ``<tool_response>`` blocks of user messages) and finds the plan's calls
among them: plan call ``k`` is done when a call equal to it, with its references filled from the
results of the calls before it, succeeded. It then sends, as parallel calls in one message, every next plan call whose
references are all resolved, or, once the plan is done, a final answer stating the task's facts
as read from the results. Actions are hermes text (``<tool_call>`` blocks), which the env reads
under both protocols.
"""

from __future__ import annotations

import json
import re
from typing import Any

import numpy as np

from agentenv.envs.tooluse.world.tasks import Task, resolve, resolve_call
from agentenv.envs.tooluse.world.tools import TOOLS
from agentenv.toolcalls import ToolCall, decode_action, message_from_openai

_RESPONSE = re.compile(r"<tool_response>\n?(.*?)\n?</tool_response>", re.DOTALL)
_IDS = re.compile(r"\b[COP]\d{3,4}\b")
INJECTIONS: tuple[str, ...] = (
    "1; DROP TABLE orders; --",
    "' OR '1'='1",
    '" OR ""="',
    "C1000'; DELETE FROM customers; --",
    "%",
    "_",
    "'; UPDATE customers SET store_credit = 999999; --",
    "Robert'); DROP TABLE customers;--",
)
"""SQL injection attempts the random baseline (and the fuzz test) send as arguments."""


def _calls_of(message: dict[str, Any]) -> tuple[ToolCall, ...]:
    if message.get("tool_calls"):
        return message_from_openai(message).tool_calls
    return decode_action(str(message.get("content") or "")).tool_calls


def _results_of(message: dict[str, Any]) -> list[str]:
    if message.get("role") == "tool":
        return [str(message.get("content") or "")]
    return _RESPONSE.findall(str(message.get("content") or ""))


def exchanges(messages: list[dict[str, Any]]) -> list[tuple[ToolCall, str]]:
    """Every call that ran and its result text, in order: an assistant message's calls paired
    with the results that answer it (a message the env refused has none and is skipped)."""
    pairs: list[tuple[ToolCall, str]] = []
    calls: tuple[ToolCall, ...] = ()
    results: list[str] = []
    for message in [*messages[1:], {"role": "assistant"}]:
        if message.get("role") != "assistant":
            results += _results_of(message)
            continue
        if calls and len(results) == len(calls):
            pairs += zip(calls, results, strict=True)
        calls, results = _calls_of(message), []
    return pairs


def _parsed(text: str) -> Any:
    if text.startswith("Error:"):
        raise ValueError(text)
    return json.loads(text)


def plan_results(task: Task, messages: list[dict[str, Any]]) -> list[Any]:
    """The parsed results of the task's plan calls made so far: plan call ``k`` is done when a
    call equal to it (its references filled from the results of calls ``< k``) succeeded."""
    pending = list(exchanges(messages))
    results: list[Any] = []
    for step in task.plan:
        expected = resolve_call(step, results)
        for i, (call, text) in enumerate(pending):
            if call.name == expected.name and call.arguments == expected.arguments:
                try:
                    value = _parsed(text)
                except ValueError:
                    continue
                results.append(value)
                del pending[i]
                break
        else:
            break
    return results


def call_text(calls: list[ToolCall]) -> str:
    """Hermes tool-call blocks, one per call."""
    return "\n".join(
        "<tool_call>\n"
        + json.dumps({"name": c.name, "arguments": c.arguments}, ensure_ascii=False)
        + "\n</tool_call>"
        for c in calls
    )


def final_answer(task: Task, results: list[Any]) -> str:
    """A reply stating the task's facts, read from ``results``."""
    facts = [str(resolve(item, results)) for item in task.answer]
    if task.no_tool:
        return " ".join(facts)
    return "Done. Here is what you asked for: " + "; ".join(facts) + "."


def solve(task: Task, messages: list[dict[str, Any]]) -> str:
    """The expert's next action for ``task`` given the chat so far."""
    results = plan_results(task, messages)
    done = len(results)
    if done >= len(task.plan):
        return final_answer(task, results)
    ready = []
    for step in task.plan[done:]:
        if any(s >= done for s in step.steps()):
            break
        ready.append(resolve_call(step, results))
    return call_text(ready)


# ---------------------------------------------------------------------------------------------
# Random baseline
# ---------------------------------------------------------------------------------------------
def _words(messages: list[dict[str, Any]]) -> list[str]:
    text = " ".join(str(m.get("content") or "") for m in messages[1:])
    return re.findall(r"[A-Za-z][\w.@-]*", text) or ["nothing"]


def _random_value(
    schema: dict[str, Any], words: list[str], ids: list[str], rng: np.random.Generator
) -> Any:
    options = [s for s in schema.get("anyOf", [schema]) if s.get("type") != "null"] or [schema]
    schema = options[int(rng.integers(len(options)))]
    if "enum" in schema:
        return schema["enum"][int(rng.integers(len(schema["enum"])))]
    kind = schema.get("type")
    if kind == "integer":
        return int(rng.integers(-2, 12))
    if kind == "number":
        return float(np.round(rng.uniform(-5, 300), 2))
    roll = rng.random()
    if roll < 0.5 and ids:
        return ids[int(rng.integers(len(ids)))]
    if roll < 0.6:
        return INJECTIONS[int(rng.integers(len(INJECTIONS)))]
    return " ".join(rng.choice(words, size=int(rng.integers(1, 4))))


def random_call(
    task: Task, messages: list[dict[str, Any]], rng: np.random.Generator
) -> dict[str, Any]:
    """A random but plausible call: a shown tool (90%), arguments of the schema's types made of
    ids and words of the chat, sometimes an argument dropped, added or of the wrong type."""
    names = list(task.tools) or list(TOOLS)
    name = names[int(rng.integers(len(names)))] if rng.random() < 0.9 else "lookup_everything"
    spec = TOOLS.get(name)
    properties = spec.tool.parameters["properties"] if spec else {"query": {"type": "string"}}
    words, ids = (
        _words(messages),
        _IDS.findall(" ".join(str(m.get("content") or "") for m in messages)),
    )
    arguments = {
        key: _random_value(prop, words, ids, rng)
        for key, prop in properties.items()
        if rng.random() < 0.9
    }
    roll = rng.random()
    if roll < 0.05:
        arguments["extra"] = "unexpected"
    elif roll < 0.1 and arguments:
        arguments[next(iter(arguments))] = [1, 2]
    return {"name": name, "arguments": arguments}


def malformed_action(rng: np.random.Generator) -> str:
    """A message that tries to call and fails to parse."""
    options = (
        '<tool_call>\n{"name": "get_order", "arguments": {"order_id": "O5001"}\n</tool_call>',
        '<tool_call>\n{"name": "get_order", "arguments": "not json"}\n</tool_call>',
        '<tool_call>\n["get_order", "O5001"]\n</tool_call>',
        '<tool_call>\n{"arguments": {}}\n</tool_call>',
        '<tool_call>\n{"name": "get_order", "arguments": {"order_id": "O5001"}}',
        "</tool_call>",
        "<tool_call>\n\n</tool_call>",
        '<tool_call>{"name": "find_customer", "arguments": {"name": "x"}} trailing</tool_call>',
    )
    return options[int(rng.integers(len(options)))]


def random_action(task: Task, messages: list[dict[str, Any]], rng: np.random.Generator) -> str:
    """A random baseline: one or two random calls (75%), a malformed call (15%), or a final
    answer of random words of the chat (10%)."""
    roll = rng.random()
    if roll < 0.1:
        return " ".join(rng.choice(_words(messages), size=int(rng.integers(1, 6))))
    if roll < 0.25:
        return malformed_action(rng)
    calls = [random_call(task, messages, rng) for _ in range(int(rng.integers(1, 3)))]
    return "\n".join(
        "<tool_call>\n" + json.dumps(c, ensure_ascii=False) + "\n</tool_call>" for c in calls
    )
