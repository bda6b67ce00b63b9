"""WebShop: catalogue generation and index build (time, peak RSS) at 1k / 10k / 100k products,
env steps/s with 256 concurrent sessions in-process vs over HTTP, and memory per session.

- **build**: each size runs in a fresh subprocess (so its peak RSS is its own): generate the
  catalogue (:func:`~agentenv.envs.webshop.catalog.generate_catalog`), build its BM25 index in an
  empty cache, then open the cached index again (what a later start pays), and time one search.
- **steps/s**: ``--episodes`` (256) expert-played episodes of ``webshop-v0`` (test split, 1k
  products) all in flight at once, i.e. 256 open sessions of the ``webshop`` service; the
  in-process service (``httpx.ASGITransport``) vs one local uvicorn server (``service="local"``).
  The expert's time is in both rows.
- **memory per session**: a fresh subprocess opens ``--sessions`` sessions in-process, resets
  each on a goal and searches once (so each holds a results page); the RSS growth divided by
  the sessions.

    python benchmarks/bench_webshop.py                  # writes benchmarks/results/webshop.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from report import machine, write_report
from rich.console import Console
from rich.table import Table

import agentenv
from agentenv.envs.webshop import expert
from agentenv.launch import service_scope
from agentenv.play import play_episode

OUT = Path(__file__).parent / "results" / "webshop.json"
SIZES = (1_000, 10_000, 100_000)
MODES = {"in-process": None, "HTTP (local uvicorn)": "local"}

BUILD_CHILD = """
import json, resource, sys, tempfile, time
from agentenv.envs.webshop.catalog import CatalogConfig, generate_catalog
from agentenv.envs.webshop.search import ProductIndex
n = int(sys.argv[1])
cache = tempfile.mkdtemp(prefix="webshop-bench-")
t0 = time.perf_counter(); products = generate_catalog(CatalogConfig(num_products=n))
t1 = time.perf_counter(); index = ProductIndex(products, cache)
t2 = time.perf_counter(); ProductIndex(products, cache)
t3 = time.perf_counter(); hits = index.search(products[n // 2].title)
t4 = time.perf_counter()
print(json.dumps({"products": n, "generate_s": t1 - t0, "index_build_s": t2 - t1,
                  "index_reopen_s": t3 - t2, "search_ms": 1000 * (t4 - t3),
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""

SESSION_CHILD = """
import asyncio, json, sys
from agentenv.envs.webshop.env import SERVICE_FACTORY, WebShopEnv
from agentenv.envs.webshop.server import goal_body
from agentenv.launch import connect
from agentenv.sessions import ServiceSession

def rss_mb():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2**20

async def main(n):
    env = WebShopEnv()
    client = await connect(SERVICE_FACTORY, None, config=env.service_config)
    goals = [env.get_task(i) for i in env.task_ids("test")]
    warm = await ServiceSession.open(client)
    await warm.reset({"goal": goal_body(goals[0])})
    await warm.step({"action": "search[warm up]"})
    before = rss_mb()
    sessions = []
    for k in range(n):
        s = await ServiceSession.open(client)
        await s.reset({"goal": goal_body(goals[k % len(goals)])})
        await s.step({"action": f"search[{goals[k % len(goals)].name}]"})
        sessions.append(s)
    after = rss_mb()
    print(json.dumps({"sessions": n, "rss_before_mb": before, "rss_after_mb": after,
                      "kb_per_session": (after - before) * 1024 / n}))

asyncio.run(main(int(sys.argv[1])))
"""


def child(code: str, *args: str) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, "-c", code, *args], check=True, capture_output=True, text=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


async def episode(service: str | None, task_id: str) -> tuple[int, bool]:
    """(steps, success) of one expert-played episode."""
    env = agentenv.make("webshop-v0", service=service, split="test")
    try:
        episode = await play_episode(env, expert.solve, options={"task": task_id})
        return episode.steps, episode.success
    finally:
        await env.aclose()


async def run_mode(service: str | None, episodes: int) -> dict[str, Any]:
    ids = agentenv.make("webshop-v0").task_ids("test")
    async with service_scope():
        await episode(service, ids[0])  # start the server and build the index outside the clock
        start = time.perf_counter()
        tasks = [ids[k % len(ids)] for k in range(episodes)]
        results = await asyncio.gather(*(episode(service, t) for t in tasks))
        seconds = time.perf_counter() - start
    steps = sum(r[0] for r in results)
    return {
        "episodes": episodes,
        "steps": steps,
        "success_rate": sum(r[1] for r in results) / episodes,
        "seconds": seconds,
        "steps_per_s": steps / seconds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--episodes", type=int, default=256, help="concurrent sessions")
    parser.add_argument("--sessions", type=int, default=1000, help="sessions for memory")
    parser.add_argument("--sizes", type=int, nargs="+", default=list(SIZES))
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    console = Console()

    builds = [child(BUILD_CHILD, str(n)) for n in args.sizes]
    table = Table(
        "products", "generate s", "index build s", "index reopen s", "search ms", "peak RSS MB",
        title="catalogue + BM25 index (fresh process each)",
    )  # fmt: skip
    for b in builds:
        table.add_row(
            f"{b['products']:,}", f"{b['generate_s']:.2f}", f"{b['index_build_s']:.2f}",
            f"{b['index_reopen_s']:.3f}", f"{b['search_ms']:.1f}", f"{b['peak_rss_mb']:.0f}",
        )  # fmt: skip
    console.print(table)

    rows = {name: asyncio.run(run_mode(service, args.episodes)) for name, service in MODES.items()}
    baseline = rows["in-process"]["steps_per_s"]
    table = Table(
        "service", "episodes", "steps", "steps/s", "× in-process", "expert success",
        title=f"webshop-v0, {args.episodes} concurrent sessions (1k products)",
    )  # fmt: skip
    for name, r in rows.items():
        r["x_in_process"] = r["steps_per_s"] / baseline
        table.add_row(
            name, str(r["episodes"]), str(r["steps"]), f"{r['steps_per_s']:,.0f}",
            f"{r['x_in_process']:.2f}", f"{r['success_rate']:.1%}",
        )  # fmt: skip
    console.print(table)

    memory = child(SESSION_CHILD, str(args.sessions))
    console.print(
        f"memory: {memory['kb_per_session']:.1f} KiB per session "
        f"({memory['sessions']} sessions, RSS {memory['rss_before_mb']:.0f} → "
        f"{memory['rss_after_mb']:.0f} MB)"
    )
    report = {"machine": machine(), "build": builds, "modes": rows, "memory": memory}
    console.print(f"wrote {write_report(args.out, report)}")


if __name__ == "__main__":
    main()
