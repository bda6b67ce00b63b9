"""Loading runs for the viewer: an evaluation folder (or its ``results.jsonl``), a training run
folder, or one file of saved trajectories.

A run is indexed once: every line of its episode files is read up to its first bulky key (the
writers put the transcript and the per-token arrays last: :func:`agentenv.evaluate.result_row`,
:data:`agentenv.trajectory.BULKY_FIELDS`), which gives the episode's summary and per-turn
rewards without decoding transcripts; a line that cannot be cut there is parsed whole. The full
record of an episode is read from its byte offset when it is opened (:meth:`Run.record`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from agentenv.evaluate import failure_reason
from agentenv.jsonl import DataFormatError, iter_lines, parse_line, read_line
from agentenv.runfiles import (
    CONFIG,
    METADATA,
    METRICS,
    RESULTS,
    ROLLOUTS,
    eval_trajectory_files,
    read_metrics,
)

Split = Literal["eval", "train", "held-out"]
"""Where an episode comes from: an evaluation row, a training step's rollout, or a training
run's held-out evaluation."""

_CUT_AT = {"eval": b', "transcript": ', "train": b', "token_ids": ', "held-out": b', "token_ids": '}
"""Per split: the first bulky key of its lines (an eval row's transcript, a trajectory's token
arrays and chat)."""
_ROW_KEYS = ("env", "seed", "sample", "task_id", "reward", "success", "turns", "status")
_TRAJECTORY_KEYS = ("traj_id", "group_id", "env_id", "task_id", "turns", "status", "success")


@dataclass(frozen=True)
class Source:
    """One file of episodes: ``split`` says what its lines are; ``step`` is the training step of
    a held-out evaluation file."""

    path: Path
    split: Split
    step: int | None = None


@dataclass
class Episode:
    """One indexed episode: where its line is, its summary (what the episode list shows), its
    turns (reward, components, validity, anchor, entropy), the credit saved by training (if any) and the
    key of its group (the episodes GRPO/GiGPO compare: same task, same step)."""

    id: int
    source: Source
    lineno: int
    offset: int
    summary: dict[str, Any]
    turns: list[dict[str, Any]]
    group: str
    credit: dict[str, Any] | None = None

    @property
    def where(self) -> str:
        return f"{self.source.path}:{self.lineno}"


@dataclass
class Run:
    """An opened run: its episodes (indexed), training metrics, and the estimator it trained
    with (None for an evaluation)."""

    path: Path
    kind: Literal["eval", "train"]
    name: str
    episodes: list[Episode]
    estimator: str | None = None
    estimator_options: dict[str, Any] = field(default_factory=dict)
    metrics: list[dict[str, Any]] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)
    groups: dict[str, list[int]] = field(default_factory=dict)

    def record(self, episode_id: int) -> dict[str, Any]:
        """The full line of an episode (with its transcript), read from the file now."""
        ep = self.episodes[episode_id]
        return read_line(ep.source.path, ep.offset, ep.where)

    def group_members(self, episode_id: int) -> list[Episode]:
        """The episodes of ``episode_id``'s group, in file order."""
        return [self.episodes[i] for i in self.groups[self.episodes[episode_id].group]]


def open_run(path: str | Path) -> Run:
    """The run at ``path``: an evaluation folder (``results.jsonl``), a training run folder
    (``metrics.jsonl`` or ``config.yaml``: its ``rollouts.jsonl`` and held-out evaluation
    files), or a single JSONL file of eval rows or trajectories.

    A missing path or a folder that is not a run raises ``FileNotFoundError``; a line that is not
    an eval row or a trajectory raises :class:`~agentenv.jsonl.DataFormatError` naming the file
    and line.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file or folder")
    if path.is_file():
        return _open_file(path)
    if (path / RESULTS).is_file():
        return _open_eval(path, path / RESULTS)
    if (path / METRICS).is_file() or (path / CONFIG).is_file():
        return _open_training(path)
    raise FileNotFoundError(
        f"{path}: not a run folder (no {RESULTS} of `agentenv eval --out`, "
        f"no {METRICS} of `agentenv train`)"
    )


def _open_eval(folder: Path, results: Path) -> Run:
    meta_path = folder / METADATA
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    info = {k: meta[k] for k in ("policy", "k", "transcripts") if k in meta}
    return _finish(Run(folder, "eval", folder.name, _index([Source(results, "eval")]), info=info))


def _open_training(folder: Path) -> Run:
    sources = [Source(folder / ROLLOUTS, "train")] if (folder / ROLLOUTS).is_file() else []
    sources += [Source(p, "held-out", step) for step, p in eval_trajectory_files(folder)]
    return _training_run(folder, folder, sources, read_metrics(folder))


def _open_file(path: Path) -> Run:
    if "traj_id" not in _first_row(path):
        return _open_eval(path.parent, path)
    steps = {p.name: step for step, p in eval_trajectory_files(path.parent)}
    source = Source(path, "held-out", steps[path.name]) if path.name in steps else None
    return _training_run(path, path.parent, [source or Source(path, "train")], [])


def _first_row(path: Path) -> dict[str, Any]:
    for lineno, _, raw in iter_lines(path):
        row = parse_line(raw, f"{path}:{lineno}")
        if row is not None:
            return row
    raise DataFormatError(f"{path}: no episodes in the file")


def _training_run(
    path: Path, folder: Path, sources: list[Source], metrics: list[dict[str, Any]]
) -> Run:
    """A training run (or one of its files) with the estimator of ``folder``'s config."""
    config = _read_config(folder / CONFIG)
    algorithm = config.get("algorithm") or {}
    rollout = config.get("rollout") or {}
    info = {
        "envs": [e.get("id") for e in config.get("envs") or []],
        "group_size": rollout.get("group_size"),
        "tasks_per_step": rollout.get("tasks_per_step"),
    }
    run = Run(
        path,
        "train",
        path.name,
        _index(sources),
        estimator=algorithm.get("estimator", "grpo"),
        estimator_options=dict(algorithm.get("options") or {}),
        metrics=metrics,
        info=info,
    )
    return _finish(run)


def _read_config(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise DataFormatError(f"{path}: expected a mapping of config sections")
    return data


def _finish(run: Run) -> Run:
    for ep in run.episodes:
        run.groups.setdefault(ep.group, []).append(ep.id)
    for ep in run.episodes:
        ep.summary["group_size"] = len(run.groups[ep.group])
    return run


# ---------------------------------------------------------------------------------------------
# Indexing
# ---------------------------------------------------------------------------------------------
def _index(sources: list[Source]) -> list[Episode]:
    episodes: list[Episode] = []
    for source in sources:
        cut_at = _CUT_AT[source.split]
        for lineno, offset, raw in iter_lines(source.path):
            row = _head(raw, cut_at, f"{source.path}:{lineno}")
            if row is None:
                continue
            episodes.append(_episode(len(episodes), source, lineno, offset, row))
    return episodes


def _head(raw: bytes, cut_at: bytes, where: str) -> dict[str, Any] | None:
    """The line's fields before the bulky key ``cut_at`` (the whole line when it cannot be cut
    there); None for a blank line or a torn last line (an append cut short)."""
    cut = raw.find(cut_at)
    if cut > 0 and raw.rstrip().endswith(b"}"):  # a whole object, not a line cut short
        try:
            return json.loads(raw[:cut] + b"}")
        except ValueError:
            pass  # the key was inside a nested value: parse the whole line below
    if not raw.endswith(b"\n"):
        try:
            return parse_line(raw, where)
        except DataFormatError:
            return None
    return parse_line(raw, where)


def _episode(i: int, source: Source, lineno: int, offset: int, row: dict[str, Any]) -> Episode:
    where = f"{source.path}:{lineno}"
    if source.split == "eval":
        _require(row, _ROW_KEYS, where, "an eval row")
        return _row_episode(i, source, lineno, offset, row)
    _require(row, _TRAJECTORY_KEYS, where, "a trajectory")
    return _trajectory_episode(i, source, lineno, offset, row)


def _require(row: dict[str, Any], keys: tuple[str, ...], where: str, what: str) -> None:
    missing = [k for k in keys if k not in row]
    if missing:
        raise DataFormatError(f"{where}: not {what} (no {', '.join(missing)})")


def _row_episode(i: int, source: Source, lineno: int, offset: int, row: dict[str, Any]) -> Episode:
    group = row.get("group_id") or f"{row['env']}:{row['task_id']}"
    summary = {
        "id": i,
        "split": source.split,
        "step": None,
        "env": row["env"],
        "task": str(row["task_id"]),
        "sample": row["sample"],
        "success": bool(row["success"]),
        "reward": float(row["reward"]),
        "components": row.get("components") or {},
        "turns": int(row["turns"]),
        "tokens": int(row.get("tokens", 0)),
        "status": row["status"],
        "reason": row.get("reason", ""),
        "failure": failure_reason(row) or "",
    }
    turns = row.get("per_turn") or []
    return Episode(i, source, lineno, offset, summary, turns, group)


def _trajectory_episode(
    i: int, source: Source, lineno: int, offset: int, row: dict[str, Any]
) -> Episode:
    metadata = row.get("metadata") or {}
    step = source.step if source.split == "held-out" else metadata.get("step")
    turns = [
        {
            "reward": t.get("reward", 0.0),
            "components": t.get("reward_components", {}),
            "valid": t.get("action_valid", True),
            "anchor": t.get("anchor"),
            "entropy": t.get("entropy"),
        }
        for t in row["turns"]
    ]
    invalid = sum(not t["valid"] for t in turns)
    components: dict[str, float] = {}
    for t in turns:
        for name, value in t["components"].items():
            components[name] = components.get(name, 0.0) + float(value)
    status_row = {**row, "turns": len(turns), "invalid_actions": invalid}
    summary = {
        "id": i,
        "split": source.split,
        "step": step,
        "env": row["env_id"],
        "task": str(row["task_id"]),
        "sample": row["traj_id"],
        "success": bool(row["success"]),
        "reward": float(sum(t["reward"] for t in turns)),
        "components": components,
        "turns": len(turns),
        "tokens": int(sum(t.get("action_tokens", 0) for t in row["turns"])),
        "status": row["status"],
        "reason": row.get("reason", ""),
        "failure": failure_reason(status_row) or "",
    }
    group = f"{source.split} step {step}: {row['group_id']}"
    return Episode(i, source, lineno, offset, summary, turns, group, metadata.get("credit"))
