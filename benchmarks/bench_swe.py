"""The SWE env's costs: the bug factory, grading, and 64 concurrent episodes.

- **factory**: validated bugs per minute per package (a fresh instance cache; the sdists come
  from the shared cache), with the clean suite's time and the rejection reasons;
- **grading**: seconds per grade of the gold fix (a full suite run in a fresh bwrap sandbox)
  against the bare suite run in an already prepared sandbox (the baseline);
- **sessions**: expert episodes one at a time vs 64 at once, in-process and over HTTP (a local
  uvicorn), every submission graded (``grade_cache=0``), then in-process with the grade cache
  (64 episodes over 12 instances: most submissions repeat one); wall time, episodes/s, and the
  memory the open sessions hold (RSS + tmpfs).

    python benchmarks/bench_swe.py [--packages h11 xmltodict ...] [--bugs 8] [--episodes 64]
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from report import machine, write_report
from rich.console import Console
from rich.table import Table

from agentenv.envs.swe import expert
from agentenv.envs.swe.env import SWEEnv
from agentenv.envs.swe.factory import Instance, Stats, abuild_instances
from agentenv.envs.swe.grading import grade, prepare_workspace
from agentenv.envs.swe.packages import PACKAGES, package, sdist_path
from agentenv.envs.swe.server import GRADE_CACHE
from agentenv.launch import service_scope
from agentenv.play import play_episode
from agentenv.sandbox import Limits, MiB, Sandbox

OUT = Path(__file__).parent / "results" / "swe.json"


async def factory_row(name: str, bugs: int) -> dict[str, Any]:
    """Build ``bugs`` validated bugs of ``name`` into a fresh cache; return the throughput."""
    with tempfile.TemporaryDirectory(prefix="swe-bench-") as tmp:
        sdists = Path(tmp) / "swe" / "sdists"
        sdists.mkdir(parents=True)
        shutil.copy(sdist_path(name), sdists)
        stats = Stats()
        found = await abuild_instances(name, n=bugs, seed=0, cache=tmp, stats=stats)
    return {
        "package": name,
        "validated": len(found),
        "candidates": stats.candidates,
        "seconds": stats.seconds,
        "clean_suite_s": stats.clean_seconds,
        "bugs_per_minute": 60 * len(found) / stats.seconds,
        "rejected": stats.rejected,
    }


async def grading_row(instances: list[Instance]) -> dict[str, Any]:
    """Seconds per gold-fix grade vs a bare suite run in a prepared sandbox."""
    graded, suites, resolved = [], [], 0
    limits = Limits(timeout=300, max_output=1 << 22, disk=256 * MiB)
    for inst in instances:
        start = time.perf_counter()
        report = await grade(inst, inst.patch)
        graded.append(time.perf_counter() - start)
        resolved += report.resolved
        async with Sandbox.create("bwrap", limits=limits) as sb:
            await prepare_workspace(sb, inst)
            start = time.perf_counter()
            await sb.run(inst.test_cmd)
            suites.append(time.perf_counter() - start)
    return {
        "instances": len(instances),
        "resolved": resolved,
        "grade_p50_s": statistics.median(graded),
        "suite_p50_s": statistics.median(suites),
        "overhead_x": statistics.median(graded) / statistics.median(suites),
    }


async def episode(service: str | None, task_id: str, grade_cache: int) -> float:
    env = SWEEnv(service=service, split="all", grade_cache=grade_cache)
    try:
        episode = await play_episode(env, expert.solve, options={"task": task_id})
        return episode.final_reward
    finally:
        await env.aclose()


def memory_mb() -> float:
    """This process's RSS plus the machine's shared memory (the workspaces' tmpfs), in MB."""
    rss = int(Path("/proc/self/statm").read_text().split()[1]) * 4096
    shmem = next(
        int(line.split()[1]) * 1024
        for line in Path("/proc/meminfo").read_text().splitlines()
        if line.startswith("Shmem:")
    )
    return (rss + shmem) / 2**20


async def open_sessions_mb(ids: list[str], n: int) -> float:
    """Memory held per open, reset session (in-process service), in MB."""
    envs = [SWEEnv(split="all", grade_cache=0) for _ in range(n)]
    await envs[0].areset(options={"task": ids[0]})
    before = memory_mb()
    for k, env in enumerate(envs[1:], 1):
        await env.areset(options={"task": ids[k % len(ids)]})
    after = memory_mb()
    for env in envs:
        await env.aclose()
    return (after - before) / (n - 1)


async def sessions_rows(ids: list[str], episodes: int) -> list[dict[str, Any]]:
    rows = []
    modes = (
        ("in-process", None, 0),
        ("HTTP (local uvicorn)", "local", 0),
        ("in-process, grade cache", None, GRADE_CACHE),
    )
    for mode, service, cache in modes:
        async with service_scope():
            await episode(service, ids[0], cache)  # start the server outside the clock
            start = time.perf_counter()
            for k in range(8):
                await episode(service, ids[k % len(ids)], cache)
            one_by_one = (time.perf_counter() - start) / 8
            start = time.perf_counter()
            tasks = [ids[k % len(ids)] for k in range(episodes)]
            rewards = await asyncio.gather(*(episode(service, t, cache) for t in tasks))
            wall = time.perf_counter() - start
        rows.append(
            {
                "mode": mode,
                "episodes": episodes,
                "resolved": sum(rewards),
                "sequential_s_per_episode": one_by_one,
                "concurrent_wall_s": wall,
                "episodes_per_s": episodes / wall,
                "speedup_x": one_by_one * episodes / wall,
            }
        )
    return rows


def table(title: str, rows: list[dict[str, Any]], console: Console) -> None:
    out = Table(title=title)
    for key in rows[0]:
        out.add_column(key)
    for row in rows:
        out.add_row(*(f"{v:.2f}" if isinstance(v, float) else str(v) for v in row.values()))
    console.print(out)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    console = Console()
    factory = [await factory_row(name, args.bugs) for name in args.packages]
    table("bug factory (validated bugs per minute, 4 bwrap workers)", factory, console)
    env = SWEEnv(split="all")
    ids = env.task_ids("all")
    instances = [env.get_task(i) for i in ids[: args.grades]]
    grading = await grading_row(instances)
    table("grading (gold fix, fresh bwrap sandbox) vs the bare suite", [grading], console)
    sessions = await sessions_rows(ids, args.episodes)
    table(f"expert episodes: one at a time vs {args.episodes} at once", sessions, console)
    per_session = await open_sessions_mb(ids, 32)
    console.print(f"memory per open session (RSS + tmpfs): {per_session:.2f} MB")
    return {
        "machine": machine(),
        "factory": factory,
        "grading": grading,
        "sessions": sessions,
        "mb_per_open_session": per_session,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--packages", nargs="+", default=list(PACKAGES), choices=list(PACKAGES))
    parser.add_argument("--bugs", type=int, default=8, help="validated bugs per package")
    parser.add_argument("--grades", type=int, default=8, help="instances graded")
    parser.add_argument("--episodes", type=int, default=64, help="concurrent episodes")
    args = parser.parse_args()
    for name in args.packages:
        package(name)
    report = asyncio.run(run(args))
    print(f"wrote {write_report(OUT, report)}")


if __name__ == "__main__":
    main()
