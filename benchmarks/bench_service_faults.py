"""Local service launching and stalled-server failure, before and after one server per config
and the circuit breaker.

Measured, all in one run, with the scripted expert playing search-v0 through the RolloutEngine:

- (a) ``--episodes`` concurrent episodes with ``service="local"`` inside one ``service_scope()``:
  the peak number of service processes and their total RSS (sampled every 50 ms from /proc by a
  thread, so a blocked event loop cannot hide a peak), the longest event-loop stall (a 10 ms
  ticker's worst overshoot), the wall time, and the service processes left after the scope;
- (b) ``--stalled-episodes`` episodes against a local search server stopped with SIGSTOP: the wall
  time until every episode has failed, with the default per-call timeout, and how many failed
  without sending anything (the breaker was open).

"Before" is the same measurement at commit 0a42e81 (one private server per env, blocking start,
30 s timeout x 4 attempts, no breaker) on the same 2-CPU machine, kept in :data:`BEFORE`.

    python benchmarks/bench_service_faults.py [--episodes 30] [--stalled-episodes 128]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import tempfile
import threading
import time
from typing import Any

from report import machine, write_report
from rich.console import Console
from rich.table import Table

from agentenv.envs.search.env import SERVICE_FACTORY
from agentenv.envs.search.server import create_app
from agentenv.launch import LocalServer, service_scope
from agentenv.policies.scripted import ScriptedPolicy
from agentenv.retry import DEFAULT_TIMEOUT
from agentenv.rollout import EpisodeRequest, RolloutEngine

BEFORE = {
    "commit": "0a42e81",
    "local": {
        "episodes": 30,
        "processes": 30,
        "rss_bytes": 2_625_310_720,
        "max_loop_stall_s": 17.11,
        "wall_s": 22.93,
        "left_running": 0,
    },
    "stalled": {"episodes": 128, "wall_s": 242.87, "timeout_s": 30.0, "not_sent": 0},
}
SERVER_MARK = "agentenv.launch import main"  # in the command line of every LocalServer child


def service_pids() -> list[int]:
    """Pids of this process's LocalServer children."""
    me = str(os.getpid())
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                parent = f.read().rsplit(")", 1)[1].split()[1]
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                command = f.read().decode(errors="replace")
        except OSError:
            continue
        if parent == me and SERVER_MARK in command:
            pids.append(int(entry))
    return pids


def rss_bytes(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


class PeakSampler(threading.Thread):
    """The peak count and total RSS of the service processes while it runs."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.done = threading.Event()
        self.processes = 0
        self.rss = 0

    def run(self) -> None:
        while not self.done.is_set():
            pids = service_pids()
            self.processes = max(self.processes, len(pids))
            self.rss = max(self.rss, sum(map(rss_bytes, pids)))
            time.sleep(0.05)


async def stall_meter(worst: list[float]) -> None:
    """Record in ``worst[0]`` the longest a 10 ms sleep overslept (the event loop was blocked)."""
    while True:
        start = time.perf_counter()
        await asyncio.sleep(0.01)
        worst[0] = max(worst[0], time.perf_counter() - start - 0.01)


async def bench_local(policy: ScriptedPolicy, episodes: int) -> dict[str, Any]:
    sampler, worst = PeakSampler(), [0.0]
    sampler.start()
    meter = asyncio.create_task(stall_meter(worst))
    requests = [EpisodeRequest("search-v0", s, env_kwargs={"service": "local"}) for s in range(episodes)]  # fmt: skip
    start = time.perf_counter()
    async with service_scope():
        trajs = await RolloutEngine(policy).run(requests)
    wall = time.perf_counter() - start
    meter.cancel()
    sampler.done.set()
    sampler.join()
    return {
        "episodes": episodes,
        "done": sum(t.status != "error" for t in trajs),
        "processes": sampler.processes,
        "rss_bytes": sampler.rss,
        "max_loop_stall_s": worst[0],
        "wall_s": wall,
        "left_running": len(service_pids()),
    }


async def bench_stalled(policy: ScriptedPolicy, episodes: int) -> dict[str, Any]:
    server = LocalServer(SERVICE_FACTORY, {}).start()
    os.kill(server.process.pid, signal.SIGSTOP)
    requests = [EpisodeRequest("search-v0", s, env_kwargs={"service": server.url}) for s in range(episodes)]  # fmt: skip
    try:
        start = time.perf_counter()
        trajs = await RolloutEngine(policy).run(requests)
        wall = time.perf_counter() - start
    finally:
        server.stop()
    return {
        "episodes": episodes,
        "errors": sum(t.status == "error" for t in trajs),
        "not_sent": sum("not sent" in t.reason for t in trajs),
        "timeout_s": DEFAULT_TIMEOUT,
        "wall_s": wall,
        "example_reason": trajs[-1].reason,
    }


def table(local: dict[str, Any], stalled: dict[str, Any]) -> Table:
    before_local, before_stalled = BEFORE["local"], BEFORE["stalled"]
    out = Table(title="service faults: search-v0, scripted expert, RolloutEngine")
    for column in ("measure", f"before ({BEFORE['commit']})", "after"):
        out.add_column(column, justify="left" if column == "measure" else "right")
    rows = [
        (f"{local['episodes']} local episodes: service processes (peak)", "processes", "{:d}"),
        ("  their total RSS (peak)", "rss_bytes", "gb"),
        ("  longest event-loop stall", "max_loop_stall_s", "{:.2f} s"),
        ("  wall time", "wall_s", "{:.1f} s"),
        ("  service processes left after the run", "left_running", "{:d}"),
    ]
    for label, key, fmt in rows:
        out.add_row(label, *(_fmt(r[key], fmt) for r in (before_local, local)))
    out.add_row(
        f"{stalled['episodes']} episodes vs a SIGSTOPped server: wall time to fail all",
        f"{before_stalled['wall_s']:.1f} s",
        f"{stalled['wall_s']:.1f} s",
    )
    out.add_row(
        "  per-call timeout", f"{before_stalled['timeout_s']:g} s", f"{stalled['timeout_s']:g} s"
    )
    out.add_row(
        "  episodes failed without waiting (breaker open)",
        str(before_stalled["not_sent"]),
        str(stalled["not_sent"]),
    )
    return out


def _fmt(value: float, fmt: str) -> str:
    return f"{value / 1e9:.2f} GB" if fmt == "gb" else fmt.format(value)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=30)
    parser.add_argument("--stalled-episodes", type=int, default=128)
    parser.add_argument("--out", default="benchmarks/results/service_faults.json")
    args = parser.parse_args()

    console = Console(width=120)
    with tempfile.TemporaryDirectory() as cache:
        os.environ["AGENTENV_CACHE"] = cache  # the servers below open this index
        create_app()  # build the default world's index once, outside the measurements
        policy = ScriptedPolicy()
        console.print(f"(a) {args.episodes} episodes with service='local' ...")
        local = await bench_local(policy, args.episodes)
        console.print(f"(b) {args.stalled_episodes} episodes against a SIGSTOPped server ...")
        stalled = await bench_stalled(policy, args.stalled_episodes)
    console.print(table(local, stalled))

    report = {
        "machine": machine(),
        "args": vars(args),
        "before": BEFORE,
        "after": {"local": local, "stalled": stalled},
    }
    out = write_report(args.out, report)
    console.print(f"wrote {out}")


if __name__ == "__main__":
    asyncio.run(main())
