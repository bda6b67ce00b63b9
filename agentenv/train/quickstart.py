"""``agentenv quickstart``: SFT → RL with information-gain credit on search-v0, before vs after.

Runs ``agentenv/train/quickstart.yaml`` (package data; ``configs/quickstart.yaml`` in a source
checkout is a link to it): builds the tiny model, fine-tunes it
on expert search trajectories, evaluates it on held-out tasks (the "before" number), trains it
with IGPO, evaluates the same held-out tasks again (the "after" number), and writes
``summary.json`` and a report with learning curves to the run folder.
"""

from __future__ import annotations

import asyncio
import time
from importlib import resources
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from agentenv.evaluate import evaluate, success_count
from agentenv.policies.specs import load_policy
from agentenv.train.config import TrainConfig, load_config
from agentenv.train.episodes import eval_suite
from agentenv.train.loop import train
from agentenv.train.report import write_report
from agentenv.train.summary import read_summary, summary_line, write_summary


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
    baselines = asyncio.run(baseline_success(config))
    summary = {
        **read_summary(run_dir),
        "success_expert": baselines["expert"],
        "success_random": baselines["random"],
        "wall_seconds": time.perf_counter() - t0,
    }
    write_summary(run_dir, summary)
    report = write_report(run_dir)
    console = Console()
    console.print(summary_table(summary, config.total_steps))
    console.print(f"report: {report}")
    console.print(summary_line(summary), highlight=False)
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
        out[spec] = success_count(result.rows).rate
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
