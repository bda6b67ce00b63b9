"""Format rewards: tag-protocol validation as reward components.

- :func:`search_r1_action`: the action of one Search-R1 turn (Jin et al., arXiv 2503.09516): its
  first ``<search>`` or ``<answer>`` block. ``search-v0`` reads its agent's actions with it, and
  its ``format`` components say whether one was found.
- :func:`search_r1_sequence`: the Search-R1 protocol as a state machine over a whole response
  (a rollout written as one string, as Search-R1 trains): ``<think>`` → (``<search>`` →
  ``<information>`` → ``<think>``)* → ``<answer>``, nothing but whitespace between blocks.
- :func:`balanced_tags`: IGPO's format check (arXiv 2510.14967): every ``<think>/<answer>/
  <tool_call>/<code>`` tag is balanced and an ``<answer>`` exists (failure reward −2.0 there).
- :func:`tool_calls`: ``<tool_call>{json}</tool_call>`` blocks with a ``name`` and an
  ``arguments`` object, checked against OpenAI-style tool schemas when given.

Every check returns a :class:`FormatCheck` (``valid``, ``reason``); :func:`format_reward`
turns it into a number, so any check plugs into a :class:`~agentenv.rewards.rubric.Rubric`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "FormatCheck",
    "balanced_tags",
    "format_reward",
    "search_r1_action",
    "search_r1_sequence",
    "tool_calls",
]


@dataclass(frozen=True)
class FormatCheck:
    """Outcome of a format check; ``reason`` says what broke (empty when valid)."""

    valid: bool
    reason: str = ""
    calls: list[dict[str, Any]] = field(default_factory=list)

    def __bool__(self) -> bool:
        return self.valid


def format_reward(check: FormatCheck, *, valid: float = 1.0, invalid: float = 0.0) -> float:
    """``valid`` if the check passed, else ``invalid``."""
    return valid if check.valid else invalid


_SEARCH_R1_TAGS = ("think", "search", "information", "answer")
_TAG = re.compile(r"<(/?)(" + "|".join(_SEARCH_R1_TAGS) + r")>")
# state -> blocks allowed next
_NEXT: dict[str, tuple[str, ...]] = {
    "start": ("think",),
    "think": ("search", "answer"),
    "search": ("information",),
    "information": ("think",),
    "answer": (),
}


def search_r1_action(text: str) -> tuple[str | None, str]:
    """``(kind, content)`` of the first ``<search>…</search>`` or ``<answer>…</answer>`` in
    ``text`` (the regex ``<(search|answer)>(.*?)</\\1>``), or ``(None, "")``.

    Linear time: once a tag has no closing tag after some opening, later openings of it are
    skipped.
    """
    position = 0
    closed = {"search": True, "answer": True}
    while True:
        starts = {tag: text.find(f"<{tag}>", position) for tag in closed if closed[tag]}
        starts = {tag: i for tag, i in starts.items() if i >= 0}
        if not starts:
            return None, ""
        tag = min(starts, key=starts.__getitem__)
        begin = starts[tag] + len(tag) + 2
        end = text.find(f"</{tag}>", begin)
        if end >= 0:
            return tag, text[begin:end].strip()
        closed[tag] = False
        position = starts[tag]


def search_r1_sequence(text: str, *, require_answer: bool = True) -> FormatCheck:
    """Validate a Search-R1 response: blocks in protocol order, properly closed, not nested,
    only whitespace between them, and (with ``require_answer``) ending with ``<answer>``."""
    state, pos, open_tag = "start", 0, None
    for m in _TAG.finditer(text):
        closing, tag = m.group(1) == "/", m.group(2)
        between = text[pos : m.start()]
        pos = m.end()
        if open_tag is None:
            if between.strip():
                return FormatCheck(False, f"text outside a block before <{tag}>")
            if closing:
                return FormatCheck(False, f"</{tag}> without an opening tag")
            if tag not in _NEXT[state]:
                expected = " or ".join(f"<{t}>" for t in _NEXT[state]) or "nothing"
                return FormatCheck(False, f"<{tag}> after {state}; expected {expected}")
            open_tag = tag
        else:
            if not closing or tag != open_tag:
                return FormatCheck(False, f"<{'/' if closing else ''}{tag}> inside <{open_tag}>")
            state, open_tag = tag, None
    if open_tag is not None:
        return FormatCheck(False, f"<{open_tag}> not closed")
    if text[pos:].strip():
        return FormatCheck(False, "text after the last block")
    if require_answer and state != "answer":
        return FormatCheck(False, "no <answer> block at the end")
    return FormatCheck(True)


def balanced_tags(
    text: str, tags: Iterable[str] = ("think", "answer", "tool_call", "code")
) -> FormatCheck:
    """IGPO's check: each tag opens and closes the same number of times, closes never precede
    opens, and an ``<answer>`` block exists."""
    for tag in tags:
        depth = 0
        for m in re.finditer(rf"<(/?){re.escape(tag)}>", text):
            depth += -1 if m.group(1) else 1
            if depth < 0:
                return FormatCheck(False, f"</{tag}> before <{tag}>")
        if depth != 0:
            return FormatCheck(False, f"unbalanced <{tag}>")
    if not re.search(r"<answer>.*?</answer>", text, re.DOTALL):
        return FormatCheck(False, "no <answer> block")
    return FormatCheck(True)


_TOOL_CALL = re.compile(r"<tool_call>(.*?)</tool_call>", re.DOTALL)


def _schema_index(tools: Sequence[Mapping[str, Any]]) -> dict[str, Mapping[str, Any]]:
    index = {}
    for tool in tools:
        fn = tool.get("function", tool)
        index[fn["name"]] = fn.get("parameters", {})
    return index


def _check_arguments(name: str, args: Mapping[str, Any], params: Mapping[str, Any]) -> str:
    props = params.get("properties", {})
    missing = [p for p in params.get("required", []) if p not in args]
    if missing:
        return f"{name}: missing required argument(s) {', '.join(missing)}"
    if props and params.get("additionalProperties") is False:
        extra = [a for a in args if a not in props]
        if extra:
            return f"{name}: unknown argument(s) {', '.join(extra)}"
    return ""


def tool_calls(
    text: str, *, tools: Sequence[Mapping[str, Any]] | None = None, require: bool = True
) -> FormatCheck:
    """Parse ``<tool_call>{"name": ..., "arguments": {...}}</tool_call>`` blocks.

    Each block must be a JSON object with a string ``name`` and an object ``arguments`` (a JSON
    string holding an object is accepted). With ``tools`` (OpenAI function schemas) the name must
    be known and required parameters present. ``require``: at least one call must exist.
    Parsed calls are returned in ``calls``.
    """
    blocks = _TOOL_CALL.findall(text)
    if not blocks:
        return FormatCheck(not require, "no <tool_call> block" if require else "")
    schemas = _schema_index(tools) if tools is not None else None
    calls = []
    for i, raw in enumerate(blocks):
        try:
            call = json.loads(raw)
        except json.JSONDecodeError as exc:
            return FormatCheck(False, f"tool call {i}: invalid JSON ({exc.msg})")
        if not isinstance(call, dict) or not isinstance(call.get("name"), str):
            return FormatCheck(False, f"tool call {i}: expected an object with a string 'name'")
        args = call.get("arguments", {})
        if isinstance(args, str):
            try:
                args = json.loads(args)
            except json.JSONDecodeError:
                return FormatCheck(False, f"tool call {i}: 'arguments' is not JSON")
        if not isinstance(args, dict):
            return FormatCheck(False, f"tool call {i}: 'arguments' must be an object")
        if schemas is not None:
            if call["name"] not in schemas:
                return FormatCheck(False, f"tool call {i}: unknown tool {call['name']!r}")
            problem = _check_arguments(call["name"], args, schemas[call["name"]])
            if problem:
                return FormatCheck(False, f"tool call {i}: {problem}")
        calls.append({"name": call["name"], "arguments": args})
    return FormatCheck(True, calls=calls)
