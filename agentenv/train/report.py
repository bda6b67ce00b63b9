"""``agentenv report RUN_DIR``: a Markdown summary of a run with learning-curve PNGs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from agentenv.train.metrics import read_metrics
from agentenv.train.summary import read_summary

CURVES: tuple[tuple[str, str], ...] = (
    ("reward", "mean episode return (train rollouts)"),
    ("success", "success rate (train rollouts)"),
    ("loss", "loss"),
    ("kl", "KL to reference"),
    ("entropy", "entropy"),
    ("clip_fraction", "clip fraction"),
    ("grad_norm", "gradient norm"),
    ("tokens_per_s", "tokens / s"),
)


def _series(rows: list[dict[str, Any]], key: str) -> tuple[list[int], list[float]]:
    pairs = [(r["step"], r[key]) for r in rows if r.get(key) is not None]
    return [p[0] for p in pairs], [p[1] for p in pairs]


def plot_learning_curves(run_dir: Path) -> Path:
    """``learning_curves.png``: held-out success, train reward/success and loss diagnostics (a
    bare Figure: no pyplot, so the calling process's matplotlib backend is left as it is)."""
    train_rows = read_metrics(run_dir, "train")
    eval_rows = read_metrics(run_dir, "eval")
    keys = [k for k in CURVES if _series(train_rows, k[0])[0]]
    n = len(keys) + 1
    cols = 3
    fig = Figure(figsize=(4.2 * cols, 3.0 * ((n + 2) // 3)))
    axes = fig.subplots((n + cols - 1) // cols, cols, squeeze=False).flatten()
    ax = axes[0]
    steps, success = _series(eval_rows, "success")
    ax.plot(steps, success, marker="o", color="tab:green")
    ax.set_title("held-out success")
    ax.set_xlabel("RL step")
    ax.set_ylim(0, 1)
    for ax, (key, title) in zip(axes[1:], keys, strict=False):
        x, y = _series(train_rows, key)
        ax.plot(x, y)
        ax.set_title(title)
        ax.set_xlabel("RL step")
    for ax in axes[n:]:
        ax.axis("off")
    fig.tight_layout()
    out = run_dir / "learning_curves.png"
    fig.savefig(out, dpi=110)
    return out


def _table(rows: list[dict[str, Any]], keys: list[str]) -> list[str]:
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    for row in rows:
        cells = []
        for key in keys:
            value = row.get(key)
            cells.append(
                f"{value:.4g}"
                if isinstance(value, float)
                else str(value if value is not None else "–")
            )
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def write_report(run_dir: str | Path) -> Path:
    """Write ``RUN/report.md`` (config, evaluation table, last steps, curves) and return it."""
    run_dir = Path(run_dir)
    if not (run_dir / "metrics.jsonl").is_file():
        raise FileNotFoundError(f"{run_dir}: no metrics.jsonl (is it a training run folder?)")
    train_rows = read_metrics(run_dir, "train")
    eval_rows = read_metrics(run_dir, "eval")
    png = plot_learning_curves(run_dir)
    lines = [f"# Training report: {run_dir.name}", ""]
    data = read_summary(run_dir)
    if data is not None:
        lines += ["## Summary", "", "```json", json.dumps(data, indent=2), "```", ""]
    lines += ["## Held-out evaluation", ""]
    lines += _table(eval_rows, ["step", "episodes", "success", "reward", "turns", "errors"])
    lines += ["", f"![learning curves]({png.name})", "", "## Training steps", ""]
    keys = [
        "step",
        "reward",
        "success",
        "adv_std",
        "loss",
        "kl",
        "entropy",
        "clip_fraction",
        "grad_norm",
        "rollout_s",
        "update_s",
    ]
    shown = train_rows if len(train_rows) <= 30 else train_rows[:: max(1, len(train_rows) // 30)]
    lines += _table(shown, keys)
    config = run_dir / "config.yaml"
    if config.is_file():
        lines += ["", "## Configuration", "", "```yaml", config.read_text().rstrip(), "```"]
    out = run_dir / "report.md"
    out.write_text("\n".join(lines) + "\n")
    return out
