"""MCP call latency: one server, in-memory vs stdio.

The server is ``mcp-server-time`` (the ``mcp-time-v0`` example), reached two ways:

- ``in-memory``: the server object built in this process
  (``agentenv.envs.tooluse.mcp.examples.time_server:server``), through ``mcp.Client``'s
  in-process dispatcher;
- ``stdio``: ``python -m mcp_server_time`` as a subprocess, JSON-RPC over its stdin/stdout.

Measured for each, in one run:

- start: spawn/attach + initialize + ``tools/list`` (fresh connections, median of ``--starts``);
- ``convert_time`` latency through the path an env uses (:class:`McpConnection` on the MCP
  pool's own loop, awaited from another loop): p50/p95/p99 and calls/s, one caller at a time;
- the same with ``--concurrency`` callers sharing the one session (calls/s);
- the raw SDK baseline: ``Client.call_tool`` on the client's own loop (no pool hop);
- env steps: ``McpEnv.astep`` with one ``convert_time`` call (parse, schema check, call, result).

    python benchmarks/bench_mcp.py [--calls 2000] [--concurrency 32] [--starts 5]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import numpy as np
from mcp import Client, StdioServerParameters
from report import machine, write_report
from rich.console import Console
from rich.table import Table

from agentenv.envs.tooluse.mcp.client import (
    POOL,
    McpConnection,
    ServerSpec,
    resolve_target,
    server_spec,
)
from agentenv.envs.tooluse.mcp.env import TIME_SERVER, TIME_TARGET, TIME_TASKS, McpEnv

OUT = Path(__file__).resolve().parent / "results" / "mcp.json"
ARGUMENTS = {"source_timezone": "Asia/Tokyo", "time": "09:15", "target_timezone": "Asia/Kolkata"}
CALL = f"<tool_call>\n{json.dumps({'name': 'convert_time', 'arguments': ARGUMENTS})}\n</tool_call>"


def summary(seconds: list[float]) -> dict[str, float]:
    """p50/p95/p99 in milliseconds and calls/s of sequential latencies."""
    ms = np.asarray(seconds) * 1e3
    return {
        "calls": len(seconds),
        "p50_ms": float(np.percentile(ms, 50)),
        "p95_ms": float(np.percentile(ms, 95)),
        "p99_ms": float(np.percentile(ms, 99)),
        "calls_per_s": float(len(seconds) / sum(seconds)),
    }


async def timed(fn: Callable[[], Awaitable[Any]], n: int, warmup: int = 20) -> list[float]:
    """Latencies of ``n`` sequential awaits of ``fn()`` (after ``warmup``)."""
    for _ in range(warmup):
        await fn()
    out = []
    for _ in range(n):
        start = time.perf_counter()
        await fn()
        out.append(time.perf_counter() - start)
    return out


async def start_times(spec: ServerSpec, starts: int) -> float:
    """Median seconds to open a fresh connection (start + initialize + tools/list)."""
    times = []
    for _ in range(starts):
        start = time.perf_counter()
        connection = await POOL.private(spec, 30.0)
        times.append(time.perf_counter() - start)
        await POOL.release(connection)
    return float(np.median(times))


async def pooled(connection: McpConnection, calls: int, concurrency: int) -> dict[str, Any]:
    """Sequential latency and concurrent throughput through the pool, as an env calls."""

    def one() -> Awaitable[str]:
        return POOL.run(connection.call("convert_time", dict(ARGUMENTS), 10.0, 5.0), 20.0, "bench")

    row = summary(await timed(one, calls))
    start = time.perf_counter()
    per_worker = max(1, calls // concurrency)

    async def worker() -> None:
        for _ in range(per_worker):
            await one()

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    row["concurrent_calls_per_s"] = per_worker * concurrency / (time.perf_counter() - start)
    return row


async def raw_sdk(server: Any, calls: int) -> dict[str, Any]:
    """``Client.call_tool`` on the client's own loop: the SDK's cost without the pool hop."""
    async with Client(server, cache=None) as client:
        return summary(await timed(lambda: client.call_tool("convert_time", ARGUMENTS), calls))


async def env_steps(server: Any, steps: int) -> dict[str, Any]:
    """``McpEnv.astep`` with one convert_time call (a fresh episode every 7 steps)."""
    env = McpEnv(server, TIME_TASKS, max_turns=8)
    await env.areset(seed=0)
    count = 0

    async def step() -> None:
        nonlocal count
        count += 1
        if count % 7 == 0:
            await env.areset(seed=count)
        _, _, _, _, info = await env.astep(CALL)
        assert info["action_valid"], info

    row = summary(await timed(step, steps))
    await env.aclose()
    return row


async def measure(name: str, server: Any, args: argparse.Namespace) -> dict[str, Any]:
    spec = server_spec(server)
    start = await start_times(spec, args.starts)
    connection = await POOL.shared(spec, 30.0)
    row = {
        "transport": name,
        "start_s": start,
        **await pooled(connection, args.calls, args.concurrency),
    }
    direct = resolve_target(TIME_TARGET) if name == "in-memory" else _stdio_params()
    row["sdk_direct"] = await raw_sdk(direct, args.calls)
    row["env_step"] = await env_steps(server, max(200, args.calls // 4))
    return row


def _stdio_params() -> StdioServerParameters:
    spec = server_spec(list(TIME_SERVER))
    return StdioServerParameters(command=spec.command[0], args=list(spec.command[1:]))


def table(rows: list[dict[str, Any]]) -> Table:
    out = Table(title="MCP convert_time on mcp-server-time: in-memory vs stdio")
    for column in (
        "transport",
        "start s",
        "p50 ms",
        "p95 ms",
        "calls/s",
        "calls/s ×conc",
        "SDK p50 ms",
        "SDK calls/s",
        "env step p50 ms",
    ):
        out.add_column(column, justify="right")
    for r in rows:
        out.add_row(
            r["transport"],
            f"{r['start_s']:.3f}",
            f"{r['p50_ms']:.3f}",
            f"{r['p95_ms']:.3f}",
            f"{r['calls_per_s']:.0f}",
            f"{r['concurrent_calls_per_s']:.0f}",
            f"{r['sdk_direct']['p50_ms']:.3f}",
            f"{r['sdk_direct']['calls_per_s']:.0f}",
            f"{r['env_step']['p50_ms']:.3f}",
        )
    return out


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--starts", type=int, default=5)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    rows = [
        await measure("in-memory", TIME_TARGET, args),
        await measure("stdio", list(TIME_SERVER), args),
    ]
    console = Console(width=150)
    console.print(table(rows))
    report = {
        "benchmark": "mcp",
        "machine": machine(),
        "args": {k: str(v) for k, v in vars(args).items()},
        "server": "mcp-server-time (convert_time Asia/Tokyo 09:15 → Asia/Kolkata)",
        "rows": rows,
    }
    POOL.close()
    console.print(f"wrote {write_report(args.out, report)}")


if __name__ == "__main__":
    asyncio.run(main())
