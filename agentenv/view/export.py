"""The viewer as one self-contained HTML file (``agentenv view RUN --html OUT``).

The file holds the page, the run document and every episode's document (or the first
``max_episodes`` of them, which the page then says), each gzip-compressed and base64-encoded:
the page decompresses an episode only when it is opened (the browser's ``DecompressionStream``),
so a file of thousands of episodes opens as fast as the served viewer.
"""

from __future__ import annotations

import base64
import gzip
import json
import time
from dataclasses import dataclass
from pathlib import Path

from agentenv.view.credit import GroupCredit
from agentenv.view.page import render_page
from agentenv.view.payload import credit_of, episode_payload, run_payload
from agentenv.view.runs import Run


@dataclass(frozen=True)
class Export:
    """What :func:`export_html` wrote: the file, its size, the episodes it holds of the run's."""

    path: Path
    bytes: int
    embedded: int
    total: int
    seconds: float


def export_html(run: Run, out: str | Path, *, max_episodes: int | None = None) -> Export:
    """Write the page of ``run`` with its episodes embedded to ``out``."""
    if max_episodes is not None and max_episodes < 0:
        raise ValueError(f"--max-episodes must be ≥ 0, got {max_episodes}")
    start = time.perf_counter()
    episodes = run.episodes if max_episodes is None else run.episodes[:max_episodes]
    credits: dict[str, GroupCredit] = {}
    blobs = {}
    for ep in episodes:
        if ep.group not in credits:
            credits[ep.group] = credit_of(run, ep.id)
        blobs[str(ep.id)] = _pack(episode_payload(run, ep.id, credits[ep.group]))
    data = {
        "mode": "static",
        "run": run_payload(run),
        "episodes": blobs,
        "embedded": len(blobs),
        "total": len(run.episodes),
    }
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_page(run.name, data), encoding="utf-8")
    return Export(
        path, path.stat().st_size, len(blobs), len(run.episodes), time.perf_counter() - start
    )


def _pack(document: dict) -> str:
    raw = json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode()
    return base64.b64encode(gzip.compress(raw, compresslevel=6, mtime=0)).decode("ascii")
