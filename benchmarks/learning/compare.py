"""Credit-assignment comparison: grpo, rloo, igpo, gigpo and grpo+G-RA at equal rollout budget.

Every method trains the same SFT checkpoint on the same tasks with the same number of rollouts
(steps × tasks per step × group size), over several seeds; held-out success is measured every
``--eval-every`` steps. Writes ``results.json``, ``table.md`` and ``curves.png`` to ``--out`` and
prints the table (final held-out success mean ± std, steps to reach ``--threshold``).

    python benchmarks/learning/compare.py --out runs/compare            # small CPU setting
    python benchmarks/learning/compare.py --steps 2 --seeds 1 --eval-tasks 8 --sft-episodes 32
    python benchmarks/learning/compare.py --init-from RUN/sft/model --jobs 8   # many cores

``--init-from`` starts every run from a given warm-started model instead of running the config's
pretraining and SFT first; ``--jobs`` runs that many trainings at once, in separate processes
that share the machine's cores.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import transformers

from agentenv.train import sft, train
from agentenv.train.config import load_config
from agentenv.train.metrics import read_metrics

METHODS: dict[str, list[str]] = {
    "grpo": ["algorithm.estimator=grpo"],
    "rloo": ["algorithm.estimator=rloo"],
    "igpo": [
        "algorithm.estimator=igpo",
        "algorithm.info_gain.enabled=true",
        "algorithm.info_gain.options={bridge: '<answer> ', suffix: ' </answer>'}",
    ],
    "gigpo": ["algorithm.estimator=gigpo"],
    # G-RA: per-turn format validity is a step reward that counts only when the answer is right.
    "grpo+G-RA": [
        "algorithm.estimator=grpo",
        "algorithm.process_rewards={format: 0.1}",
        "algorithm.gating.enabled=true",
        "algorithm.gating.threshold=1.0",
        "algorithm.gating.step_components=[format]",
    ],
}


def base_overrides(args: argparse.Namespace, out: Path) -> list[str]:
    return [
        f"output_dir={out}",
        f"total_steps={args.steps}",
        f"eval.every={args.eval_every}",
        f"eval.tasks={args.eval_tasks}",
        f"rollout.group_size={args.group_size}",
        f"rollout.tasks_per_step={args.tasks_per_step}",
        f"checkpoint.every={args.steps}",
        "pretrain.enabled=false",
        "sft.enabled=false",
        "logging.live=false",
    ]


def run_one(config: str, overrides: list[str], threads: int) -> dict:
    """One training run in this process with ``threads`` torch threads; its eval rows."""
    import torch

    torch.set_num_threads(threads)
    transformers.utils.logging.disable_progress_bar()
    run_dir = train(load_config(config, overrides))
    return {"run_dir": str(run_dir), "eval": read_metrics(run_dir, "eval")}


def steps_to(rows: list[dict], threshold: float) -> int | None:
    return next((r["step"] for r in rows if r["success"] >= threshold), None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="configs/quickstart.yaml")
    parser.add_argument("--out", default="runs/compare")
    parser.add_argument("--methods", nargs="*", default=list(METHODS))
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--eval-every", type=int, default=5)
    parser.add_argument("--eval-tasks", type=int, default=100)
    parser.add_argument("--group-size", type=int, default=8)
    parser.add_argument("--tasks-per-step", type=int, default=8)
    parser.add_argument("--sft-episodes", type=int, default=None)
    parser.add_argument("--init-from", default=None, help="warm-started model to train from")
    parser.add_argument("--jobs", type=int, default=1, help="trainings run at once")
    parser.add_argument(
        "--threshold",
        type=float,
        default=None,
        help="success level for steps-to-threshold (default: start + 0.05)",
    )
    args = parser.parse_args()
    transformers.utils.logging.disable_progress_bar()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    t0 = time.perf_counter()
    start_model = args.init_from
    if start_model is None:
        sft_overrides = [f"output_dir={out}", "name=sft", "logging.live=false"]
        if args.sft_episodes:
            sft_overrides.append(f"sft.episodes={args.sft_episodes}")
        start_model = str(sft(args.config, sft_overrides))
    plan = [
        (method, seed, [
            *base_overrides(args, out),
            f"seed={seed}",
            f"name={method.replace('+', '_')}-s{seed}",
            f"model.init_from={start_model}",
            "algorithm.options={}",
            *METHODS[method],
        ])
        for method in args.methods
        for seed in range(args.seeds)
    ]  # fmt: skip
    threads = max(1, (os.cpu_count() or 1) // args.jobs)
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(args.jobs, mp_context=context) as pool:
        futures = [pool.submit(run_one, args.config, o, threads) for _, _, o in plan]
        results: dict[str, list[dict]] = {}
        for (method, seed, _), future in zip(plan, futures, strict=True):
            results.setdefault(method, []).append({"seed": seed, **future.result()})

    start = float(np.mean([r["eval"][0]["success"] for runs in results.values() for r in runs]))
    threshold = args.threshold if args.threshold is not None else start + 0.05
    lines = [
        f"rollout budget per run: {args.steps * args.tasks_per_step * args.group_size} episodes; "
        f"{args.seeds} seeds; held-out tasks: {args.eval_tasks}; start success {start:.3f}",
        "",
        f"| method | final success (mean ± std) | steps to {threshold:.2f} (mean; runs reaching) |",
        "|---|---|---|",
    ]
    table = {}
    for method, runs in results.items():
        finals = np.array([r["eval"][-1]["success"] for r in runs])
        reach = [s for s in (steps_to(r["eval"], threshold) for r in runs) if s is not None]
        table[method] = {
            "final_mean": float(finals.mean()),
            "final_std": float(finals.std()),
            "steps_to_threshold": float(np.mean(reach)) if reach else None,
            "runs_reaching": len(reach),
        }
        reached = (
            f"{np.mean(reach):.1f} ({len(reach)}/{len(runs)})" if reach else f"– (0/{len(runs)})"
        )
        lines.append(f"| {method} | {finals.mean():.3f} ± {finals.std():.3f} | {reached} |")
    text = "\n".join(lines)
    print(text)
    (out / "table.md").write_text(text + "\n")
    (out / "results.json").write_text(
        json.dumps(
            {
                "args": vars(args),
                "threshold": threshold,
                "table": table,
                "runs": results,
                "wall_seconds": time.perf_counter() - t0,
            },
            indent=2,
        )
    )
    plot(results, out / "curves.png")


def plot(results: dict[str, list[dict]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for method, runs in results.items():
        steps = [row["step"] for row in runs[0]["eval"]]
        values = np.array([[row["success"] for row in r["eval"]] for r in runs])
        mean, std = values.mean(0), values.std(0)
        ax.plot(steps, mean, marker="o", label=method)
        ax.fill_between(steps, mean - std, mean + std, alpha=0.15)
    ax.set_xlabel("RL step")
    ax.set_ylabel("held-out success")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
