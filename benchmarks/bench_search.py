"""Search service and env throughput on a generated corpus of >= 100k documents.

Measured, all in one run:

- world generation and BM25 index build time (fresh cache), and the reopen time of the cached index;
- ``/retrieve`` over loopback (``agentenv serve search``: uvicorn on 127.0.0.1, one worker) at 1,
  64 and 256 concurrent sessions (keep-alive connections sending back to back), unbatched (one
  query per request) and batched (``--batch`` queries per request), with the server coalescing
  concurrent requests (the default) and without (``coalesce=False``, one search per request in
  the thread pool: the baseline): retrievals/s and per-request p50/p99 latency; the reference
  is the index searched directly in this process (no HTTP);
- env steps/s of 256 concurrent expert episodes with the service in-process vs over HTTP
  (skipped with ``--skip-env``).

The queries are the expert's, for generated 1-4-hop tasks. Client and server share the machine.

    python benchmarks/bench_search.py [--entities 52000] [--seconds 3] [--batch 32] [--skip-env]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import tempfile
import time
from dataclasses import asdict
from importlib.util import find_spec
from pathlib import Path

import numpy as np
from report import machine, write_report
from rich.console import Console
from rich.table import Table

from agentenv.envs.search import expert
from agentenv.envs.search.env import SERVICE_FACTORY, SearchEnv
from agentenv.envs.search.server import BM25Index
from agentenv.envs.search.tasks import RELATIONS, WorldConfig, build_world
from agentenv.launch import LocalServer
from agentenv.play import play_episode


def expert_queries(world, n: int) -> list[str]:
    """The expert's first query for every hop of ``n`` tasks."""
    index_of = {name: i for i, name in enumerate(world.names)}
    queries = []
    for task in world.tasks("train", n):
        entity = index_of[task.start]
        for key in task.chain:
            relation = RELATIONS[key]
            queries.append(f"{world.names[entity]} {relation.keywords}")
            if relation.target:
                entity = world.facts[key][entity]
    return queries


def bench_build(config: WorldConfig, cache: Path) -> tuple[dict, BM25Index]:
    build_world.cache_clear()
    start = time.perf_counter()
    world = build_world(config)
    generate = time.perf_counter() - start
    start = time.perf_counter()
    key = world.fingerprint
    fingerprint = time.perf_counter() - start
    start = time.perf_counter()
    BM25Index.open_or_build(world.docs, key, cache, source="generated")
    build = time.perf_counter() - start
    start = time.perf_counter()
    index = BM25Index.open_or_build(world.docs, key, cache, source="generated")
    reopen = time.perf_counter() - start
    return {
        "num_docs": len(world.docs),
        "generate_s": generate,
        "sha256_s": fingerprint,
        "index_build_s": build,
        "index_reopen_s": reopen,
    }, index


def bench_direct(index: BM25Index, queries: list[str], seconds: float) -> dict:
    done, latencies, start = 0, [], time.perf_counter()
    while time.perf_counter() - start < seconds:
        t = time.perf_counter()
        index.search(queries[done % len(queries)], 3)
        latencies.append(time.perf_counter() - t)
        done += 1
    elapsed = time.perf_counter() - start
    return _row("direct (no HTTP)", 1, 1, done, done, elapsed, latencies)


async def _session(
    port: int, bodies: list[bytes], first: int, step: int, deadline: float, out: dict
) -> None:
    """One keep-alive HTTP/1.1 connection posting ``bodies`` back to back until ``deadline``.

    A raw asyncio client: it costs the shared CPUs far less than httpx, so the numbers are the
    server's."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    k = first
    try:
        while time.perf_counter() < deadline:
            body = bodies[k % len(bodies)]
            k += step
            t = time.perf_counter()
            writer.write(
                b"POST /retrieve HTTP/1.1\r\nhost: bench\r\ncontent-type: application/json\r\n"
                b"content-length: %d\r\n\r\n%s" % (len(body), body)
            )
            head = await reader.readuntil(b"\r\n\r\n")
            length = re.search(rb"(?i)content-length: *(\d+)", head)
            await reader.readexactly(int(length[1]))
            if not head.startswith(b"HTTP/1.1 200"):
                out["errors"] += 1
                continue
            out["latencies"].append(time.perf_counter() - t)
    finally:
        writer.close()


async def bench_http(
    port: int, queries: list[str], sessions: int, batch: int, seconds: float, coalesce: bool
) -> dict:
    bodies = [
        json.dumps({"queries": queries[i : i + batch], "topk": 3, "return_scores": True}).encode()
        for i in range(0, len(queries) - batch + 1, batch)
    ]
    out: dict = {"latencies": [], "errors": 0}
    await _session(port, bodies, 0, 1, time.perf_counter() + 0.2, out)  # warm up
    out = {"latencies": [], "errors": 0}
    start = time.perf_counter()
    await asyncio.gather(
        *(_session(port, bodies, i, sessions, start + seconds, out) for i in range(sessions))
    )
    elapsed = time.perf_counter() - start
    done = len(out["latencies"])
    mode = ("batched" if batch > 1 else "unbatched") + (", coalesced" if coalesce else "")
    row = _row(f"/retrieve {mode}", sessions, batch, done, done * batch, elapsed, out["latencies"])
    return {**row, "coalesce": coalesce, "errors": out["errors"]}


def _row(name, sessions, batch, requests, queries, elapsed, latencies) -> dict:
    lat = np.array(latencies) * 1000
    return {
        "name": name,
        "sessions": sessions,
        "batch": batch,
        "requests": requests,
        "retrievals_per_s": queries / elapsed,
        "p50_ms": float(np.percentile(lat, 50)),
        "p99_ms": float(np.percentile(lat, 99)),
    }


async def bench_env(service, config: WorldConfig, episodes: int, concurrency: int) -> dict:
    env_kwargs = {
        "world_seed": config.seed,
        "num_entities": config.num_entities,
        "distractors": config.distractors,
    }
    envs = [SearchEnv(service=service, **env_kwargs) for _ in range(concurrency)]
    await envs[0].areset(seed=0)  # build or connect once before timing
    steps = successes = 0

    async def worker(env: SearchEnv, seeds: range) -> None:
        nonlocal steps, successes
        for seed in seeds:
            episode = await play_episode(env, expert.solve, seed=seed)
            steps += episode.steps
            successes += episode.success

    per = episodes // concurrency
    start = time.perf_counter()
    await asyncio.gather(
        *(worker(env, range(i * per, (i + 1) * per)) for i, env in enumerate(envs))
    )
    elapsed = time.perf_counter() - start
    for env in envs:
        await env.aclose()
    return {
        "name": f"env steps ({'in-process' if service is None else 'HTTP'})",
        "sessions": concurrency,
        "episodes": per * concurrency,
        "steps": steps,
        "steps_per_s": steps / elapsed,
        "success_rate": successes / (per * concurrency),
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entities", type=int, default=52_000)
    parser.add_argument("--distractors", type=float, default=0.3)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--episodes", type=int, default=1024)
    parser.add_argument("--sessions", type=int, nargs="+", default=[1, 64, 256])
    parser.add_argument("--skip-env", action="store_true", help="skip the env-steps runs")
    parser.add_argument("--out", default="benchmarks/results/search.json")
    args = parser.parse_args()

    config = WorldConfig(num_entities=args.entities, distractors=args.distractors)
    console = Console(width=120)
    with tempfile.TemporaryDirectory() as cache:
        os.environ["AGENTENV_CACHE"] = cache  # the servers below open this index
        console.print(f"building a world of {args.entities} entities and its index ...")
        build, index = bench_build(config, Path(cache))
        queries = expert_queries(build_world(config), 2000)
        rows = [bench_direct(index, queries, args.seconds)]
        env_rows: list[dict] = []
        for coalesce in (False, True):
            with LocalServer(SERVICE_FACTORY, {**asdict(config), "coalesce": coalesce}) as server:
                for batch in (1, args.batch):
                    for sessions in args.sessions:
                        console.print(
                            f"/retrieve: {sessions} sessions, batch {batch}, coalesce {coalesce}"
                        )
                        rows.append(
                            await bench_http(
                                server.port, queries, sessions, batch, args.seconds, coalesce
                            )
                        )
                if coalesce and not args.skip_env:
                    console.print("env episodes over HTTP ...")
                    env_rows.append(await bench_env(server.url, config, args.episodes, 256))
        if not args.skip_env:
            console.print("env episodes in-process ...")
            env_rows.insert(0, await bench_env(None, config, args.episodes, 256))

    baseline = rows[0]["retrievals_per_s"]
    table = Table(title=f"search: {build['num_docs']:,} docs, {os.cpu_count()} CPUs")
    for col in (
        "case",
        "sessions",
        "queries/request",
        "retrievals/s",
        "vs direct",
        "p50 ms",
        "p99 ms",
    ):
        table.add_column(col, justify="right" if col != "case" else "left")
    for r in rows:
        table.add_row(
            r["name"],
            str(r["sessions"]),
            str(r["batch"]),
            f"{r['retrievals_per_s']:,.0f}",
            f"{r['retrievals_per_s'] / baseline:.2f}x",
            f"{r['p50_ms']:.2f}",
            f"{r['p99_ms']:.2f}",
        )
    env_table = Table(title="env steps, 256 concurrent expert episodes")
    for col in ("case", "episodes", "steps", "steps/s", "vs in-process", "success"):
        env_table.add_column(col, justify="right" if col != "case" else "left")
    for r in env_rows:
        env_table.add_row(
            r["name"],
            str(r["episodes"]),
            str(r["steps"]),
            f"{r['steps_per_s']:,.0f}",
            f"{r['steps_per_s'] / env_rows[0]['steps_per_s']:.2f}x",
            f"{r['success_rate']:.3f}",
        )
    build_table = Table(title="corpus and index")
    for col in ("docs", "generate s", "sha256 s", "index build s", "cached reopen s"):
        build_table.add_column(col, justify="right")
    build_table.add_row(
        f"{build['num_docs']:,}",
        f"{build['generate_s']:.2f}",
        f"{build['sha256_s']:.3f}",
        f"{build['index_build_s']:.2f}",
        f"{build['index_reopen_s']:.3f}",
    )
    console.print(build_table, table, *([env_table] if env_rows else []))

    report = {
        "machine": {
            **machine(),
            "uvicorn_http": "httptools" if find_spec("httptools") else "h11",
            "uvicorn_loop": "uvloop" if find_spec("uvloop") else "asyncio",
        },
        "args": vars(args),
        "build": build,
        "retrieve": rows,
        "env": env_rows,
    }
    out = write_report(args.out, report)
    console.print(f"wrote {out}")


if __name__ == "__main__":
    asyncio.run(main())
