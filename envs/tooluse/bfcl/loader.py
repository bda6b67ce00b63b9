"""BFCL files: question and possible-answer JSON lines → :class:`BFCLTask`; function docs → Tools.

A question file (``BFCL_v4_simple_python.json``, ``BFCL_v3_parallel.json``, …; JSON lines
despite the suffix) holds rows ``{"id", "question", "function"}``: ``question`` is a list of
turns, each a list of ``{"role", "content"}`` messages (single-turn categories use the first),
``function`` the BFCL function docs offered. Its possible answers sit in
``possible_answer/<same file name>``: rows ``{"id", "ground_truth": [{name: {param: [allowed
values]}}]}``. The category comes from the file name (``BFCL_v<N>_<category>.json``) unless
given. Irrelevance and relevance categories have no possible answers; every other question
needs one.

A bad row raises :class:`agentenv.jsonl.DataFormatError` naming the file and line.

Function docs become :class:`~agentenv.envs.tooluse.schema.Tool` objects: BFCL's type names
map to JSON Schema (``dict`` → ``object``, ``float`` → ``number``, ``tuple`` → ``array``,
``any`` → no ``type``), and names outside the OpenAI rule (BFCL's ``math.factorial``) are
rewritten (``math_factorial``) with a map back to the original.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agentenv.envs.tooluse.schema import Tool
from agentenv.jsonl import DataFormatError, iter_jsonl
from agentenv.rewards.bfcl import checker_for

log = logging.getLogger(__name__)

QUESTION_FILE = re.compile(r"^BFCL_v\d+_(?P<category>\w+)\.json$")
"""Names of BFCL question files; the group is the category."""
ANSWER_DIR = "possible_answer"
"""The folder, next to the question files, that holds their possible answers."""
NO_ANSWER_CHECKERS: tuple[str, ...] = ("irrelevance", "relevance")
"""Checkers whose categories come without possible answers."""
SCHEMA_TYPES: dict[str, str | None] = {
    "dict": "object",
    "float": "number",
    "tuple": "array",
    "any": None,
}
"""BFCL type names that differ in JSON Schema (``None``: no type constraint)."""
_NOT_IN_NAME = re.compile(r"[^A-Za-z0-9_-]")

Answer = dict[str, dict[str, list[Any]]]


@dataclass(frozen=True)
class BFCLTask:
    """One BFCL entry: the first turn's ``messages``, the ``functions`` offered (BFCL docs) and
    the ``ground_truth`` (possible answer; empty for irrelevance and relevance)."""

    id: str
    category: str
    messages: tuple[dict[str, str], ...]
    functions: tuple[dict[str, Any], ...]
    ground_truth: tuple[Answer, ...] = ()

    @property
    def checker(self) -> str:
        """The AST checker this task is judged by (:func:`agentenv.rewards.bfcl.checker_for`)."""
        return checker_for(self.category)


# ---------------------------------------------------------------------------------------------
# Files
# ---------------------------------------------------------------------------------------------
def category_of(path: str | Path) -> str | None:
    """The category a BFCL file name states (``BFCL_v4_live_simple.json`` → ``live_simple``)."""
    match = QUESTION_FILE.match(Path(path).name)
    return match["category"] if match else None


def answer_path(path: str | Path) -> Path:
    """Where the possible answers of question file ``path`` are."""
    path = Path(path)
    return path.parent / ANSWER_DIR / path.name


def load(
    path: str | Path | Sequence[str | Path], category: str | Sequence[str] | None = None
) -> dict[str, list[BFCLTask]]:
    """Tasks by category from a folder (:func:`load_dir`, ``category`` selects categories) or
    from question file(s) (each :func:`load_file`; a ``category`` string names the category of
    files whose names do not). Ids must be unique across everything loaded."""
    if isinstance(path, str | Path) and Path(path).is_dir():
        return load_dir(path, category)
    paths = [path] if isinstance(path, str | Path) else list(path)
    if category is not None and not isinstance(category, str):
        raise ValueError("with question files, category names one category (a string)")
    return _by_category(t for p in paths for t in load_file(p, category))


def load_dir(
    folder: str | Path, categories: str | Sequence[str] | None = None
) -> dict[str, list[BFCLTask]]:
    """Tasks by category from the ``BFCL_v*_*.json`` files of ``folder`` (answers in its
    ``possible_answer/``). Files of categories the checker does not support (multi-turn,
    Java, …) are skipped unless ``categories`` asks for them (then it is an error)."""
    folder = Path(folder)
    wanted = [categories] if isinstance(categories, str) else categories
    files = sorted(p for p in folder.iterdir() if p.is_file() and category_of(p))
    chosen = []
    for file in files:
        category = category_of(file)
        if wanted is not None and category not in wanted:
            continue
        if wanted is None and not _supported(category):
            log.info("%s: skipped (category %s is not single-turn AST-checked)", file, category)
            continue
        chosen.append(file)
    missing = sorted(set(wanted or ()) - {category_of(f) for f in chosen})
    if missing:
        found = ", ".join(sorted({str(category_of(f)) for f in files})) or "none"
        raise FileNotFoundError(
            f"{folder}: no BFCL_v*_<category>.json file for {', '.join(missing)} (found: {found})"
        )
    if not chosen:
        raise FileNotFoundError(
            f"{folder}: no BFCL_v*_<category>.json file of a supported category"
        )
    return _by_category(t for f in chosen for t in load_file(f))


def load_file(
    path: str | Path, category: str | None = None, answers: str | Path | None = None
) -> list[BFCLTask]:
    """The tasks of one question file, in file order. ``category`` defaults to the one the
    file name states; ``answers`` to :func:`answer_path`."""
    path = Path(path)
    category = category or category_of(path)
    if category is None:
        raise ValueError(
            f"{path}: the file name does not state a BFCL category (BFCL_v<N>_<category>.json); "
            "give category="
        )
    try:
        checker = checker_for(category)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None
    rows = read_questions(path)
    if checker in NO_ANSWER_CHECKERS:
        return [_task(row, category, ()) for _, row in rows]
    answers = Path(answers) if answers is not None else answer_path(path)
    if not answers.is_file():
        raise FileNotFoundError(
            f"{path}: its possible answers are missing (looked for {answers}); category "
            f"{category} is judged against them"
        )
    truth = read_answers(answers)
    absent = [row["id"] for _, row in rows if row["id"] not in truth]
    if absent:
        shown = ", ".join(absent[:5]) + (", …" if len(absent) > 5 else "")
        raise DataFormatError(
            f"{answers}: no possible answer for {len(absent)} id(s) of {path}: {shown}"
        )
    tasks = []
    for lineno, row in rows:
        answer_line, ground_truth = truth[row["id"]]
        _check_answer_names(answers, answer_line, ground_truth, row, f"{path}:{lineno}")
        tasks.append(_task(row, category, ground_truth))
    return tasks


def read_questions(path: str | Path) -> list[tuple[int, dict[str, Any]]]:
    """``(line, row)`` of a question file, each row checked (``function`` always a list)."""
    rows: list[tuple[int, dict[str, Any]]] = []
    seen: dict[str, int] = {}
    for lineno, row in iter_jsonl(path):
        where = f"{path}:{lineno}"
        row_id = _check_id(row, where, seen, lineno)
        functions = row.get("function")
        functions = [functions] if isinstance(functions, dict) else functions
        if not isinstance(functions, list) or not all(_is_function(f) for f in functions):
            raise DataFormatError(
                f'{where}: "function" must be a list of {{"name", "parameters"}} objects'
            )
        _check_question(row.get("question"), where)
        rows.append((lineno, {**row, "id": row_id, "function": functions}))
    return rows


def read_answers(path: str | Path) -> dict[str, tuple[int, tuple[Answer, ...]]]:
    """id → ``(line, ground truth)`` of a possible-answer file, each row checked."""
    answers: dict[str, tuple[int, tuple[Answer, ...]]] = {}
    seen: dict[str, int] = {}
    for lineno, row in iter_jsonl(path):
        where = f"{path}:{lineno}"
        row_id = _check_id(row, where, seen, lineno)
        truth = row.get("ground_truth")
        truth = [truth] if isinstance(truth, dict) else truth
        if not isinstance(truth, list) or not truth or not all(_is_answer(a) for a in truth):
            raise DataFormatError(
                f'{where}: "ground_truth" must be a non-empty list of '
                "{function_name: {param: [allowed values]}} objects"
            )
        answers[row_id] = (lineno, tuple(truth))
    return answers


def _check_id(row: dict[str, Any], where: str, seen: dict[str, int], lineno: int) -> str:
    row_id = row.get("id")
    if not isinstance(row_id, str) or not row_id:
        raise DataFormatError(f'{where}: "id" must be a non-empty string, got {row_id!r:.60}')
    if row_id in seen:
        raise DataFormatError(f"{where}: id {row_id!r} repeats line {seen[row_id]}")
    seen[row_id] = lineno
    return row_id


def _check_question(question: Any, where: str) -> None:
    if not isinstance(question, list) or not question or not isinstance(question[0], list):
        raise DataFormatError(f'{where}: "question" must be a list of turns (lists of messages)')
    turn = question[0]
    if not turn or not all(
        isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
        for m in turn
    ):
        raise DataFormatError(
            f'{where}: the first turn of "question" must be a non-empty list of '
            '{"role", "content"} messages with string values'
        )


def _is_function(value: Any) -> bool:
    return (
        isinstance(value, dict)
        and isinstance(value.get("name"), str)
        and bool(value["name"])
        and isinstance(value.get("parameters", {}), dict)
    )


def _is_answer(value: Any) -> bool:
    if not isinstance(value, dict) or len(value) != 1:
        return False
    params = next(iter(value.values()))
    return isinstance(params, dict) and all(isinstance(v, list) for v in params.values())


def _check_answer_names(
    path: Path, lineno: int, truth: Sequence[Answer], row: dict[str, Any], question: str
) -> None:
    offered = {f["name"] for f in row["function"]}
    for answer in truth:
        name = next(iter(answer))
        if name not in offered:
            raise DataFormatError(
                f"{path}:{lineno}: the possible answer calls {name!r}, which {question} does "
                f"not offer ({', '.join(sorted(offered)) or 'no functions'})"
            )


def _task(row: dict[str, Any], category: str, ground_truth: tuple[Answer, ...]) -> BFCLTask:
    return BFCLTask(
        id=row["id"],
        category=category,
        messages=tuple(dict(m) for m in row["question"][0]),
        functions=tuple(row["function"]),
        ground_truth=ground_truth,
    )


def _supported(category: str | None) -> bool:
    try:
        checker_for(category or "")
    except ValueError:
        return False
    return True


def _by_category(tasks: Iterable[BFCLTask]) -> dict[str, list[BFCLTask]]:
    out: dict[str, list[BFCLTask]] = {}
    seen: dict[str, str] = {}
    for task in tasks:
        if task.id in seen:
            raise DataFormatError(
                f"task id {task.id!r} appears in categories {seen[task.id]} and {task.category}"
            )
        seen[task.id] = task.category
        out.setdefault(task.category, []).append(task)
    return out


# ---------------------------------------------------------------------------------------------
# Splits
# ---------------------------------------------------------------------------------------------
def is_test(task_id: str, test_fraction: float, seed: int = 0) -> bool:
    """Whether ``task_id`` falls in the test split: a seeded hash of the id, independent of
    file order and of the other tasks."""
    digest = hashlib.sha256(f"{seed}\0{task_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < test_fraction


def train_test_split(
    tasks: Sequence[BFCLTask], test_fraction: float, seed: int = 0
) -> tuple[list[BFCLTask], list[BFCLTask]]:
    """``(train, test)`` of ``tasks`` by :func:`is_test`, each in the given order."""
    if not 0.0 <= test_fraction <= 1.0:
        raise ValueError(f"test_fraction must be in [0, 1], got {test_fraction!r}")
    test = [t for t in tasks if is_test(t.id, test_fraction, seed)]
    chosen = {t.id for t in test}
    return [t for t in tasks if t.id not in chosen], test


# ---------------------------------------------------------------------------------------------
# Tools
# ---------------------------------------------------------------------------------------------
def tool_name(name: str) -> str:
    """``name`` under the OpenAI rule (letters, digits, ``_``, ``-``; at most 64): other
    characters become ``_``."""
    return _NOT_IN_NAME.sub("_", name)[:64] or "_"


def to_schema(schema: Mapping[str, Any]) -> dict[str, Any]:
    """A BFCL parameter schema as JSON Schema (:data:`SCHEMA_TYPES`, recursively)."""
    out = dict(schema)
    kind = out.get("type")
    if isinstance(kind, str) and kind in SCHEMA_TYPES:
        if SCHEMA_TYPES[kind] is None:
            del out["type"]
        else:
            out["type"] = SCHEMA_TYPES[kind]
    if isinstance(out.get("properties"), Mapping):
        out["properties"] = {
            k: to_schema(v) if isinstance(v, Mapping) else v for k, v in out["properties"].items()
        }
    if isinstance(out.get("items"), Mapping):
        out["items"] = to_schema(out["items"])
    return out


def task_tools(task: BFCLTask) -> tuple[list[Tool], dict[str, str]]:
    """The task's functions as Tools, and the map from each tool's name back to the BFCL name
    (names made unique with a ``_2``, ``_3``… suffix when the rewrite collides)."""
    tools: list[Tool] = []
    original: dict[str, str] = {}
    for function in task.functions:
        name = tool_name(function["name"])
        for n in range(2, len(task.functions) + 2):
            if name not in original:
                break
            suffix = f"_{n}"
            name = tool_name(function["name"])[: 64 - len(suffix)] + suffix
        original[name] = function["name"]
        parameters = to_schema(function.get("parameters") or {"type": "dict", "properties": {}})
        tools.append(Tool(name, str(function.get("description") or ""), parameters))
    return tools, original
