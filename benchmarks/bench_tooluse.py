"""Tool-world env steps/s with 256 concurrent sessions: in-process service vs over HTTP.

Each mode plays the same ``--episodes`` episodes of ``tooluse-v0`` (test split, the scripted
expert acting, so every step runs real tool calls on the episode's own database) with all of
them in flight at once: 256 open sessions of the ``tooluse`` service. The baseline is the
in-process service (``httpx.ASGITransport``, no sockets); the other row is the same service as
one local uvicorn server on 127.0.0.1 (``service="local"``). The expert's time is included in
both rows (it is the same work); nothing else runs.

    python benchmarks/bench_tooluse.py                  # writes benchmarks/results/tooluse.json
"""

from __future__ import annotations

import argparse
import asyncio
import time
from pathlib import Path
from typing import Any

from report import machine, write_report
from rich.console import Console
from rich.table import Table

import agentenv
from agentenv.envs.tooluse.world import expert
from agentenv.launch import service_scope
from agentenv.play import play_episode

OUT = Path(__file__).parent / "results" / "tooluse.json"
MODES = {"in-process": None, "HTTP (local uvicorn)": "local"}


async def episode(service: str | None, seed: int) -> tuple[int, int, bool]:
    """(steps, tool calls, success) of one expert-played episode."""
    env = agentenv.make("tooluse-v0", service=service, split="test")
    try:
        episode = await play_episode(env, expert.solve, seed=seed)
        calls = sum(len(info["tool_calls"]) for info in episode.infos[1:])
        return episode.steps, calls, episode.success
    finally:
        await env.aclose()


async def run_mode(service: str | None, episodes: int) -> dict[str, Any]:
    async with service_scope():
        await episode(service, 0)  # start the server and build the world outside the clock
        start = time.perf_counter()
        results = await asyncio.gather(*(episode(service, s) for s in range(episodes)))
        seconds = time.perf_counter() - start
    steps = sum(r[0] for r in results)
    calls = sum(r[1] for r in results)
    return {
        "episodes": episodes,
        "steps": steps,
        "tool_calls": calls,
        "success_rate": sum(r[2] for r in results) / episodes,
        "seconds": seconds,
        "steps_per_s": steps / seconds,
        "calls_per_s": calls / seconds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--episodes", type=int, default=256, help="concurrent sessions")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()

    rows = {}
    for name, service in MODES.items():
        rows[name] = asyncio.run(run_mode(service, args.episodes))
    baseline = rows["in-process"]["steps_per_s"]
    table = Table(
        "service", "episodes", "steps", "tool calls", "steps/s", "calls/s", "× in-process",
        "expert success", title=f"tooluse-v0, {args.episodes} concurrent sessions",
    )  # fmt: skip
    for name, r in rows.items():
        r["x_in_process"] = r["steps_per_s"] / baseline
        table.add_row(
            name, str(r["episodes"]), str(r["steps"]), str(r["tool_calls"]),
            f"{r['steps_per_s']:,.0f}", f"{r['calls_per_s']:,.0f}", f"{r['x_in_process']:.2f}",
            f"{r['success_rate']:.1%}",
        )  # fmt: skip
    console = Console()
    console.print(table)
    out = write_report(args.out, {"machine": machine(), "modes": rows})
    console.print(f"wrote {out}")


if __name__ == "__main__":
    main()
