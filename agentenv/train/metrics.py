"""Run metrics: one JSON line per training step or evaluation, TensorBoard, a rich live view.

``RUN/metrics.jsonl`` rows carry ``kind`` (``"train"`` or ``"eval"``) and ``step`` (RL steps
completed when the row was written). A checkpoint records the size of every append-only log of
the run (:data:`RUN_LOGS`); on resume each is cut back to that size, so whatever was written after
the checkpoint (a replayed step's rows and rollouts, a repeated evaluation) is written once.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.live import Live
from rich.table import Table

from agentenv.runfiles import METRICS, ROLLOUTS
from agentenv.runfiles import read_metrics as read_metrics  # re-exported; it lives there

RUN_LOGS = (METRICS, ROLLOUTS)
"""The append-only logs of an RL run folder."""

#: columns of the live view and the per-step console line: (key, header, format)
LIVE_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("reward", "reward", "{:+.3f}"),
    ("success", "success", "{:.2f}"),
    ("adv_std", "adv σ", "{:.2f}"),
    ("loss", "loss", "{:+.4f}"),
    ("kl", "KL", "{:.4f}"),
    ("entropy", "entropy", "{:.3f}"),
    ("clip_fraction", "clip", "{:.3f}"),
    ("grad_norm", "|g|", "{:.3f}"),
    ("tokens_per_s", "tok/s", "{:.0f}"),
    ("rollout_s", "rollout s", "{:.1f}"),
    ("update_s", "update s", "{:.1f}"),
)


def log_sizes(run_dir: str | Path) -> dict[str, int]:
    """Bytes written so far to each of the run's :data:`RUN_LOGS` (those that exist)."""
    paths = {name: Path(run_dir) / name for name in RUN_LOGS}
    return {name: path.stat().st_size for name, path in paths.items() if path.is_file()}


def truncate_logs(run_dir: str | Path, sizes: dict[str, int]) -> None:
    """Cut each of the run's :data:`RUN_LOGS` back to its size in ``sizes`` (absent: empty)."""
    for name in RUN_LOGS:
        path = Path(run_dir) / name
        if path.is_file():
            with path.open("r+b") as f:
                f.truncate(min(sizes.get(name, 0), path.stat().st_size))


def _clean(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class MetricsLogger:
    """Appends rows to ``metrics.jsonl``; mirrors scalars to TensorBoard; shows a live view."""

    def __init__(
        self,
        run_dir: str | Path,
        *,
        total_steps: int,
        tensorboard: bool = False,
        live: bool = True,
        console: Console | None = None,
        append: bool = True,
        purge_step: int | None = None,
    ) -> None:
        """``append=False`` starts the file afresh; ``purge_step`` drops TensorBoard events from
        that step on (a resumed run replays them)."""
        self.path = Path(run_dir) / METRICS
        self.total_steps = total_steps
        self.console = console or Console()
        self._file = self.path.open("a" if append else "w", encoding="utf-8")
        self._writer = None
        if tensorboard:
            try:  # the tensorboard extra
                from torch.utils.tensorboard import SummaryWriter
            except ImportError as exc:
                raise RuntimeError(
                    "logging.tensorboard needs the tensorboard package: pip install tensorboard"
                ) from exc
            self._writer = SummaryWriter(str(Path(run_dir) / "tensorboard"), purge_step=purge_step)
        self._table_rows: list[dict[str, Any]] = []
        self._live: Live | None = None
        if live and self.console.is_terminal:
            self._live = Live(self._render(), console=self.console, refresh_per_second=2)
            self._live.start()

    def log(self, row: dict[str, Any]) -> None:
        row = {k: _clean(v) for k, v in row.items()}
        self._file.write(json.dumps(row) + "\n")
        self._file.flush()
        if self._writer is not None:
            prefix = row.get("kind", "train")
            for key, value in row.items():
                if (
                    isinstance(value, (int, float))
                    and not isinstance(value, bool)
                    and key != "step"
                ):
                    self._writer.add_scalar(f"{prefix}/{key}", value, row.get("step", 0))
        if row.get("kind") == "eval":
            self.console.print(
                f"[bold]eval[/] step {row['step']}: success {row['success']:.3f} "
                f"reward {row['reward']:+.3f} over {row['episodes']} episodes"
            )
            return
        self._table_rows = [*self._table_rows[-11:], row]
        if self._live is not None:
            self._live.update(self._render())
        else:
            self.console.print(self._line(row), highlight=False)

    def _line(self, row: dict[str, Any]) -> str:
        parts = [f"step {row.get('step', 0)}/{self.total_steps}"]
        for key, header, fmt in LIVE_COLUMNS:
            if row.get(key) is not None:
                parts.append(f"{header} {fmt.format(row[key])}")
        return " | ".join(parts)

    def _render(self) -> Table:
        table = Table(
            title=f"training ({len(self._table_rows) and self._table_rows[-1]['step']}"
            f"/{self.total_steps} steps)"
        )
        table.add_column("step", justify="right")
        for _, header, _ in LIVE_COLUMNS:
            table.add_column(header, justify="right")
        for row in self._table_rows:
            cells = [
                fmt.format(row[key]) if row.get(key) is not None else "–"
                for key, _, fmt in LIVE_COLUMNS
            ]
            table.add_row(str(row.get("step", "")), *cells)
        return table

    def close(self) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None
        if self._writer is not None:
            self._writer.close()
        self._file.close()


def summarize_values(prefix: str, values: Iterable[float]) -> dict[str, float]:
    """``{prefix}_mean/std/min/max`` of a sequence (empty → nothing)."""
    arr = np.asarray(list(values), dtype=np.float64)
    if arr.size == 0:
        return {}
    return {
        f"{prefix}_mean": float(arr.mean()),
        f"{prefix}_std": float(arr.std()),
        f"{prefix}_min": float(arr.min()),
        f"{prefix}_max": float(arr.max()),
    }
