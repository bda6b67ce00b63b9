"""Sandbox start and command overhead per backend, against a plain subprocess.

For each backend (bwrap, unsafe-local, and docker/podman where an engine answers):

- **lifecycle**: create + start + ``run("true")`` + destroy of a fresh sandbox, ``--n`` times;
- **command**: ``run("true")`` in one started sandbox, ``--n`` times;

and the baseline, ``asyncio.create_subprocess_exec("true")`` + wait. p50/p95 in milliseconds,
measured one at a time (no concurrency).

    python benchmarks/bench_sandbox.py [--n 100]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from typing import Any

from report import machine, write_report
from rich.console import Console
from rich.table import Table

from agentenv.sandbox import Limits, Sandbox, engine_unavailable

ENGINES = ("docker", "podman")


async def timed(n: int, step: Callable[[], Awaitable[Any]]) -> dict[str, float]:
    """p50/p95/mean of ``n`` runs of ``step``, in milliseconds (after one warm-up)."""
    await step()
    seconds = []
    for _ in range(n):
        start = time.perf_counter()
        await step()
        seconds.append(time.perf_counter() - start)
    ms = sorted(s * 1000 for s in seconds)
    return {
        "p50_ms": round(statistics.median(ms), 2),
        "p95_ms": round(ms[min(len(ms) - 1, int(0.95 * len(ms)))], 2),
        "mean_ms": round(statistics.fmean(ms), 2),
        "n": n,
    }


async def plain_true() -> None:
    proc = await asyncio.create_subprocess_exec("true")
    await proc.wait()


def options(backend: str, root: str) -> dict[str, Any]:
    return {} if backend in ENGINES else {"root": root}


async def bench_backend(backend: str, n: int, root: str) -> dict[str, Any]:
    """Lifecycle and command overhead of ``backend``."""

    async def lifecycle() -> None:
        async with Sandbox.create(backend, limits=Limits(), **options(backend, root)) as sb:
            result = await sb.run("true")
            assert result.returncode == 0, result

    async with Sandbox.create(backend, limits=Limits(), **options(backend, root)) as sb:

        async def command() -> None:
            result = await sb.run("true")
            assert result.returncode == 0, result

        run = await timed(n, command)
    return {"lifecycle": await timed(n, lifecycle), "command": run}


def table(results: dict[str, Any]) -> Table:
    out = Table(title="sandbox overhead: `true`, one at a time (ms)")
    for column in ("backend", "lifecycle p50", "lifecycle p95", "command p50", "command p95"):
        out.add_column(column, justify="left" if column == "backend" else "right")
    for name, row in results.items():
        if "skipped" in row:
            out.add_row(name, "skipped: no engine", "", "", "")
            continue
        life, cmd = row.get("lifecycle"), row["command"]
        cells = [f"{life['p50_ms']:.1f}", f"{life['p95_ms']:.1f}"] if life else ["-", "-"]
        out.add_row(name, *cells, f"{cmd['p50_ms']:.1f}", f"{cmd['p95_ms']:.1f}")
    return out


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100)
    parser.add_argument("--out", default="benchmarks/results/sandbox.json")
    args = parser.parse_args()
    console = Console(width=120)
    logging.getLogger("agentenv.sandbox.local").setLevel(logging.ERROR)  # its opt-in warning
    results: dict[str, Any] = {"subprocess": {"command": await timed(args.n, plain_true)}}
    with tempfile.TemporaryDirectory() as root:
        for backend in ("bwrap", "unsafe-local", *ENGINES):
            reason = engine_unavailable(backend) if backend in ENGINES else None
            if reason:
                results[backend] = {"skipped": reason}
                continue
            console.print(f"{backend} ...")
            results[backend] = await bench_backend(backend, args.n, root)
    console.print(table(results))
    for name, row in results.items():
        if "skipped" in row:
            console.print(f"{name}: {row['skipped']}")
    out = write_report(args.out, {"machine": machine(), "args": vars(args), "results": results})
    console.print(f"wrote {out}")


if __name__ == "__main__":
    asyncio.run(main())
