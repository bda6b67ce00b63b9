"""``agentenv quickstart``: SFT → RL with information-gain credit on search-v0, before vs after.

Runs ``agentenv/train/quickstart.yaml`` (package data; ``configs/quickstart.yaml`` in a source
checkout is a link to it): builds the tiny model, fine-tunes it
on expert search trajectories, evaluates it on held-out tasks (the "before" number), trains it
with IGPO, evaluates the same held-out tasks again (the "after" number), and writes
``summary.json`` and a report with learning curves to the run folder.
"""

from __future__ import annotations

import asyncio
import json
import time
from importlib import resources
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from agentenv.evaluate import evaluate
from agentenv.policies.specs import load_policy
from agentenv.train.config import TrainConfig, load_config
from agentenv.train.episodes import eval_suite
from agentenv.train.loop import train
from agentenv.train.metrics import read_metrics
from agentenv.train.report import write_report


def quickstart_config_path() -> Path:
    """The recipe, shipped as package data (``configs/quickstart.yaml`` links to it)."""
    return Path(str(resources.files("agentenv.train") / "quickstart.yaml"))


def quickstart(
    out_dir: str | Path | None = None, overrides: list[str] | None = None
) -> dict[str, Any]:
    """Run the quickstart; return (and write to ``RUN/summary.json``) the before/after numbers."""
    t0 = time.perf_counter()
    extra = list(overrides or [])
    if out_dir is not None:
        extra.append(f"output_dir={out_dir}")
    config = load_config(quickstart_config_path(), extra)
    run_dir = train(config)
    evals = read_metrics(run_dir, "eval")
    before, after = evals[0], evals[-1]
    baselines = asyncio.run(baseline_success(config))
    summary = {
        "run_dir": str(run_dir),
        "success_before": before["success"],
        "success_after": after["success"],
        "reward_before": before["reward"],
        "reward_after": after["reward"],
        "success_expert": baselines["expert"],
        "success_random": baselines["random"],
        "eval_episodes": after["episodes"],
        "rl_steps": config.total_steps,
        "wall_seconds": time.perf_counter() - t0,
    }
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    report = write_report(run_dir)
    console = Console()
    console.print(summary_table(summary, config.total_steps))
    console.print(f"report: {report}")
    console.print(
        f"Held-out success on {summary['eval_episodes']} episodes went from "
        f"{summary['success_before']:.1%} after SFT to {summary['success_after']:.1%} after "
        f"{config.total_steps} RL steps, in {summary['wall_seconds'] / 60:.1f} minutes "
        f"(run folder: {run_dir}).",
        highlight=False,
    )
    return summary


async def baseline_success(config: TrainConfig) -> dict[str, float]:
    """Held-out success of the scripted expert and the random baseline on the same tasks as the
    trainer's evaluation (same envs, split, seeds and number of tasks)."""
    suite = eval_suite(config)
    out = {}
    for spec in ("expert", "random"):
        policy = load_policy(spec)
        seed_offset = config.envs[0].test_seed_start
        result = await evaluate(policy, suite, progress=False, seed_offset=seed_offset)
        ok = [row for row in result.rows if row["status"] != "error"]
        out[spec] = sum(row["success"] for row in ok) / max(1, len(ok))
    return out


def summary_table(summary: dict[str, Any], rl_steps: int) -> Table:
    """Held-out success and reward of each policy the quickstart measured."""
    table = Table(title=f"held-out success on {summary['eval_episodes']} episodes")
    table.add_column("policy")
    table.add_column("success", justify="right")
    table.add_column("reward", justify="right")
    rows = [
        ("random baseline", summary["success_random"], None),
        ("tiny model after SFT", summary["success_before"], summary["reward_before"]),
        (f"after {rl_steps} RL steps", summary["success_after"], summary["reward_after"]),
        ("scripted expert", summary["success_expert"], None),
    ]
    for name, success, reward in rows:
        table.add_row(name, f"{success:.1%}", "–" if reward is None else f"{reward:+.3f}")
    return table
