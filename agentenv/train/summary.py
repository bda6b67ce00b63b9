"""``RUN/summary.json``: what a training run achieved, on the same held-out tasks before and
after RL, written by ``agentenv train`` and the quickstart alike, and the line that says it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from agentenv.runfiles import SUMMARY, read_metrics
from agentenv.train.config import TrainConfig


def run_summary(run_dir: Path, config: TrainConfig, wall_seconds: float) -> dict[str, Any]:
    """Held-out success and reward of the first evaluation (the model RL starts from, when
    ``eval.at_start``) and the last one, on the same tasks, with the run's size and wall time.
    Values the run did not measure (no evaluation configured) are None."""
    evals = read_metrics(run_dir, "eval")
    before = evals[0] if evals and evals[0]["step"] == 0 else None
    after = evals[-1] if evals and evals[-1]["step"] > 0 else None
    train_rows = read_metrics(run_dir, "train")
    return {
        "run_dir": str(run_dir),
        "success_before": before["success"] if before else None,
        "success_after": after["success"] if after else None,
        "reward_before": before["reward"] if before else None,
        "reward_after": after["reward"] if after else None,
        "eval_episodes": (after or before or {}).get("episodes"),
        "rl_steps": config.total_steps,
        "train_episodes": sum(int(row.get("episodes", 0)) for row in train_rows),
        "estimator": config.algorithm.estimator,
        "wall_seconds": wall_seconds,
    }


def write_summary(run_dir: Path, summary: dict[str, Any]) -> Path:
    path = run_dir / SUMMARY
    path.write_text(json.dumps(summary, indent=2))
    return path


def read_summary(run_dir: str | Path) -> dict[str, Any] | None:
    path = Path(run_dir) / SUMMARY
    return json.loads(path.read_text()) if path.is_file() else None


def _percent(value: float | None) -> str:
    return "not measured" if value is None else f"{value:.1%}"


def summary_line(summary: dict[str, Any]) -> str:
    """One sentence: held-out success before → after RL, episodes, steps, minutes, folder."""
    episodes = summary.get("eval_episodes")
    on = f" on {episodes} episodes" if episodes else ""
    return (
        f"Held-out success{on} went from {_percent(summary['success_before'])} before RL to "
        f"{_percent(summary['success_after'])} after {summary['rl_steps']} RL steps, in "
        f"{summary['wall_seconds'] / 60:.1f} minutes (run folder: {summary['run_dir']})."
    )
