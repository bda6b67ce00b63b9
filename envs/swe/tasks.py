"""Loading and saving task instances: SWE-bench rows, SWE-smith rows and our own.

:func:`load_instances` reads JSON Lines (or one JSON list) of rows of three kinds, told apart per
row by ``kind="auto"``:

- **agentenv** (a ``bug_patch`` field): an :class:`~agentenv.envs.swe.factory.Instance` as
  ``asdict`` or :meth:`~agentenv.envs.swe.factory.Instance.to_swebench` writes it.
- **SWE-smith** (an ``image_name`` field; Yang et al. 2025, arXiv 2504.21798): ``patch`` is
  the *bug*, so it becomes ``bug_patch`` and the fix (``patch``) is unknown (``""``); the image
  is ``image_name``; the strategy in the id (``….func_pm_ctrl_invert_if__3wez5pbg``) is the
  family; the test command is the row's ``test_cmd`` or :data:`SWESMITH_TEST_CMD`.
- **SWE-bench** (otherwise; Jimenez et al. 2024, arXiv 2310.06770): ``patch`` is the gold fix
  and the image holds the buggy repo: the row's ``image`` (v5 rows) or the name the harness
  derives (:func:`swebench_image`). The test command is the row's ``test_cmd``, else the lines
  between the ``>>>>> Start/End Test Output`` markers of its ``eval_script``, else ``""`` (older
  rows: the harness takes it from its per-repo specs, and grading refuses the instance).

FAIL_TO_PASS/PASS_TO_PASS may be lists or JSON strings of lists. Every error is a
:class:`~agentenv.jsonl.DataFormatError` naming the line (or list row) and the field; a
repeated ``instance_id`` names both lines. :func:`save_instances` writes SWE-bench-format rows
(with our fields) that load back unchanged.

:class:`SWETasks` says where an env's instances come from (factory bugs of some packages, or a
file) and :func:`instance_set` builds or loads them once per process and splits them.
"""

from __future__ import annotations

import asyncio
import codecs
import dataclasses
import hashlib
import json
import os
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Literal

from agentenv.envs.swe.factory import Instance, abuild_instances
from agentenv.envs.swe.grading import touched_files
from agentenv.jsonl import DataFormatError, iter_jsonl

Kind = Literal["auto", "swebench", "swesmith", "agentenv"]

SWESMITH_TEST_CMD = "pytest --disable-warnings --color=no --tb=no --verbose -rA"
"""SWE-smith's default Python test command, plus ``-rA`` for the per-test summary we parse."""

START_TEST_OUTPUT, END_TEST_OUTPUT = ">>>>> Start Test Output", ">>>>> End Test Output"

_FIELDS = {f.name: f for f in dataclasses.fields(Instance)}
_REQUIRED = [
    name
    for name, f in _FIELDS.items()
    if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
]


def load_instances(path: str | os.PathLike[str], *, kind: Kind = "auto") -> list[Instance]:
    """The instances in ``path`` (JSON Lines, or a JSON list), in file order."""
    if kind not in _CONVERTERS and kind != "auto":
        raise ValueError(f"kind must be auto, {', '.join(_CONVERTERS)}; got {kind!r}")
    found: list[Instance] = []
    first: dict[str, str] = {}
    for where, row in _rows(Path(path)):
        convert = _CONVERTERS[row_kind(row) if kind == "auto" else kind]
        try:
            instance = convert(row)
        except ValueError as exc:
            raise DataFormatError(f"{where}: {exc}") from None
        if instance.instance_id in first:
            raise DataFormatError(
                f"{where}: duplicate instance_id {instance.instance_id!r} "
                f"(first at {first[instance.instance_id]})"
            )
        first[instance.instance_id] = where
        found.append(instance)
    return found


def save_instances(instances: Iterable[Instance], path: str | os.PathLike[str]) -> None:
    """Write ``instances`` as JSON Lines of SWE-bench rows (``to_swebench``), atomically."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + ".tmp")
    tmp.write_text("".join(json.dumps(i.to_swebench()) + "\n" for i in instances))
    os.replace(tmp, target)


def row_kind(row: dict[str, Any]) -> Literal["swebench", "swesmith", "agentenv"]:
    """Which kind of row ``row`` is (see the module docstring)."""
    if "bug_patch" in row:
        return "agentenv"
    return "swesmith" if "image_name" in row else "swebench"


def swebench_image(instance_id: str, namespace: str = "swebench") -> str:
    """The Docker Hub image SWE-bench's harness derives for an instance (``__`` → ``_1776_``)."""
    key = f"sweb.eval.x86_64.{instance_id}:latest".lower()
    return f"{namespace}/{key}".replace("__", "_1776_")


def eval_test_cmd(eval_script: str) -> str:
    """The lines of a SWE-bench ``eval_script`` between its test-output markers."""
    lines = eval_script.split("\n")
    starts = [i for i, line in enumerate(lines) if START_TEST_OUTPUT in line]
    ends = [i for i, line in enumerate(lines) if END_TEST_OUTPUT in line]
    if not starts or not ends or ends[-1] < starts[0]:
        return ""
    return "\n".join(line for line in lines[starts[0] + 1 : ends[-1]] if line.strip())


def _rows(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    """``(where, row)``: ``where`` is ``PATH:LINE`` (JSON Lines) or ``PATH: row N`` (a list)."""
    with path.open("rb") as f:
        head = f.read(4096).removeprefix(codecs.BOM_UTF8).lstrip()
    if not head.startswith(b"["):
        for lineno, row in iter_jsonl(path):
            yield f"{path}:{lineno}", row
        return
    try:
        rows = json.loads(path.read_bytes().removeprefix(codecs.BOM_UTF8))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataFormatError(f"{path}: not a JSON list ({exc})") from None
    for number, row in enumerate(rows, 1):
        if not isinstance(row, dict):
            raise DataFormatError(f"{path}: row {number}: expected a JSON object")
        yield f"{path}: row {number}", row


def _text(row: dict[str, Any], name: str, default: str | None = None) -> str:
    """Field ``name`` as a string (``default`` when it is missing; required without one)."""
    if name not in row or row[name] is None:
        if default is None:
            raise ValueError(f"missing field {name!r}")
        return default
    value = row[name]
    if name == "version" and isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)  # some dumps write "3.0" as a number
    if not isinstance(value, str):
        raise ValueError(f"field {name!r}: expected a string, got {type(value).__name__}")
    return value


def _tests(row: dict[str, Any], name: str) -> list[str]:
    """Field ``name`` as a list of strings (a JSON string of one is parsed)."""
    if name not in row:
        raise ValueError(f"missing field {name!r}")
    value = row[name]
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as exc:
            raise ValueError(f"field {name!r}: invalid JSON in the string ({exc.msg})") from None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"field {name!r}: expected a list of strings (or a JSON string of one)")
    return value


def _from_swebench(row: dict[str, Any]) -> Instance:
    instance_id = _text(row, "instance_id")
    patch = _text(row, "patch")
    return Instance(
        instance_id=instance_id,
        repo=_text(row, "repo"),
        base_commit=_text(row, "base_commit"),
        patch=patch,
        test_patch=_text(row, "test_patch", ""),
        problem_statement=_text(row, "problem_statement"),
        hints_text=_text(row, "hints_text", ""),
        created_at=_text(row, "created_at", ""),
        version=_text(row, "version", ""),
        FAIL_TO_PASS=_tests(row, "FAIL_TO_PASS"),
        PASS_TO_PASS=_tests(row, "PASS_TO_PASS"),
        environment_setup_commit=_text(row, "environment_setup_commit", ""),
        bug_patch="",
        test_cmd=_text(row, "test_cmd", "") or eval_test_cmd(_text(row, "eval_script", "")),
        test_dir="",
        package="",
        sdist_sha256="",
        mutated_files=touched_files(patch),
        functions=[],
        families=[],
        image=_text(row, "image", "") or swebench_image(instance_id),
    )


def _from_swesmith(row: dict[str, Any]) -> Instance:
    instance_id = _text(row, "instance_id")
    bug = _text(row, "patch")
    tail = instance_id.rsplit(".", 1)[-1]
    strategy = tail.rsplit("__", 1)[0] if "__" in tail else ""
    return Instance(
        instance_id=instance_id,
        repo=_text(row, "repo"),
        base_commit=_text(row, "base_commit", ""),
        patch="",
        test_patch="",
        problem_statement=_text(row, "problem_statement", ""),
        hints_text="",
        created_at=_text(row, "created_at", ""),
        version="",
        FAIL_TO_PASS=_tests(row, "FAIL_TO_PASS"),
        PASS_TO_PASS=_tests(row, "PASS_TO_PASS"),
        environment_setup_commit="",
        bug_patch=bug,
        test_cmd=_text(row, "test_cmd", "") or SWESMITH_TEST_CMD,
        test_dir="",
        package="",
        sdist_sha256="",
        mutated_files=touched_files(bug),
        functions=[],
        families=[strategy] if strategy else [],
        image=_text(row, "image_name"),
    )


def _from_agentenv(row: dict[str, Any]) -> Instance:
    unknown = sorted(set(row) - set(_FIELDS))
    if unknown:
        raise ValueError(f"unknown field {unknown[0]!r} (an Instance has {', '.join(_FIELDS)})")
    for name in _REQUIRED:
        if name not in row:
            raise ValueError(f"missing field {name!r}")
    values = {
        name: _tests(row, name) if _FIELDS[name].type == "list[str]" else _text(row, name)
        for name in row
    }
    return Instance(**values)


_CONVERTERS: dict[str, Callable[[dict[str, Any]], Instance]] = {
    "swebench": _from_swebench,
    "swesmith": _from_swesmith,
    "agentenv": _from_agentenv,
}


# Task sets of an env


@dataclasses.dataclass(frozen=True)
class SWETasks:
    """Where an SWE env's instances come from.

    - ``packages`` (``("h11",)``), ``per_package`` (12), ``seed`` (0), ``families`` (``None``:
      all), ``bugs`` (1): validated bugs the factory builds from each package (cached);
    - ``instances`` (``None``): a JSONL file of instances instead (SWE-bench, SWE-smith or
      agentenv rows; :func:`~agentenv.envs.swe.tasks.load_instances`);
    - ``test_fraction`` (0.25): the share of instances in the ``test`` split, by a hash of the
      instance id (so an instance keeps its split however many others are built).
    """

    packages: tuple[str, ...] = ("h11",)
    per_package: int = 12
    seed: int = 0
    families: tuple[str, ...] | None = None
    bugs: int = 1
    instances: str | None = None
    test_fraction: float = 0.25

    def __post_init__(self) -> None:
        if self.per_package < 1 or self.bugs < 1:
            raise ValueError(f"per_package and bugs must be >= 1: {self}")
        if not 0.0 <= self.test_fraction <= 1.0:
            raise ValueError(f"test_fraction must be in [0, 1], got {self.test_fraction}")
        if not self.packages and self.instances is None:
            raise ValueError("an SWE task set needs packages or an instances file")


@dataclasses.dataclass(frozen=True)
class InstanceSet:
    """The instances of one :class:`SWETasks`, by id and by split (``train``, ``test``, ``all``)."""

    instances: tuple[Instance, ...]
    by_id: dict[str, Instance]
    splits: dict[str, list[str]]


def in_test(instance_id: str, test_fraction: float) -> bool:
    """Whether ``instance_id`` is in the test split: its sha256 read as a fraction of 2**64."""
    value = int.from_bytes(hashlib.sha256(instance_id.encode()).digest()[:8], "big")
    return value < test_fraction * 2**64


_SETS: dict[SWETasks, InstanceSet] = {}
_LOCK = threading.Lock()
_BUILDER = ThreadPoolExecutor(max_workers=1, thread_name_prefix="agentenv-swe-tasks")


async def _build(tasks: SWETasks) -> list[Instance]:
    found: list[Instance] = []
    for name in tasks.packages:
        found += await abuild_instances(
            name, tasks.per_package, tasks.seed, tasks.families, bugs=tasks.bugs
        )
    return found


def _collect(tasks: SWETasks) -> list[Instance]:
    if tasks.instances is not None:
        return load_instances(tasks.instances)
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(_build(tasks))
    # inside an event loop (an async eval): build on a thread of its own, with its own loop
    return _BUILDER.submit(asyncio.run, _build(tasks)).result()


def instance_set(tasks: SWETasks) -> InstanceSet:
    """The instances of ``tasks``, built (or loaded) once per process and cached on disk."""
    with _LOCK:
        if tasks not in _SETS:
            instances = tuple(sorted(_collect(tasks), key=lambda i: i.instance_id))
            by_id = {i.instance_id: i for i in instances}
            test = [i for i in by_id if in_test(i, tasks.test_fraction)]
            train = [i for i in by_id if not in_test(i, tasks.test_fraction)]
            _SETS[tasks] = InstanceSet(
                instances, by_id, {"train": train, "test": test, "all": list(by_id)}
            )
        return _SETS[tasks]
