"""MCP task files: what to ask, which tools to show, and how the episode is checked.

A task file is JSON Lines, one task per line::

    {"id": "tz-001", "prompt": "It is 09:15 in Tokyo (Asia/Tokyo) ...", "split": "train",
     "answer": "05:45",
     "check": {"calls_include": [{"name": "convert_time",
                                  "arguments": {"source_timezone": "Asia/Tokyo"}}],
               "answer_regex": "\\\\b05:45\\\\b"},
     "gold_calls": [{"name": "convert_time", "arguments": {...}}],
     "tools": ["convert_time"]}

Fields (anything else on a line is an error, so a typo never silently drops a check):

- ``id`` (string or integer, unique in the file) and ``prompt`` (non-empty string): required.
- ``check`` (object, required, at least one entry): the declarative checker, below.
- ``split`` (string): the split the task belongs to. Either every line names one or none does;
  without them the file is partitioned into ``train`` and ``test`` by a seeded hash of the ids
  (``test_fraction`` of them in ``test``), the same on every machine.
- ``answer`` (string): the reference answer, reported as ``info["ground_truth"]``; it is not
  scored unless a check says so.
- ``tools`` (list of names): show only these of the server's tools in this task.
- ``system`` (string): this task's system prompt (the env's default otherwise).
- ``gold_calls`` (list of ``{"name", "arguments"}``): a solution's calls, for scripted experts;
  never shown to the agent and not scored.
- ``meta`` (object): free-form, carried along on the task.

Checks (all listed checks must pass for success; each is a reward component, 1.0 or 0.0). The
final answer is the agent's reply without a tool call, stripped of surrounding whitespace:

- ``answer_contains``: list of strings; every one occurs in the final answer (case-insensitive).
- ``answer_equals``: string; the final answer, case-folded, equals it (stripped, case-folded).
- ``answer_regex``: a Python regular expression (at most 1,000 characters) that
  :func:`re.search` finds in the final answer (``re.DOTALL``; write ``(?i)`` for case).
- ``calls_include``: list of ``{"name", "arguments"}``; for each, some call of the episode with
  that name and at least those arguments (equal values) ran without an error.

An episode that runs out of turns has no final answer: its answer checks fail. Nothing in a task
file is executed; the regular expressions are the task author's, as trusted as the file.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agentenv.jsonl import DataFormatError, iter_jsonl
from agentenv.toolcalls import ToolCall

FIELDS = ("id", "prompt", "check", "split", "answer", "tools", "system", "gold_calls", "meta")
"""The keys a task line may have."""
CHECKS = ("answer_contains", "answer_equals", "answer_regex", "calls_include")
"""The checks a task's ``check`` may list; each is also a reward component name."""
MAX_REGEX_CHARS = 1000
SPLIT_NAMES = ("train", "test")
"""The splits of a file whose lines name none."""


@dataclass(frozen=True)
class Expected:
    """A call a task expects: its tool name and the arguments it must carry (a subset)."""

    name: str
    arguments: Mapping[str, Any] = field(default_factory=dict)

    def matches(self, call: ToolCall) -> bool:
        """``call`` names this tool and carries each of these arguments with an equal value."""
        return call.name == self.name and all(
            key in call.arguments and call.arguments[key] == value
            for key, value in self.arguments.items()
        )

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "arguments": dict(self.arguments)}


@dataclass(frozen=True)
class Check:
    """The declarative checker of one task (see the module docs for each field)."""

    answer_contains: tuple[str, ...] | None = None
    answer_equals: str | None = None
    answer_regex: str | None = None
    calls_include: tuple[Expected, ...] | None = None

    def names(self) -> list[str]:
        """The checks this task uses, in :data:`CHECKS` order."""
        return [name for name in CHECKS if getattr(self, name) is not None]

    def evaluate(self, answer: str | None, calls: Iterable[ToolCall]) -> dict[str, float]:
        """Each used check → 1.0 (passed) or 0.0; ``answer`` is ``None`` when there is none;
        ``calls`` are the episode's calls that ran without an error."""
        calls = list(calls)
        text = answer.strip() if answer is not None else None
        results = {
            "answer_contains": lambda: (
                text is not None
                and all(s.casefold() in text.casefold() for s in self.answer_contains or ())
            ),
            "answer_equals": lambda: (
                text is not None
                and text.casefold() == (self.answer_equals or "").strip().casefold()
            ),
            "answer_regex": lambda: (
                text is not None and re.search(self.answer_regex or "", text, re.DOTALL) is not None
            ),
            "calls_include": lambda: all(
                any(e.matches(c) for c in calls) for e in self.calls_include or ()
            ),
        }
        return {name: float(bool(results[name]())) for name in self.names()}


@dataclass(frozen=True)
class McpTask:
    """One task of a task file."""

    id: str
    prompt: str
    check: Check
    split: str = ""
    answer: str = ""
    tools: tuple[str, ...] | None = None
    system: str | None = None
    gold_calls: tuple[Expected, ...] = ()
    meta: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class TaskFile:
    """The tasks of one file, by split, in file order."""

    path: str
    splits: Mapping[str, tuple[McpTask, ...]]

    def task(self, task_id: str) -> McpTask:
        """The task with id ``task_id``; a :class:`KeyError` naming the file otherwise."""
        for tasks in self.splits.values():
            for task in tasks:
                if task.id == task_id:
                    return task
        raise KeyError(f"no task {task_id!r} in {self.path}")


# ---------------------------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------------------------
class _Bad(ValueError):
    """What is wrong with one line (the caller adds the file and line)."""


def load_tasks(path: str | Path, *, test_fraction: float = 0.2, split_seed: int = 0) -> TaskFile:
    """Read a task file; a bad line is a :class:`DataFormatError` naming the file and line.

    Lines without a ``split`` are partitioned by :func:`partition` with ``test_fraction`` and
    ``split_seed``.
    """
    if not 0.0 <= test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in [0, 1), got {test_fraction!r}")
    tasks: list[McpTask] = []
    seen: dict[str, int] = {}
    named: list[bool] = []
    for lineno, row in iter_jsonl(path):
        try:
            task = parse_task(row)
            if task.id in seen:
                raise _Bad(f"duplicate id {task.id!r} (first on line {seen[task.id]})")
            if named and named[0] != bool(task.split):
                raise _Bad('either every line names its "split" or none does')
        except _Bad as exc:
            raise DataFormatError(f"{path}:{lineno}: {exc}") from None
        seen[task.id] = lineno
        named.append(bool(task.split))
        tasks.append(task)
    if not tasks:
        raise DataFormatError(f"{path}: no tasks (the file has no lines)")
    return TaskFile(str(path), _by_split(tasks, test_fraction, split_seed))


def partition(ids: Sequence[str], test_fraction: float, seed: int) -> set[str]:
    """The ids that go to ``test``: the ``round(test_fraction * n)`` smallest by a seeded hash
    (stable across machines and Python versions; at least one train task)."""
    n_test = min(round(test_fraction * len(ids)), len(ids) - 1)
    ranked = sorted(ids, key=lambda i: hashlib.sha256(f"{seed}:{i}".encode()).hexdigest())
    return set(ranked[:n_test])


def _by_split(
    tasks: list[McpTask], test_fraction: float, seed: int
) -> dict[str, tuple[McpTask, ...]]:
    if tasks[0].split:
        names = list(dict.fromkeys(t.split for t in tasks))
        return {name: tuple(t for t in tasks if t.split == name) for name in names}
    test = partition([t.id for t in tasks], test_fraction, seed)
    splits = {
        "train": tuple(t for t in tasks if t.id not in test),
        "test": tuple(t for t in tasks if t.id in test),
    }
    return {name: rows for name, rows in splits.items() if rows}


def parse_task(row: Mapping[str, Any]) -> McpTask:
    """A :class:`McpTask` from one line's object; raises ``ValueError`` saying what is wrong."""
    unknown = [key for key in row if key not in FIELDS]
    if unknown:
        raise _Bad(f"unknown field(s) {', '.join(map(repr, unknown))}; fields: {', '.join(FIELDS)}")
    task_id = row.get("id")
    if isinstance(task_id, bool) or not isinstance(task_id, str | int) or task_id == "":
        raise _Bad(f'"id" must be a non-empty string or an integer, got {task_id!r:.60}')
    prompt = row.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        raise _Bad(f'"prompt" must be a non-empty string, got {prompt!r:.60}')
    if "check" not in row:
        raise _Bad(f'no "check" (an object with one or more of: {", ".join(CHECKS)})')
    tools = row.get("tools")
    if tools is not None:
        tools = tuple(_strings(tools, '"tools"'))
    return McpTask(
        id=str(task_id),
        prompt=prompt,
        check=parse_check(row["check"]),
        split=_optional_str(row, "split"),
        answer=_optional_str(row, "answer"),
        tools=tools,
        system=_optional_str(row, "system") or None,
        gold_calls=tuple(_calls(row.get("gold_calls", []), '"gold_calls"')),
        meta=_mapping(row.get("meta", {}), '"meta"'),
    )


def parse_check(value: Any) -> Check:
    """A :class:`Check` from a task's ``check`` object."""
    check = _mapping(value, '"check"')
    unknown = [key for key in check if key not in CHECKS]
    if unknown:
        raise _Bad(f"unknown check(s) {', '.join(map(repr, unknown))}; checks: {', '.join(CHECKS)}")
    if not check:
        raise _Bad(f'"check" is empty; give one or more of: {", ".join(CHECKS)}')
    contains = check.get("answer_contains")
    if contains is not None:
        contains = tuple(_strings(contains, '"answer_contains"'))
        if not contains:
            raise _Bad('"answer_contains" is empty')
    equals = check.get("answer_equals")
    if equals is not None and not isinstance(equals, str):
        raise _Bad(f'"answer_equals" must be a string, got {equals!r:.60}')
    regex = check.get("answer_regex")
    if regex is not None:
        _compile(regex)
    calls = check.get("calls_include")
    if calls is not None:
        calls = tuple(_calls(calls, '"calls_include"'))
        if not calls:
            raise _Bad('"calls_include" is empty')
    return Check(contains, equals, regex, calls)


def _compile(regex: Any) -> None:
    if not isinstance(regex, str) or not regex:
        raise _Bad(f'"answer_regex" must be a non-empty string, got {regex!r:.60}')
    if len(regex) > MAX_REGEX_CHARS:
        raise _Bad(f'"answer_regex" is {len(regex)} characters; at most {MAX_REGEX_CHARS}')
    try:
        re.compile(regex)
    except re.error as exc:
        raise _Bad(f'"answer_regex" is not a valid regular expression: {exc}') from None


def _optional_str(row: Mapping[str, Any], key: str) -> str:
    value = row.get(key, "")
    if not isinstance(value, str):
        raise _Bad(f'"{key}" must be a string, got {value!r:.60}')
    return value


def _mapping(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise _Bad(f"{where} must be an object, got {type(value).__name__}")
    return dict(value)


def _strings(value: Any, where: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise _Bad(f"{where} must be a list of strings, got {value!r:.60}")
    return value


def _calls(value: Any, where: str) -> list[Expected]:
    if not isinstance(value, list):
        raise _Bad(f"{where} must be a list of calls, got {type(value).__name__}")
    calls = []
    for i, item in enumerate(value):
        item = _mapping(item, f"{where}[{i}]")
        name, arguments = item.get("name"), item.get("arguments", {})
        if not isinstance(name, str) or not name:
            raise _Bad(f'{where}[{i}] needs a "name" string, got {name!r:.60}')
        extra = [key for key in item if key not in ("name", "arguments")]
        if extra:
            raise _Bad(f"{where}[{i}] has unknown key(s) {', '.join(map(repr, extra))}")
        calls.append(Expected(name, _mapping(arguments, f'{where}[{i}] "arguments"')))
    return calls
