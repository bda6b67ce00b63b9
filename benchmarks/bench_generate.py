"""HFPolicy generation throughput: coalesced batches vs one request at a time.

Baseline: the same requests awaited one after another (each a batch of one). Coalesced: all
requests in flight at once, grouped by HFPolicy into batches of up to B rows. Reported per B:
generated tokens/s and the ratio to the baseline measured in the same process.

With ``--server`` the coalesced runs also go through ``serve-policy`` (a uvicorn subprocess on
127.0.0.1) via OpenAIPolicy, so HTTP and JSON overheads show up in the table.

    python benchmarks/bench_generate.py                      # CPU, tiny model
    python benchmarks/bench_generate.py --device cuda --shape qwen2.5-0.5b --server
        # randomly initialised Qwen2.5-0.5B-shaped model, batch sizes 1..256 (needs a GPU)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.table import Table

from agentenv.devices import resolve_dtype
from agentenv.launch import LocalServer
from agentenv.models import tiny
from agentenv.policies.base import SamplingParams
from agentenv.policies.hf import HFPolicy
from agentenv.policies.openai import OpenAIPolicy

SHAPES: dict[str, dict[str, Any]] = {
    "tiny": {},
    "qwen2.5-0.5b": {
        "hidden_size": 896,
        "intermediate_size": 4864,
        "num_hidden_layers": 24,
        "num_attention_heads": 14,
        "num_key_value_heads": 2,
        "vocab_size": 151936,
        "max_position_embeddings": 32768,
        "rope_theta": 1000000.0,
        "tie_word_embeddings": True,
    },
}


def model_folder(shape: str, device: str, workdir: Path) -> Path:
    """The tiny model folder, or a randomly initialised model of ``shape`` saved to ``workdir``."""
    path = tiny()
    if shape == "tiny":
        return path
    from transformers import AutoModelForCausalLM, AutoTokenizer, Qwen2Config

    tokenizer = AutoTokenizer.from_pretrained(path)
    config = Qwen2Config(
        **SHAPES[shape],
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, dtype=resolve_dtype("auto", device))
    out = workdir / shape
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def prompts_for(tokenizer: Any, count: int) -> list[list[int]]:
    return [
        tokenizer.apply_chat_template(
            [{"role": "user", "content": f"Question {i}: which river runs through city {i}?"}],
            add_generation_prompt=True,
            return_dict=False,
        )
        for i in range(count)
    ]


async def timed(
    policy: Any, prompts: list[list[int]], sampling: SamplingParams, serial: bool, repeats: int = 1
) -> tuple[int, float]:
    """Generated tokens and the fastest of ``repeats`` wall times (the machine may be shared)."""
    runs = [await _timed_once(policy, prompts, sampling, serial) for _ in range(repeats)]
    return runs[0][0], min(seconds for _, seconds in runs)


async def _timed_once(policy, prompts, sampling, serial) -> tuple[int, float]:
    start = time.perf_counter()
    if serial:
        completions = [(await policy.generate([p], sampling))[0] for p in prompts]
    else:
        results = await asyncio.gather(*(policy.generate([p], sampling) for p in prompts))
        completions = [r[0] for r in results]
    seconds = time.perf_counter() - start
    tokens = sum(len(c.token_ids) for c in completions)
    return tokens, seconds


async def run(args: argparse.Namespace) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="bench-generate-"))
    folder = model_folder(args.shape, args.device, workdir)
    sampling = SamplingParams(max_tokens=args.max_tokens, temperature=1.0, seed=0)
    rows: list[dict[str, Any]] = []
    largest = max(args.batch_sizes)
    policy = HFPolicy.from_pretrained(folder, device=args.device, max_batch_size=largest)
    prompts_all = prompts_for(policy.tokenizer, max(args.requests, largest))
    # warm-up (allocator, kernels), then the one-at-a-time baseline
    await timed(policy, prompts_all[:2], sampling, serial=False)
    base_prompts = prompts_all[: args.baseline_requests]
    tokens, seconds = await timed(policy, base_prompts, sampling, True, args.repeats)
    baseline = tokens / seconds
    rows.append(dict(mode="one at a time", batch=1, requests=len(base_prompts),
                     tokens=tokens, seconds=seconds, tokens_per_s=baseline, ratio=1.0))  # fmt: skip
    for batch in args.batch_sizes:
        policy.max_batch_size = batch
        requests = max(args.requests, batch)
        policy.reset_stats()
        tokens, seconds = await timed(policy, prompts_all[:requests], sampling, False, args.repeats)
        rows.append(dict(mode="coalesced", batch=batch, requests=requests, tokens=tokens,
                         seconds=seconds, tokens_per_s=tokens / seconds,
                         ratio=tokens / seconds / baseline, batches=policy.stats.batches))  # fmt: skip
    policy.close()
    if args.server:
        rows += await through_server(folder, args, prompts_all, sampling, baseline)
    return {
        "device": args.device,
        "device_name": torch.cuda.get_device_name()
        if args.device == "cuda"
        else platform.processor(),
        "shape": args.shape,
        "max_tokens": args.max_tokens,
        "repeats": args.repeats,
        "torch_threads": torch.get_num_threads(),
        "load_average_1min": os.getloadavg()[0],
        "rows": rows,
    }


async def through_server(folder, args, prompts_all, sampling, baseline) -> list[dict[str, Any]]:
    rows = []
    for batch in args.batch_sizes:
        config = {"spec": str(folder), "device": args.device, "max_batch_size": batch}
        with LocalServer("agentenv.policies.server:create_app_from_spec", config) as server:
            remote = OpenAIPolicy(server.url, folder.name, max_concurrency=batch)
            requests = max(args.requests, batch)
            await timed(remote, prompts_all[:2], sampling, serial=False)
            tokens, seconds = await timed(
                remote, prompts_all[:requests], sampling, False, args.repeats
            )
            await remote.aclose()
        rows.append(dict(mode="serve-policy", batch=batch, requests=requests, tokens=tokens,
                         seconds=seconds, tokens_per_s=tokens / seconds,
                         ratio=tokens / seconds / baseline))  # fmt: skip
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--shape", choices=list(SHAPES), default="tiny")
    parser.add_argument(
        "--batch-sizes", type=lambda s: [int(x) for x in s.split(",")], default=None
    )
    parser.add_argument("--requests", type=int, default=64, help="requests per coalesced run")
    parser.add_argument("--baseline-requests", type=int, default=16)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3, help="report the fastest of N runs")
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch CPU threads, also for the server (default 1 on CPU: a tiny model gains "
        "nothing from intra-op threads, which stall when other processes share the cores)",
    )
    parser.add_argument("--server", action="store_true", help="also measure through serve-policy")
    parser.add_argument("--out", type=Path, default=None, help="default: results/generate*.json")
    args = parser.parse_args()
    if args.out is None:
        suffix = (
            "" if (args.device, args.shape) == ("cpu", "tiny") else f"-{args.device}-{args.shape}"
        )
        args.out = Path(__file__).parent / "results" / f"generate{suffix}.json"
    if args.batch_sizes is None:
        gpu = args.device.startswith("cuda")
        args.batch_sizes = [1, 2, 4, 8, 16, 32, 64, 128, 256] if gpu else [4, 16, 64]
    if args.threads is None and args.device == "cpu":
        args.threads = 1
    if args.threads is not None:
        os.environ["OMP_NUM_THREADS"] = str(args.threads)
        torch.set_num_threads(args.threads)
    result = asyncio.run(run(args))
    table = Table(title=f"generation, {result['shape']} on {result['device']} "
                        f"({result['max_tokens']} new tokens per request)")  # fmt: skip
    for column in ("mode", "batch", "requests", "tokens", "seconds", "tokens/s", "× baseline"):
        table.add_column(column, justify="right")
    for row in result["rows"]:
        table.add_row(row["mode"], str(row["batch"]), str(row["requests"]), str(row["tokens"]),
                      f"{row['seconds']:.2f}", f"{row['tokens_per_s']:.0f}", f"{row['ratio']:.2f}")  # fmt: skip
    Console().print(table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
