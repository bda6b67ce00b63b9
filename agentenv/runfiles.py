"""The files of run folders, named once: what ``agentenv eval --out DIR`` and ``agentenv train``
write, and the readers shared by the trainer, reports and the viewer (no torch here).

Evaluation folder: :data:`RESULTS` (one row per episode), :data:`METADATA`, ``summary.png``.
Training run folder: :data:`CONFIG` (the resolved config), :data:`METRICS` (one row per step and
per evaluation), :data:`ROLLOUTS` (each step's trajectories), one
:func:`eval_trajectories_name` file per held-out evaluation and :data:`SUMMARY` (held-out success
before and after RL).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from agentenv.jsonl import iter_jsonl

RESULTS = "results.jsonl"
METADATA = "metadata.json"
CONFIG = "config.yaml"
METRICS = "metrics.jsonl"
ROLLOUTS = "rollouts.jsonl"
SUMMARY = "summary.json"

_EVAL_TRAJECTORIES = re.compile(r"eval-step-(\d+)\.jsonl")


def eval_trajectories_name(step: int) -> str:
    """The file of the held-out trajectories of the evaluation after ``step`` RL steps."""
    return f"eval-step-{step:06d}.jsonl"


def eval_trajectory_files(run_dir: str | Path) -> list[tuple[int, Path]]:
    """``(step, path)`` of every held-out evaluation file of a training run, by step."""
    found = []
    for path in Path(run_dir).iterdir():
        match = _EVAL_TRAJECTORIES.fullmatch(path.name)
        if match and path.is_file():
            found.append((int(match.group(1)), path))
    return sorted(found)


def read_metrics(run_dir: str | Path, kind: str | None = None) -> list[dict[str, Any]]:
    """Rows of ``RUN/metrics.jsonl`` (of one ``kind`` if given); a bad line names its number."""
    path = Path(run_dir) / METRICS
    if not path.is_file():
        return []
    rows = [row for _, row in iter_jsonl(path)]
    return [row for row in rows if kind is None or row.get("kind") == kind]
