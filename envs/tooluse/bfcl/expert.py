"""Scripted policies for BFCLEnv: an expert that writes the possible answer, and a random
baseline.

The expert calls each expected function with the first allowed value of each parameter (a
parameter that is not required and may be omitted, ``""`` among its values, is left out; dict
values take the first allowed value of each key the same way), as hermes ``<tool_call>`` blocks under the tools' exposed names. For
irrelevance it replies without a call; for relevance (no possible answer) it calls the first
function with placeholder values of the required parameters' types.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from agentenv.envs.tooluse.bfcl.loader import Answer, BFCLTask, task_tools
from agentenv.rewards.bfcl import python_type

NO_CALL_REPLY = "None of the given functions fits this request, so I will not call any."
PLACEHOLDERS: dict[Any, Any] = {str: "example", int: 1, float: 1.0, bool: True, list: [], dict: {}}
"""Values the relevance expert fills in, by the parameter's Python type."""


def solve(task: BFCLTask, messages: Sequence[Mapping[str, Any]]) -> str:
    """The expert's (only) message for ``task``."""
    if task.checker == "irrelevance":
        return NO_CALL_REPLY
    exposed = {original: name for name, original in task_tools(task)[1].items()}
    if not task.ground_truth:
        function = task.functions[0]
        return tool_call_text(exposed[function["name"]], placeholder_arguments(function))
    functions = {f["name"]: f for f in task.functions}
    blocks = []
    for answer in task.ground_truth:
        name = next(iter(answer))
        arguments = answer_arguments(answer, functions[name])
        blocks.append(tool_call_text(exposed[name], arguments))
    return "\n".join(blocks)


def tool_call_text(name: str, arguments: Mapping[str, Any]) -> str:
    """One hermes call block."""
    call = json.dumps({"name": name, "arguments": dict(arguments)}, ensure_ascii=False)
    return f"<tool_call>\n{call}\n</tool_call>"


def answer_arguments(answer: Answer, function: Mapping[str, Any]) -> dict[str, Any]:
    """The first allowed value of each parameter of one possible-answer entry."""
    parameters = function.get("parameters") or {}
    properties = parameters.get("properties") or {}
    required = set(parameters.get("required") or ())
    arguments = {}
    for param, values in next(iter(answer.values())).items():
        if "" in values and param not in required:
            continue
        value = first_allowed(values, properties.get(param) or {})
        if value is not None:
            arguments[param] = value[0]
    return arguments


def first_allowed(values: Sequence[Any], schema: Mapping[str, Any]) -> tuple[Any] | None:
    """``(value,)``: the first allowed value that is not ``""``, with allowed dicts (and lists
    of them) resolved key by key; ``None`` when there is none."""
    found = [v for v in values if v != ""]
    if not found:
        return None
    chosen = found[0]
    items = schema.get("items") if isinstance(schema.get("items"), Mapping) else {}
    if isinstance(chosen, dict) and python_type(schema) is dict:
        return (_resolve_dict(chosen),)
    if isinstance(chosen, list) and python_type(items) is dict:
        return ([_resolve_dict(d) if isinstance(d, dict) else d for d in chosen],)
    return (chosen,)


def _resolve_dict(option: Mapping[str, Any]) -> dict[str, Any]:
    out = {}
    for key, values in option.items():
        if isinstance(values, list) and "" in values:
            continue
        value = first_allowed(values, {}) if isinstance(values, list) else (values,)
        if value is not None:
            out[key] = value[0]
    return out


def placeholder_arguments(function: Mapping[str, Any]) -> dict[str, Any]:
    """A value of the right type for each required parameter of ``function``."""
    parameters = function.get("parameters") or {}
    properties = parameters.get("properties") or {}
    return {
        p: PLACEHOLDERS.get(python_type(properties.get(p) or {}), "example")
        for p in parameters.get("required") or ()
    }


def random_action(
    task: BFCLTask, messages: Sequence[Mapping[str, Any]], rng: np.random.Generator
) -> str:
    """A random baseline: the expert's answer (25%), a call of a random offered function with
    placeholder arguments (35%), a reply without a call (20%), or a malformed call (20%)."""
    roll = rng.random()
    if roll < 0.25:
        return solve(task, messages)
    if roll < 0.6 and task.functions:
        tools = task_tools(task)[0]
        index = int(rng.integers(len(tools)))
        function = task.functions[index]
        return tool_call_text(tools[index].name, placeholder_arguments(function))
    if roll < 0.8:
        return NO_CALL_REPLY
    malformed = ('<tool_call>\n{"name": ', "<tool_call>\n[1, 2]\n</tool_call>", "</tool_call>")
    return malformed[int(rng.integers(len(malformed)))]
