"""The checks of tests/scale/test_ray.py, run inside a loopback-only network namespace that holds a
two-node Ray cluster: ``python ray_cluster_checks.py ADDRESS WORKDIR [--swe]``.

Each check runs through the public API (``agentenv eval --ray`` as a command,
:class:`~agentenv.scale.ray.RayFanout`, :func:`agentenv.train.train` with a ``ray:`` section)
and records what it saw in ``WORKDIR/results.json`` (rewritten after every check, so what ran is
kept if a later check hangs); the test asserts on that file. A check that raises records its
traceback under ``"error"``.
"""

from __future__ import annotations

import asyncio
import copy
import json
import os
import signal
import subprocess
import sys
import time
import traceback
from pathlib import Path

import ray
import torch
import yaml

from agentenv.evaluate import Suite, SuiteEntry, evaluate
from agentenv.models import tiny
from agentenv.policies.hf import HFPolicy
from agentenv.policies.specs import load_policy
from agentenv.rollout import RolloutConfig, RolloutEngine, group_requests
from agentenv.runfiles import RESULTS, eval_trajectories_name
from agentenv.scale.ray import RETRIED, WORKER, PolicySource, RayFanout
from agentenv.train import train
from agentenv.train.config import load_config
from agentenv.train.episodes import eval_requests, probe_envs, rollout_config
from agentenv.train.learner import with_lora
from agentenv.train.metrics import read_metrics
from agentenv.trajectory import read_jsonl

ADDRESS, WORK = sys.argv[1], Path(sys.argv[2])
WITH_SWE = "--swe" in sys.argv[3:]
ACTOR_TITLES = ("ray::RolloutWorker", "ray::ServiceActor", "ray::ServiceDirectory")
TIMING = ("seconds", "gen_seconds", "env_seconds", "worker")
SEARCH = {"num_entities": 40, "max_hops": 2}
results: dict[str, dict] = {}


def check(name):
    def run(fn):
        t0 = time.perf_counter()
        try:
            results[name] = fn()
        except BaseException:
            results[name] = {"error": traceback.format_exc()}
        results[name]["wall_s"] = time.perf_counter() - t0
        (WORK / "results.json").write_text(json.dumps(results, indent=1, default=str))
        return fn

    return run


def processes() -> list[str]:
    """Command lines of every process of this (pid) namespace."""
    out = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True, check=True)
    return out.stdout.splitlines()[1:]


def our_actors() -> list[str]:
    return [p for p in processes() if p.startswith(ACTOR_TITLES)]


def raylets() -> int:
    return sum("/raylet " in p or p.endswith("/raylet") for p in processes())


def wait_until(condition, seconds: float = 90.0) -> bool:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True


def agentenv(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "agentenv", *args], capture_output=True, text=True, **kwargs
    )


def rows(folder: Path) -> list[dict]:
    found = [json.loads(line) for line in (folder / RESULTS).read_text().splitlines()]
    return sorted(found, key=lambda r: (r["env"], r["seed"], r["sample"]))


def comparable(row: dict) -> dict:
    return {k: v for k, v in row.items() if k not in TIMING}


def nodes() -> list[str]:
    return sorted(n["NodeID"] for n in ray.nodes() if n["Alive"])


ray.init(address=ADDRESS, log_to_driver=False, logging_level="WARNING")
results["cluster"] = {"nodes": nodes(), "raylets": raylets()}


@check("suite")
def _suite():
    """Every env family through ``agentenv eval --ray``, and the same suite without Ray."""
    envs = [
        {"env": "search-v0", "kwargs": SEARCH, "n": 6},
        {"env": "tooluse-v0", "n": 3},
        {"env": "webshop-v0", "n": 3},
    ]
    if WITH_SWE:
        envs.append({"env": "swe-v0", "n": 2})
    suite = WORK / "suite.yaml"
    suite.write_text(yaml.safe_dump({"name": "families", "envs": envs}))
    command = ["eval", "--suite", str(suite), "--policy", "expert", "--ray", ADDRESS]
    with_ray = agentenv(*command, "--out", str(WORK / "eval-ray"), timeout=300)
    out = {
        "returncode": with_ray.returncode,
        "stderr": with_ray.stderr[-3000:],
        "actors_after": wait_until(lambda: not our_actors(), 60) or our_actors(),
    }
    plain = asyncio.run(
        evaluate(
            load_policy("expert"),
            Suite("search", [SuiteEntry("search-v0", SEARCH, n=6)]),
            out_dir=WORK / "eval-plain",
            progress=False,
        )
    )
    plain_rows = rows(WORK / "eval-plain")
    out["plain_has_worker"] = any("worker" in r for r in plain_rows)
    if with_ray.returncode == 0:
        ray_rows = rows(WORK / "eval-ray")
        out["envs"] = {
            env["env"]: {
                "episodes": sum(r["env"] == env["env"] for r in ray_rows),
                "statuses": sorted({r["status"] for r in ray_rows if r["env"] == env["env"]}),
                "success": sum(r["success"] for r in ray_rows if r["env"] == env["env"]),
                "nodes": sorted({r["worker"]["node"] for r in ray_rows if r["env"] == env["env"]}),
            }
            for env in envs
        }
        out["nodes"] = sorted({r["worker"]["node"] for r in ray_rows})
        out["search_same_as_plain"] = [
            comparable(r) for r in ray_rows if r["env"] == "search-v0"
        ] == [comparable(r) for r in plain_rows]
        out["plain_success"] = plain.summaries[0].success_rate
    return out


@check("failures")
def _failures():
    """A service actor and then a rollout worker killed mid-run (expert on search-v0)."""
    out: dict = {}
    requests = group_requests("search-v0", range(1_000_000, 1_000_030), 1, SEARCH, split="test")
    config = RolloutConfig(max_concurrent_episodes=3)
    expert = load_policy("expert")
    plain = asyncio.run(RolloutEngine(expert, config).run(requests))
    with RayFanout(ADDRESS, workers=2, service_replicas=2, max_retries=1) as fanout:
        fanout.start(PolicySource("expert"))
        engine = fanout.engine(expert, config)

        async def service_killed() -> None:
            await engine.run(requests[:4])  # the service actors start on first use
            before = await fanout.services()
            victim = before[0]
            killed: list[str] = []

            def kill_once(_):
                if not killed:
                    killed.append(victim["url"])
                    ray.kill(victim["actor"])

            played = await engine.run(requests, on_episode=kill_once)
            deadline = time.monotonic() + 90
            while time.monotonic() < deadline:
                after = await fanout.services()
                if any(s["restarts"] for s in after):
                    break
                await asyncio.sleep(0.2)
            again = await engine.run(requests[:6])
            out["service"] = {
                "victim": victim["url"],
                "before": sorted(s["url"] for s in before),
                "after": sorted(s["url"] for s in after),
                "restarts": [s["restarts"] for s in after],
                "ids_in_order": [t.traj_id for t in played] == [r.traj_id for r in requests],
                "statuses": [t.status for t in played],
                "error_reasons": [t.reason for t in played if t.status == "error"],
                "again_statuses": [t.status for t in again],
            }

        async def worker_killed() -> None:
            doomed = fanout.workers[1]
            killed: list[str] = []

            def kill_once(_):
                if not killed:
                    killed.append(doomed.name)
                    ray.kill(doomed.handle)

            played = await engine.run(requests, on_episode=kill_once)
            out["worker"] = {
                "doomed": doomed.name,
                "dead": [w.name for w in fanout.workers if w.dead],
                "ids_in_order": [t.traj_id for t in played] == [r.traj_id for r in requests],
                "statuses": [t.status for t in played],
                "retried": [t.metadata.get(RETRIED) for t in played if RETRIED in t.metadata],
                "played_by": sorted({t.metadata[WORKER]["name"] for t in played}),
                "error_reasons": [t.reason for t in played if t.status == "error"],
                "same_as_plain": [(t.traj_id, t.reward, t.token_ids) for t in played]
                == [(t.traj_id, t.reward, t.token_ids) for t in plain],
            }

        asyncio.run(service_killed())
        asyncio.run(worker_killed())
    out["actors_after_close"] = wait_until(lambda: not our_actors(), 60) or our_actors()
    return out


@check("weights")
def _weights():
    """New weights reach in-worker policies: a full state_dict, then a LoRA adapter."""
    folder = tiny()
    requests = group_requests("search-v0", range(8), 1, SEARCH)
    config = RolloutConfig(max_tokens_per_turn=12, max_context_tokens=512)
    local = HFPolicy.from_pretrained(folder)

    def tokens(trajectories):
        return [(t.token_ids, t.logprobs) for t in trajectories]

    async def play_local():
        return tokens(await RolloutEngine(local, config).run(requests))

    out: dict = {}
    with RayFanout(ADDRESS, workers=1) as fanout:
        fanout.start(PolicySource.shipped(folder))
        engine = fanout.engine(local, config)
        base = asyncio.run(play_local())
        out["base_equal"] = tokens(asyncio.run(engine.run(requests))) == base
        with torch.no_grad():
            for p in local.model.parameters():
                p.add_(torch.randn_like(p) * 0.05)
        out["state_dict_push"] = asyncio.run(fanout.push(local.model, 1))
        shifted = asyncio.run(play_local())
        out["state_dict_changed"] = shifted != base
        out["state_dict_equal"] = tokens(asyncio.run(engine.run(requests))) == shifted
        cfg = load_config(None, ["model.lora.enabled=true", "model.lora.r=4"])
        adapted = with_lora(copy.deepcopy(local.model), cfg)
        with torch.no_grad():
            for name, p in adapted.named_parameters():
                if "lora_B" in name:
                    p.add_(torch.randn_like(p) * 0.5)
        out["lora_push"] = asyncio.run(fanout.push(adapted, 2))
        adapter = WORK / "adapter"
        adapted.save_pretrained(adapter)
        local.load_lora_adapter("check", adapter)
        with_adapter = asyncio.run(play_local())
        out["lora_changed"] = with_adapter != shifted
        out["lora_equal"] = tokens(asyncio.run(engine.run(requests))) == with_adapter
    local.close()
    return out


@check("train")
def _train():
    """One RL step through agentenv.train.train with a ray section; the held-out evaluation at
    the end is replayed locally on the exported model and must match token for token."""
    data = {
        "name": "ray",
        "output_dir": str(WORK / "runs"),
        "total_steps": 1,
        "model": {"spec": "tiny", "max_batch_size": 8},
        "envs": [{"id": "search-v0", "kwargs": SEARCH}],
        "rollout": {
            "group_size": 2,
            "tasks_per_step": 2,
            "max_tokens_per_turn": 12,
            "max_context_tokens": 512,
        },
        "optim": {"lr": 1e-3},
        "eval": {"tasks": 2, "at_start": False},
        "checkpoint": {"every": 0},
        "logging": {"live": False},
        "ray": {"address": ADDRESS, "workers": 2},
    }
    run_dir = train(data)
    cfg = load_config(run_dir / "config.yaml")
    step = read_metrics(run_dir, "train")
    rollouts = list(read_jsonl(run_dir / "rollouts.jsonl"))
    held_out = list(read_jsonl(run_dir / eval_trajectories_name(1)))
    policy = HFPolicy.from_pretrained(run_dir / "model")
    _, sources = asyncio.run(probe_envs(cfg))
    engine = RolloutEngine(policy, rollout_config(cfg, cfg.eval.temperature))
    replay = asyncio.run(engine.run(eval_requests(cfg, sources)))
    policy.close()
    return {
        "steps": [row["step"] for row in step],
        "sync_s": [row.get("sync_s") for row in step],
        "rollout_nodes": sorted({t.metadata[WORKER]["node"] for t in rollouts}),
        "rollout_statuses": sorted({t.status for t in rollouts}),
        "eval_nodes": sorted({t.metadata[WORKER]["node"] for t in held_out}),
        "eval_equal_replay": [(t.token_ids, t.logprobs) for t in held_out]
        == [(t.token_ids, t.logprobs) for t in replay],
        "summary": (run_dir / "summary.json").is_file(),
        "actors_after": wait_until(lambda: not our_actors(), 60) or our_actors(),
    }


@check("interrupt")
def _interrupt():
    """``agentenv eval --ray local`` interrupted (SIGINT, as Ctrl-C) while it plays: exit 130,
    its actors and the local cluster it started are gone."""
    before = raylets()
    proc = subprocess.Popen(
        [sys.executable, "-m", "agentenv", "eval", "--env", "search-v0", "--policy", "expert",
         "-n", "3000", "--ray", "local", "--ray-workers", "1", "--no-transcripts",
         "--env-arg", "num_entities=40"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    playing = wait_until(
        lambda: (
            any(p.startswith("ray::ServiceActor") for p in processes()) or proc.poll() is not None
        ),
        240,
    )
    during = {"raylets": raylets(), "actors": len(our_actors())}
    time.sleep(2.0)
    proc.send_signal(signal.SIGINT)
    try:
        _, stderr = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, stderr = proc.communicate()
    gone = wait_until(lambda: not our_actors() and raylets() == before, 60)
    return {
        "playing": playing,
        "during": during,
        "raylets_before": before,
        "returncode": proc.returncode,
        "stderr": stderr[-2000:],
        "cleaned_up": gone,
        "left": [p for p in processes() if p.startswith(ACTOR_TITLES) or "raylet" in p],
    }


ray.shutdown()
results["end"] = {"actors": our_actors(), "pid": os.getpid()}
(WORK / "results.json").write_text(json.dumps(results, indent=1, default=str))
