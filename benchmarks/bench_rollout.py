"""Rollouts of uneven episodes: lock-step vs the RolloutEngine over static and continuous batching.

Five loops play the same episodes with the same HF policy weights, in one process, on each of
two model sizes (:data:`MODELS`: the tests' ``tiny`` model, whose forward pass costs about the
same for 1 or 64 rows, and a ``wide`` one whose compute grows with the rows):

- ``lock-step``: the loop many RL stacks run. Every turn, generate for the whole batch (finished
  episodes included, as padding rows that keep generating), then step every env and wait for the
  slowest before the next turn.
- ``engine, static``: our RolloutEngine (one coroutine per episode) over
  ``HFPolicy(scheduling="static")``: requests are coalesced into lock-step batches, and a batch
  hands back its completions when its longest row has finished.
- ``engine, continuous``: the RolloutEngine over ``HFPolicy(scheduling="continuous")`` (the
  default): a finished row is handed back at once and waiting requests join the running batch
  between decode steps.
- ``engine, continuous, not batch-invariant``: the same with ``batch_invariant=False`` (plain
  masked SDPA instead of one attention call per differently padded row: faster, but a row's
  bits then depend on its batch-mates), to show what batch invariance costs.
- ``engine, continuous, prefix cache``: continuous batching with ``prefix_cache_mib=256``: each
  turn's prompt reuses the keys and values of its episode's previous turn and prefills only the
  new tokens.

Episodes last ``1 + seed % max_len`` turns and every tool call takes ``--tool-ms``. Three
workloads: ``uneven turns`` (actions of ``--max-tokens`` tokens; the random tiny model rarely
samples eos) and ``uneven turns and actions``, where the env's stop string ``--stop`` also ends
an action (on the random tiny model the first ``v`` comes after a geometric number of tokens,
median ~14, capped by ``--uneven-max-tokens``), as real agents' actions end at uneven points;
and the same with ``--obs-words`` words of tool output per step, so contexts grow by a long
observation every turn (as with search results, files or test logs).
Reported: wall time (best of ``--repeats``, interleaved; every sample is in the JSON), generated
tokens/s, the speed-up over lock-step, generated and wasted tokens (generated for episodes that
had already finished).

The head-of-line probe sends a 2-token request together with a 600-token one and times the
short one's completion under both schedulings (and the request alone).

    python benchmarks/bench_rollout.py [--episodes 64] [--max-len 6] [--tool-ms 20] [--models tiny wide]
    python benchmarks/bench_rollout.py --device cuda --threads 4
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any

import torch
from report import machine, write_report
from rich.console import Console
from rich.table import Table

import agentenv
from agentenv.env import TextEnv
from agentenv.models import tiny
from agentenv.policies.base import Completion, SamplingParams
from agentenv.policies.hf import HFPolicy
from agentenv.rollout import (
    EpisodeRequest,
    RolloutConfig,
    RolloutEngine,
    between_turns_ids,
    prompt_ids,
)

ENV_ID = "uneven-bench-v0"


class UnevenEnv(TextEnv):
    """An episode of ``1 + seed % max_len`` turns whose every step costs ``tool_ms`` and returns
    ``obs_words`` words of tool output; an action also ends at the first of ``stop`` (none by
    default)."""

    def __init__(
        self,
        max_len: int = 6,
        tool_ms: float = 20.0,
        stop: tuple[str, ...] = (),
        obs_words: int = 0,
        render_mode: str | None = None,
    ) -> None:
        super().__init__(render_mode)
        self.max_len, self.tool_ms = max_len, tool_ms
        self.stop_strings = tuple(stop)
        self.observation = " ".join(["tool output", *(f"line{i}" for i in range(obs_words))])

    async def _areset(self, *, seed, options):
        self.length = 1 + (seed or 0) % self.max_len
        return "begin", {"task_id": str(seed), "system_prompt": "act"}

    async def _astep(self, action):
        await asyncio.sleep(self.tool_ms / 1000)
        done = self.turn + 1 >= self.length
        return self.observation, float(done), done, False, {"success": done}


agentenv.register(ENV_ID, f"{__name__}:UnevenEnv")

Loop = Callable[[HFPolicy, list[int], dict[str, Any], int], Awaitable[dict[str, int]]]


async def lockstep(
    policy: HFPolicy, seeds: list[int], env_kwargs: dict[str, Any], max_tokens: int
) -> dict[str, int]:
    """Generate for the whole batch every turn; step all envs; barrier; repeat."""
    tok = policy.tokenizer
    envs = [agentenv.make(ENV_ID, **env_kwargs) for _ in seeds]
    resets = await asyncio.gather(*(e.areset(seed=s) for e, s in zip(envs, seeds, strict=True)))
    contexts = [prompt_ids(tok, info["system_prompt"], obs) for obs, info in resets]
    active = [True] * len(envs)
    stop = tuple(env_kwargs.get("stop", ()))
    generated = wasted = 0
    while any(active):
        sampling = SamplingParams(max_tokens=max_tokens, temperature=1.0, stop=stop, seed=0)
        completions = await policy.generate(contexts, sampling)
        for i, c in enumerate(completions):
            generated += len(c.token_ids)
            wasted += 0 if active[i] else len(c.token_ids)
            contexts[i] = contexts[i] + c.token_ids

        async def step(i: int, completion: Completion) -> None:
            obs, _, term, trunc, _ = await envs[i].astep(completion.text)
            if term or trunc:
                active[i] = False
            else:
                contexts[i] += between_turns_ids(tok, obs, completion)

        await asyncio.gather(*(step(i, c) for i, c in enumerate(completions) if active[i]))
    return {"generated": generated, "wasted": wasted}


async def engine_run(
    policy: HFPolicy, seeds: list[int], env_kwargs: dict[str, Any], max_tokens: int
) -> dict[str, int]:
    """The RolloutEngine: one coroutine per episode, no barrier (a prefix cache starts empty)."""
    if policy.prefix_cache is not None:
        policy.prefix_cache.clear()
    engine = RolloutEngine(policy, RolloutConfig(max_tokens_per_turn=max_tokens, temperature=1.0))
    requests = [EpisodeRequest(ENV_ID, s, env_kwargs=env_kwargs, sample_seed=s) for s in seeds]
    trajs = await engine.run(requests)
    assert all(t.status == "done" for t in trajs)
    return {"generated": engine.generated_tokens, "wasted": 0}


def timed(loop: Loop, *args: Any) -> tuple[float, dict[str, int]]:
    start = time.perf_counter()
    out = asyncio.run(loop(*args))
    return time.perf_counter() - start, out


def workload_rows(
    loops: dict[str, tuple[Loop, HFPolicy]],
    seeds: list[int],
    env_kwargs: dict[str, Any],
    max_tokens: int,
    repeats: int,
) -> list[dict[str, Any]]:
    """Best-of-``repeats`` wall time (the machine may be shared: other processes only ever add
    time), tokens/s and speed-up over lock-step of every loop on one workload."""
    times: dict[str, list[float]] = {name: [] for name in loops}
    counts: dict[str, dict[str, int]] = {}
    for _ in range(repeats):  # interleaved, so drift hits every loop alike
        for name, (loop, policy) in loops.items():
            seconds, counts[name] = timed(loop, policy, seeds, env_kwargs, max_tokens)
            times[name].append(seconds)
    base = min(times["lock-step"])
    rows = []
    for name, samples in times.items():
        wall = min(samples)
        rows.append(
            {
                "loop": name,
                "wall_seconds": wall,
                "wall_samples": samples,
                "tokens_per_s": counts[name]["generated"] / wall,
                "speedup": base / wall,
                **counts[name],
            }
        )
    return rows


async def head_of_line_once(policy: HFPolicy, prompt: list[int], long_tokens: int) -> dict:
    """Seconds to the completion of a 2-token request sent with a ``long_tokens`` one."""
    start = time.perf_counter()
    done: dict[str, float] = {}

    async def request(name: str, tokens: int) -> None:
        await policy.generate([prompt], SamplingParams(max_tokens=tokens, seed=1))
        done[name] = time.perf_counter() - start

    await asyncio.gather(request("long", long_tokens), request("short", 2))
    return done


def head_of_line(
    policies: dict[str, HFPolicy], prompt: list[int], long_tokens: int, repeats: int
) -> list[dict[str, Any]]:
    """The probe under each scheduling, best of ``repeats`` (eos off, so the long row runs its
    full length)."""
    rows = []
    for name, policy in policies.items():
        eos, policy.eos_token_ids = policy.eos_token_ids, {len(policy.tokenizer)}
        runs = [asyncio.run(head_of_line_once(policy, prompt, long_tokens)) for _ in range(repeats)]
        alone = [asyncio.run(head_of_line_once(policy, prompt, 0)) for _ in range(repeats)]
        policy.eos_token_ids = eos
        rows.append(
            {
                "scheduling": name,
                "short_alone_seconds": min(r["short"] for r in alone),
                "short_seconds": min(r["short"] for r in runs),
                "long_seconds": min(r["long"] for r in runs),
            }
        )
    return rows


def _table(title: str, columns: Sequence[str], rows: Iterable[Sequence[str]]) -> Table:
    table = Table(title=title)
    for col in columns:
        table.add_column(col, justify="right")
    for row in rows:
        table.add_row(*row)
    return table


def print_tables(result: dict[str, Any]) -> None:
    console = Console(width=110)
    config = result["config"]
    for model in result["models"]:
        for workload in model["workloads"]:
            title = (
                f"{model['model']} model, {workload['name']}: {config['episodes']} episodes "
                f"of 1..{config['max_len']} turns, tool {config['tool_ms']:g} ms, "
                f"≤{workload['max_tokens']} tokens per action"
            )
            columns = ("loop", "wall s (best)", "tokens/s", "× lock-step", "generated", "wasted")
            rows = (
                (
                    row["loop"],
                    f"{row['wall_seconds']:.2f}",
                    f"{row['tokens_per_s']:.0f}",
                    f"{row['speedup']:.2f}×",
                    str(row["generated"]),
                    str(row["wasted"]),
                )
                for row in workload["rows"]
            )
            console.print(_table(title, columns, rows))
        if "head_of_line" in model:
            title = (
                f"{model['model']} model, head-of-line: 2-token request sent with a "
                f"{config['long_tokens']}-token one"
            )
            rows = (
                (
                    row["scheduling"],
                    f"{row['short_alone_seconds']:.3f}",
                    f"{row['short_seconds']:.3f}",
                    f"{row['long_seconds']:.3f}",
                )
                for row in model["head_of_line"]
            )
            columns = ("scheduling", "short alone s", "short s", "long s")
            console.print(_table(title, columns, rows))


MODELS = {
    "tiny": {"hidden_size": 64, "intermediate_size": 128, "num_layers": 2},
    "wide": {
        "hidden_size": 256,
        "intermediate_size": 1024,
        "num_layers": 4,
        "num_heads": 8,
        "num_kv_heads": 4,
    },
}
"""Model sizes the benchmark runs: ``tiny`` (the tests' model, whose forward pass costs about the
same for 1 or 64 rows: per-call overhead) and ``wide`` (compute grows with the rows, as for any
real policy)."""


def policies(model: str, device: str, episodes: int) -> dict[str, HFPolicy]:
    """The three HFPolicy variants over one copy of ``model``'s weights."""
    continuous = HFPolicy.from_pretrained(
        tiny(**MODELS[model]), device=device, max_batch_size=episodes, scheduling="continuous"
    )
    static = HFPolicy(
        continuous.model, continuous.tokenizer, max_batch_size=episodes, scheduling="static"
    )
    variant = HFPolicy(
        continuous.model, continuous.tokenizer, max_batch_size=episodes, batch_invariant=False
    )
    cached = HFPolicy(
        continuous.model, continuous.tokenizer, max_batch_size=episodes, prefix_cache_mib=256
    )
    return {
        "continuous": continuous,
        "static": static,
        "not batch-invariant": variant,
        "prefix cache": cached,
    }


def model_result(model: str, args: argparse.Namespace, probe: bool) -> dict[str, Any]:
    """Every workload on ``model`` (and the head-of-line probe when ``probe``)."""
    variants = policies(model, args.device, args.episodes)
    continuous, static = variants["continuous"], variants["static"]
    loops: dict[str, tuple[Loop, HFPolicy]] = {
        "lock-step": (lockstep, static),
        "engine, static": (engine_run, static),
        "engine, continuous": (engine_run, continuous),
        "engine, continuous, not batch-invariant": (engine_run, variants["not batch-invariant"]),
        "engine, continuous, prefix cache": (engine_run, variants["prefix cache"]),
    }
    seeds = list(range(args.episodes))
    base = {"max_len": args.max_len, "tool_ms": args.tool_ms}
    workloads = [
        ("uneven turns", base, args.max_tokens),
        ("uneven turns and actions", {**base, "stop": (args.stop,)}, args.uneven_max_tokens),
        (
            f"uneven turns and actions, {args.obs_words}-word tool outputs",
            {**base, "stop": (args.stop,), "obs_words": args.obs_words},
            args.uneven_max_tokens,
        ),
    ]
    timed(engine_run, continuous, seeds[:4], base, 4)  # warm-up (allocator, kernels)
    result: dict[str, Any] = {
        "model": model,
        "model_config": MODELS[model],
        "load_average_at_start": os.getloadavg(),
        "workloads": [
            {
                "name": name,
                "env_kwargs": kwargs,
                "max_tokens": tokens,
                "rows": workload_rows(loops, seeds, kwargs, tokens, args.repeats),
            }
            for name, kwargs, tokens in workloads
        ],
    }
    if probe:
        prompt = prompt_ids(continuous.tokenizer, "act", "begin")
        schedulings = {"static": static, "continuous": continuous}
        result["head_of_line"] = head_of_line(schedulings, prompt, args.long_tokens, args.repeats)
    for policy in variants.values():
        policy.close()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--episodes", type=int, default=64)
    parser.add_argument("--max-len", type=int, default=6)
    parser.add_argument("--tool-ms", type=float, default=20.0)
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--stop", default="v", help="stop string of the uneven-actions workload")
    parser.add_argument("--uneven-max-tokens", type=int, default=64)
    parser.add_argument(
        "--obs-words", type=int, default=60, help="tool output of the long-observations workload"
    )
    parser.add_argument("--long-tokens", type=int, default=600, help="head-of-line probe")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--models", nargs="+", choices=sorted(MODELS), default=["tiny", "wide"])
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--threads", type=int, default=None, help="torch CPU threads (default 1 on CPU)"
    )
    parser.add_argument("--out", default="benchmarks/results/rollout.json")
    args = parser.parse_args()
    if args.threads is None and args.device == "cpu":
        args.threads = 1
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    result: dict[str, Any] = {
        "config": vars(args),
        "device": args.device,
        "torch_threads": torch.get_num_threads(),
        "models": [model_result(m, args, probe=i == 0) for i, m in enumerate(args.models)],
        "machine": machine(),
    }
    print_tables(result)
    print(f"wrote {write_report(args.out, result)}")


if __name__ == "__main__":
    main()
