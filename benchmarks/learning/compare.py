"""Credit-assignment comparison: grpo, rloo, igpo, gigpo, grpo+G-RA, empg and ppo at equal budget.

Every method trains the same start checkpoint on the same tasks with the same number of rollouts
(steps × tasks per step × group size), over several seeds. The seed is the config's ``seed``: it
sets the rollouts' sampling seeds and the torch seed, so seed ``s`` of two methods starts from the
same first batch of rollouts and the methods can be compared seed by seed. The start checkpoint is
evaluated once on the held-out tasks (greedy, so every run would measure the same number); each
run is evaluated every ``--eval-every`` steps and at its end. Prints a table, and writes
``results.json``, ``table.md`` and ``curves.png`` to ``--out`` (and to ``--save-as`` PREFIX.json,
.md, .png). Per method: final held-out success (mean ± std over seeds), the gain over the start
checkpoint, the difference to grpo paired by seed (mean ± std of the per-seed differences), and
the held-out episodes solved at the end but not by the start checkpoint and the reverse (won /
lost: whether a flat mean hides churn), and the steps to reach ``--threshold``. Stds are sample stds (ddof 1) over seeds.

    python benchmarks/learning/compare.py --out runs/compare            # small CPU setting
    python benchmarks/learning/compare.py --steps 2 --seeds 1 --eval-tasks 8 --sft-episodes 32
    python benchmarks/learning/compare.py --init-from RUN/sft/model --jobs 8   # many cores
    python benchmarks/learning/compare.py --init-from RUN/sft/model --methods grpo,gigpo \\
        --steps 15 --tasks-per-step 16 --eval-tasks 200 --save-as benchmarks/results/learning/x

``--config`` is any training config (default: the quickstart's); ``--init-from`` starts every run
from a given warm-started model instead of running the config's pretraining and SFT first;
``--jobs`` runs that many trainings at once, in separate processes that share the machine's cores.
Each finished run is recorded in ``OUT/runs/NAME.json``; a later invocation with the same
settings reuses it instead of training again, so an interrupted grid resumes where it stopped.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import shutil
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import transformers

from agentenv.jsonl import iter_jsonl
from agentenv.runfiles import eval_trajectories_name
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
    # EMPG rescales each turn's advantage by the rollout's per-turn entropy.
    "empg": ["algorithm.estimator=empg"],
    # PPO: turn-level GAE over the values of a value head trained with the policy.
    "ppo": ["algorithm.estimator=ppo", "value.enabled=true"],
    # A learned process reward: SPA's progress head, fitted each step on the run's own episodes.
    "grpo+SPA": ["algorithm.estimator=grpo", "algorithm.spa.enabled=true"],
}
BASELINE = "grpo"


def base_overrides(args: argparse.Namespace, out: Path) -> list[str]:
    return [
        f"output_dir={out}",
        f"total_steps={args.steps}",
        f"eval.every={args.eval_every}",
        f"eval.tasks={args.eval_tasks}",
        "eval.at_start=false",
        f"rollout.group_size={args.group_size}",
        f"rollout.tasks_per_step={args.tasks_per_step}",
        f"checkpoint.every={args.steps}",
        "pretrain.enabled=false",
        "sft.enabled=false",
        "logging.live=false",
    ]


def run_one(config: str, overrides: list[str], threads: int, record: Path) -> dict:
    """One training run in this process with ``threads`` torch threads; its eval rows, also
    written to ``record``."""
    import torch

    torch.set_num_threads(threads)
    transformers.utils.logging.disable_progress_bar()
    t0 = time.perf_counter()
    run_dir = train(load_config(config, overrides))
    result = {
        "run_dir": str(run_dir),
        "overrides": overrides,
        "wall_seconds": time.perf_counter() - t0,
        "eval": read_metrics(run_dir, "eval"),
    }
    record.parent.mkdir(parents=True, exist_ok=True)
    record.write_text(json.dumps(result, indent=2))
    return result


def recorded(record: Path, overrides: list[str]) -> dict | None:
    """The result in ``record`` if it was produced with exactly ``overrides``."""
    if not record.is_file():
        return None
    result = json.loads(record.read_text())
    return result if result.get("overrides") == overrides else None


def held_out_successes(run_dir: str | Path, step: int) -> dict[str, bool]:
    """Success of each held-out episode (by trajectory id) of the evaluation after ``step``."""
    path = Path(run_dir) / eval_trajectories_name(step)
    return {row["traj_id"]: bool(row["success"]) for _, row in iter_jsonl(path)}


def flips(start: dict[str, bool], end: dict[str, bool]) -> tuple[int, int]:
    """Held-out episodes solved at the end but not at the start (won), and the reverse (lost)."""
    won = sum(end[k] and not start[k] for k in start)
    lost = sum(start[k] and not end[k] for k in start)
    return won, lost


def steps_to(rows: list[dict], threshold: float) -> int | None:
    return next((r["step"] for r in rows if r["success"] >= threshold), None)


def mean_std(values: list[float] | np.ndarray) -> tuple[float, float]:
    """Mean and sample std (ddof 1; 0 for a single value)."""
    array = np.asarray(values, dtype=float)
    std = float(array.std(ddof=1)) if array.size > 1 else 0.0
    return float(array.mean()), std


def parse_methods(values: list[str]) -> list[str]:
    """Method names given space- or comma-separated, each checked against :data:`METHODS`."""
    names = [name for value in values for name in value.split(",") if name]
    unknown = [name for name in names if name not in METHODS]
    if unknown:
        raise SystemExit(f"unknown method(s) {unknown}; known: {', '.join(METHODS)}")
    return names


def summarize(
    results: dict[str, list[dict]], start: float, threshold: float, start_episodes: dict[str, bool]
) -> dict[str, dict]:
    """Per method: final success, gain over ``start``, difference to grpo paired by seed, and the
    held-out episodes won and lost against the start checkpoint (per seed)."""
    baseline = {r["seed"]: r["eval"][-1]["success"] for r in results.get(BASELINE, [])}
    table = {}
    for method, runs in results.items():
        finals = [r["eval"][-1]["success"] for r in runs]
        reach = [s for s in (steps_to(r["eval"], threshold) for r in runs) if s is not None]
        paired = [
            r["eval"][-1]["success"] - baseline[r["seed"]] for r in runs if r["seed"] in baseline
        ]
        won_lost = [
            flips(start_episodes, held_out_successes(r["run_dir"], r["eval"][-1]["step"]))
            for r in runs
        ]
        final_mean, final_std = mean_std(finals)
        gain_mean, gain_std = mean_std([f - start for f in finals])
        row = {
            "seeds": [r["seed"] for r in runs],
            "finals": finals,
            "final_mean": final_mean,
            "final_std": final_std,
            "gain_mean": gain_mean,
            "gain_std": gain_std,
            "steps_to_threshold": float(np.mean(reach)) if reach else None,
            "runs_reaching": len(reach),
            "won": [w for w, _ in won_lost],
            "lost": [lost for _, lost in won_lost],
        }
        if method != BASELINE and paired:
            row["vs_grpo_mean"], row["vs_grpo_std"] = mean_std(paired)
        table[method] = row
    return table


def pm(mean: float, std: float) -> str:
    return f"{100 * mean:+.1f} ± {100 * std:.1f}"


def table_text(
    args: argparse.Namespace, table: dict[str, dict], start: float, threshold: float
) -> str:
    n = args.eval_tasks
    lines = [
        f"rollout budget per run: {args.steps * args.tasks_per_step * args.group_size} episodes "
        f"({args.steps} steps × {args.tasks_per_step} tasks × {args.group_size}); "
        f"{args.seeds} seeds; {n} held-out tasks (one greedy episode each; binomial std of one "
        f"measurement at the start's success: {100 * np.sqrt(start * (1 - start) / n):.1f} "
        "points); success in %, ± is the sample std over seeds",
        "",
        f"| method | final success | per seed | gain over start | vs grpo, paired by seed "
        f"| held-out episodes won / lost vs start (mean) | steps to {100 * threshold:.1f} "
        "(runs reaching) |",
        "|---|---|---|---|---|---|---|",
        f"| start checkpoint | {100 * start:.1f} | – | – | – | – | – |",
    ]
    for method, row in table.items():
        seeds = " / ".join(f"{100 * f:.1f}" for f in row["finals"])
        vs = pm(row["vs_grpo_mean"], row["vs_grpo_std"]) if "vs_grpo_mean" in row else "–"
        reached = (
            f"{row['steps_to_threshold']:.1f} ({row['runs_reaching']}/{len(row['finals'])})"
            if row["runs_reaching"]
            else f"– (0/{len(row['finals'])})"
        )
        lines.append(
            f"| {method} | {100 * row['final_mean']:.1f} ± {100 * row['final_std']:.1f} "
            f"| {seeds} | {pm(row['gain_mean'], row['gain_std'])} | {vs} "
            f"| {np.mean(row['won']):.1f} / {np.mean(row['lost']):.1f} | {reached} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="configs/quickstart.yaml", help="training config")
    parser.add_argument("--out", default="runs/compare")
    parser.add_argument(
        "--methods", nargs="*", default=list(METHODS), help="names, space- or comma-separated"
    )
    parser.add_argument("--seeds", type=int, default=3, help="seeds 0 … N−1 per method")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--eval-every", type=int, default=5, help="0: only at the end")
    parser.add_argument("--eval-tasks", type=int, default=100)
    parser.add_argument("--group-size", type=int, default=8)
    parser.add_argument("--tasks-per-step", type=int, default=8)
    parser.add_argument("--sft-episodes", type=int, default=None)
    parser.add_argument("--init-from", default=None, help="warm-started model to train from")
    parser.add_argument("--jobs", type=int, default=1, help="trainings run at once")
    parser.add_argument("--save-as", default=None, help="also write PREFIX.json, .md and .png")
    parser.add_argument(
        "--threshold",
        type=float,
        default=None,
        help="success level for steps-to-threshold (default: start + 0.05)",
    )
    args = parser.parse_args()
    args.methods = parse_methods(args.methods)
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
    common = [*base_overrides(args, out), f"model.init_from={start_model}"]
    start_overrides = [
        *common,
        "name=start",
        "total_steps=0",
        "eval.at_start=true",
        "eval.at_end=false",
    ]
    plan = [
        (method, seed, [
            *common,
            f"seed={seed}",
            f"name={method.replace('+', '_')}-s{seed}",
            "algorithm.options={}",
            *METHODS[method],
        ])
        for method in args.methods
        for seed in range(args.seeds)
    ]  # fmt: skip
    jobs = [("start", 0, start_overrides), *plan]
    records = {(m, s): out / "runs" / f"{m.replace('+', '_')}-s{s}.json" for m, s, _ in jobs}
    done = {(m, s): recorded(records[m, s], o) for m, s, o in jobs}
    threads = max(1, (os.cpu_count() or 1) // args.jobs)
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(args.jobs, mp_context=context) as pool:
        futures = {
            (m, s): pool.submit(run_one, args.config, o, threads, records[m, s])
            for m, s, o in jobs
            if done[m, s] is None
        }
        for key, future in futures.items():
            done[key] = future.result()
    start_row = done["start", 0]["eval"][0]
    results: dict[str, list[dict]] = {}
    for method, seed, _ in plan:
        run = done[method, seed]
        results.setdefault(method, []).append(
            {"seed": seed, **run, "eval": [start_row, *run["eval"]]}
        )

    start = float(start_row["success"])
    threshold = args.threshold if args.threshold is not None else start + 0.05
    start_episodes = held_out_successes(done["start", 0]["run_dir"], 0)
    table = summarize(results, start, threshold, start_episodes)
    text = table_text(args, table, start, threshold)
    print(text)
    payload = {
        "args": vars(args),
        "start_model": start_model,
        "start": start_row,
        "threshold": threshold,
        "table": table,
        "runs": results,
        "wall_seconds": time.perf_counter() - t0,
    }
    (out / "table.md").write_text(text + "\n")
    (out / "results.json").write_text(json.dumps(payload, indent=2))
    plot(results, out / "curves.png")
    if args.save_as:
        prefix = Path(args.save_as)
        prefix.parent.mkdir(parents=True, exist_ok=True)
        for name, suffix in (
            ("table.md", ".md"),
            ("results.json", ".json"),
            ("curves.png", ".png"),
        ):
            shutil.copyfile(out / name, prefix.with_name(prefix.name + suffix))


def plot(results: dict[str, list[dict]], path: Path) -> None:
    import matplotlib  # optional extra: only needed for the figure

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for method, runs in results.items():
        steps = [row["step"] for row in runs[0]["eval"]]
        values = np.array([[row["success"] for row in r["eval"]] for r in runs])
        mean = values.mean(0)
        std = values.std(0, ddof=1) if len(runs) > 1 else np.zeros_like(mean)
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
