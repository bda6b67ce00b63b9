"""BFCLEnv: one BFCL entry per episode, the first assistant message judged by the AST checker.

The agent gets the entry's first turn (its system messages join the system prompt) and the
entry's functions as tools (native ``tools`` or the text protocol, see
:class:`~agentenv.envs.tooluse.base.ToolEnv`). Its first message ends the episode, whether it
calls or not: the calls are not run but judged by :func:`agentenv.rewards.bfcl.check` against
the possible answer (tool names are mapped back to the BFCL names first). A message whose calls
cannot be read (or that makes more than ``max_calls_per_turn``) is an invalid action and fails,
in every category.

Reward: 1.0 iff the AST check passes. Components: ``ast`` (the same 0/1) and ``format`` (1.0 iff
the message could be read). ``info["ast_error"]`` is the checker's ``error_type`` (``""`` when
valid, ``"format"`` when unreadable).

Splits: one per category loaded (finite, file order), or with ``test_fraction`` two, ``train``
and ``test``, over all loaded categories by a seeded hash of the ids
(:func:`~agentenv.envs.tooluse.bfcl.loader.is_test`).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from agentenv.env import (
    ANCHOR,
    GROUND_TRUTH,
    SPLIT_OPTION,
    TASK_ID,
    TASK_OPTION,
)
from agentenv.envs.tooluse.base import CallResult, Outcome, Protocol, ToolEnv
from agentenv.envs.tooluse.bfcl.loader import BFCLTask, load, task_tools, train_test_split
from agentenv.rewards.bfcl import ASTResult, check
from agentenv.toolcalls import ToolCall, decode_action

DATA_DIR = Path(__file__).parent / "data"
"""The shipped synthetic BFCL-format files (used when no ``path`` is given)."""
AST_ERROR = "ast_error"
"""(terminal step) The AST checker's ``error_type``: ``""`` if valid, ``"format"`` if the
message could not be read."""
SYSTEM_PROMPT = """\
You are an expert in composing function calls. You are given a request and a set of functions. \
Answer with the call or calls that fulfil the request, all in one message. If none of the \
functions fits the request, or it lacks an argument a function requires, say so without calling \
any function. Your first message is final: its calls are checked, not run."""

Paths = str | Path | Sequence[str | Path]


class BFCLEnv(ToolEnv):
    """Single-turn BFCL function calling (simple, multiple, parallel, parallel_multiple,
    irrelevance, live_relevance), judged by BFCL's AST checker.

    Args:
        path: a folder with ``BFCL_v*_<category>.json`` files and ``possible_answer/``, or one
            or more question files; ``None``: the shipped synthetic files.
        category: with a folder, the category or categories to load (default: every
            supported one); with files, the category of files whose names do not state it.
        protocol: ``"native"`` (tools rendered by the chat template) or ``"text"``.
        test_fraction: when given, the splits are ``train`` and ``test`` (this share of the
            ids, by a hash seeded with ``split_seed``) instead of one per category.
        split_seed: seed of that hash.
        split: the split the seed draws from when reset names none (default: every task).
        max_calls_per_turn: more calls than this in the message is an invalid action.
    """

    description = "BFCL single-turn function calling, judged by BFCL's AST checker"
    reward_components = ("ast", "format")

    def __init__(
        self,
        *,
        path: Paths | None = None,
        category: str | Sequence[str] | None = None,
        protocol: Protocol = "native",
        test_fraction: float | None = None,
        split_seed: int = 0,
        split: str | None = None,
        max_calls_per_turn: int = 16,
        render_mode: str | None = None,
    ) -> None:
        super().__init__(
            protocol=protocol,
            max_turns=1,
            max_calls_per_turn=max_calls_per_turn,
            render_mode=render_mode,
        )
        source = _path_key(path if path is not None else DATA_DIR)
        by_category = _load(
            source, category if isinstance(category, str | None) else tuple(category)
        )
        self._tasks = {t.id: t for tasks in by_category.values() for t in tasks}
        self._splits = _splits(by_category, test_fraction, split_seed)
        if split is not None:
            self.check_split(split)
        self.split = split
        self.verdict: ASTResult | None = None
        self._names: dict[str, str] = {}

    # -- tasks --------------------------------------------------------------------------------
    def splits(self) -> dict[str, int | None]:
        """One split per category, or ``train``/``test`` with ``test_fraction``."""
        return {name: len(tasks) for name, tasks in self._splits.items()}

    def task_ids(self, split: str) -> list[str]:
        """The ids of ``split``, in file order."""
        self.check_split(split)
        return [t.id for t in self._splits[split]]

    def get_task(self, task: str | BFCLTask) -> BFCLTask:
        """The task of id ``task`` (a :class:`BFCLTask` is returned as is)."""
        if isinstance(task, BFCLTask):
            return task
        if task not in self._tasks:
            raise KeyError(f"unknown BFCL task id {task!r} (not in the loaded files)")
        return self._tasks[task]

    def _draw(self, split: str | None) -> BFCLTask:
        tasks = self._splits[split] if split else list(self._tasks.values())
        if not tasks:
            raise ValueError(f"{type(self).__name__}: split {split!r} holds no task")
        return tasks[int(self.np_random.integers(len(tasks)))]

    # -- episode ------------------------------------------------------------------------------
    async def _areset(self, *, seed: int | None, options: dict[str, Any]) -> tuple[str, dict]:
        chosen = options.get(TASK_OPTION)
        split = options.get(SPLIT_OPTION) or self.split
        self.task = self.get_task(chosen) if chosen is not None else self._draw(split)
        self.verdict = None
        tools, self._names = task_tools(self.task)
        system, observation = prompt(self.task)
        info = {
            TASK_ID: self.task.id,
            GROUND_TRUTH: list(self.task.ground_truth),
            ANCHOR: ("start",),
        }
        return observation, self.begin(tools, system, info)

    async def _astep(self, action: str) -> tuple[str, float, bool, bool, dict]:
        message = decode_action(action)
        if message.error or len(message.tool_calls) > self.max_calls_per_turn:
            error = message.error or (
                f"{len(message.tool_calls)} calls in one message; at most {self.max_calls_per_turn}"
            )
            self.verdict = None
            return await self._finish(message.content, [], self.invalid_message.format(error=error))
        calls = [replace(c, name=self._names.get(c.name, c.name)) for c in message.tool_calls]
        self.verdict = check(self.task.functions, self.task.ground_truth, calls, self.task.category)
        return await self._finish(message.content, list(message.tool_calls), _explain(self.verdict))

    async def _finish(
        self, content: str, calls: list[ToolCall], text: str
    ) -> tuple[str, float, bool, bool, dict]:
        results = [CallResult(c, "") for c in calls]
        valid = self.verdict is not None
        step = await self._end(content, terminated=True, valid=valid, results=results, text=text)
        info = step[4]
        info[ANCHOR] = ("done",)
        info[AST_ERROR] = self.verdict.error_type if self.verdict else "format"
        return step

    async def judge(self, answer: str | None) -> Outcome:
        """1.0 iff the message was read and passed the AST check."""
        ast = float(self.verdict is not None and self.verdict.valid)
        return Outcome(ast, ast == 1.0, {"ast": ast, "format": float(self.verdict is not None)})


def prompt(task: BFCLTask) -> tuple[str, str]:
    """``(system prompt, first observation)`` of ``task``: its system messages follow
    :data:`SYSTEM_PROMPT`; its other messages are the observation (one message as it is,
    several as ``role: content`` paragraphs)."""
    system = [m["content"] for m in task.messages if m["role"] == "system"]
    others = [m for m in task.messages if m["role"] != "system"]
    if len(others) == 1:
        observation = others[0]["content"]
    else:
        observation = "\n\n".join(f"{m['role']}: {m['content']}" for m in others)
    return "\n\n".join([SYSTEM_PROMPT, *system]), observation


def _explain(verdict: ASTResult) -> str:
    if verdict.valid:
        return "The AST check passed."
    return f"The AST check failed ({verdict.error_type}): {verdict.message}"


def _path_key(path: Paths) -> str | tuple[str, ...]:
    """``path`` as resolved string(s) (``~`` expanded): what is loaded, and the parse cache's key."""
    if isinstance(path, str | Path):
        return str(Path(path).expanduser().resolve())
    return tuple(str(Path(p).expanduser().resolve()) for p in path)


@functools.lru_cache(maxsize=16)
def _load(path: Any, category: Any) -> dict[str, list[BFCLTask]]:
    """Files parsed once per process per (path, category): a run builds one env per episode."""
    paths = list(path) if isinstance(path, tuple) else path
    categories = list(category) if isinstance(category, tuple) else category
    return load(paths, categories)


def _splits(
    by_category: dict[str, list[BFCLTask]], test_fraction: float | None, seed: int
) -> dict[str, list[BFCLTask]]:
    if test_fraction is None:
        return dict(by_category)
    train, test = train_test_split(
        [t for tasks in by_category.values() for t in tasks], test_fraction, seed
    )
    return {"train": train, "test": test}
