"""What batch-invariant generation costs: HFPolicy before and after, on one machine.

Batch invariance (``agentenv.policies.hf``) has two parts, measured separately:

- MKL's strict reproducibility mode (``MKL_CBWR=AUTO,STRICT``), which makes a row of a matrix
  product independent of how many rows there are. MKL reads it once per process, so each setting
  runs in its own child process (the children alternate, the fastest of the repeats counts);
- row-wise attention over left padding (``HFPolicy(batch_invariant=...)``), compared in the same
  process.

Rows: ``before`` (MKL as it comes, SDPA over the padded batch: the old default), ``strict MKL``,
``batch-invariant`` (both: the new default on CPU). Columns: generated tokens/s of 64 concurrent
requests of mixed prompt lengths coalesced into batches of B rows, a forward+backward training
pass (MKL mode only), and what it buys: the largest difference of a probe row's logprobs between
generating it alone and inside a batch of 16 rows, of its own length (no padding: only the
number of rows changes) or of other lengths (padded).

    python benchmarks/bench_determinism.py                 # CPU, tiny model, 1 thread
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

MODES = {"before": ("AUTO", False), "strict MKL": ("AUTO,STRICT", False),
         "batch-invariant": ("AUTO,STRICT", True)}  # fmt: skip
"""Row name → (MKL_CBWR, HFPolicy batch_invariant)."""


def prompts_for(tokenizer: Any, count: int) -> list[list[int]]:
    """Chat prompts of different lengths, so batches are padded."""
    return [
        tokenizer.apply_chat_template(
            [{"role": "user", "content": f"Question {i}: which river runs through city {i}?"
              + " Think about it." * (i % 9)}],
            add_generation_prompt=True,
            return_dict=False,
        )
        for i in range(count)
    ]  # fmt: skip


async def throughput(policy: Any, prompts: list[list[int]], max_tokens: int) -> tuple[int, float]:
    """Generated tokens and seconds for ``prompts`` sent concurrently, one request each."""
    from agentenv.policies.base import SamplingParams

    sampling = SamplingParams(max_tokens=max_tokens, temperature=1.0, seed=0)
    start = time.perf_counter()
    results = await asyncio.gather(*(policy.generate([p], sampling) for p in prompts))
    return sum(len(r[0].token_ids) for r in results), time.perf_counter() - start


def probe_drift(policy: Any, probe: list[int], mates: list[list[int]]) -> float:
    """Max |Δ logprob| of a greedy probe row generated alone vs after ``mates`` in one batch."""
    from agentenv.policies.base import SamplingParams

    greedy = SamplingParams(max_tokens=24, temperature=0.0)
    (alone,) = policy.generate_batch(policy.make_requests([probe], greedy))
    batch = policy.generate_batch(policy.make_requests([*mates, probe], greedy))[-1]
    n = min(len(alone.logprobs), len(batch.logprobs))
    return max(abs(a - b) for a, b in zip(alone.logprobs[:n], batch.logprobs[:n], strict=True))


def train_pass_seconds(model: Any, repeats: int) -> float:
    """Fastest forward+backward of a 16 × 256-token batch (the trainer's matrix products)."""
    import torch

    trainee = copy.deepcopy(model).train()
    ids = torch.randint(0, trainee.config.vocab_size, (16, 256), generator=torch.Generator())
    best = float("inf")
    for _ in range(repeats + 1):
        start = time.perf_counter()
        trainee(input_ids=ids).logits.float().logsumexp(-1).mean().backward()
        best = min(best, time.perf_counter() - start)
    return best


def child(args: argparse.Namespace) -> dict[str, Any]:
    """Measure every mode of this process's MKL setting (``MKL_CBWR`` is set by the parent)."""
    import torch

    from agentenv.models import tiny
    from agentenv.policies.hf import HFPolicy

    torch.set_num_threads(args.threads)
    path = tiny()
    out: dict[str, Any] = {"train_pass_s": None, "modes": {}}
    for name, (mkl, invariant) in MODES.items():
        if mkl != os.environ["MKL_CBWR"]:
            continue
        policy = HFPolicy.from_pretrained(path, device="cpu", batch_invariant=invariant)
        prompts = prompts_for(policy.tokenizer, args.requests)
        asyncio.run(throughput(policy, prompts[:4], 4))  # warm-up
        rows = {}
        for batch in args.batch_sizes:
            policy.max_batch_size = batch
            tokens, seconds = asyncio.run(throughput(policy, prompts, args.max_tokens))
            rows[batch] = {"tokens": tokens, "seconds": seconds}
        drift = {
            "same_length": probe_drift(policy, prompts[0], [prompts[0]] * 15),
            "mixed_lengths": probe_drift(policy, prompts[0], prompts[1:16]),
        }
        out["modes"][name] = {"generation": rows, "drift": drift}
        out["train_pass_s"] = train_pass_seconds(policy.model, 5)
        policy.close()
    return out


def measure(args: argparse.Namespace) -> dict[str, Any]:
    """Alternate one child per MKL setting ``repeats`` times; keep each figure's best run."""
    best: dict[str, Any] = {}
    for _ in range(args.repeats):
        for mkl in dict.fromkeys(m for m, _ in MODES.values()):
            with tempfile.NamedTemporaryFile(suffix=".json") as result:
                command = [sys.executable, __file__, "--child", result.name, *args.passthrough]
                env = {**os.environ, "MKL_CBWR": mkl, "OMP_NUM_THREADS": str(args.threads)}
                subprocess.run(command, env=env, check=True)
                merge(best, json.loads(Path(result.name).read_text()))
    return best


def merge(best: dict[str, Any], run: dict[str, Any]) -> None:
    for name, mode in run["modes"].items():
        mode["train_pass_s"] = run["train_pass_s"]
        old = best.setdefault(name, mode)
        old["train_pass_s"] = min(old["train_pass_s"], mode["train_pass_s"])
        for batch, row in mode["generation"].items():
            if row["seconds"] < old["generation"][batch]["seconds"]:
                old["generation"][batch] = row


def report(best: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    from rich.console import Console
    from rich.table import Table

    base = best["before"]
    rows = []
    for name, mode in best.items():
        row: dict[str, Any] = {"mode": name, "mkl_cbwr": MODES[name][0],
                               "rowwise_attention": MODES[name][1],
                               "max_logprob_drift": mode["drift"],
                               "train_pass_s": mode["train_pass_s"],
                               "train_pass_ratio": mode["train_pass_s"] / base["train_pass_s"]}  # fmt: skip
        for batch, gen in mode["generation"].items():
            rate = gen["tokens"] / gen["seconds"]
            base_gen = base["generation"][batch]
            row[f"tokens_per_s_b{batch}"] = rate
            row[f"ratio_b{batch}"] = rate / (base_gen["tokens"] / base_gen["seconds"])
        rows.append(row)
    table = Table(title=f"batch-invariant generation, tiny model on CPU ({args.requests} requests "
                        f"× {args.max_tokens} tokens, {args.threads} thread)")  # fmt: skip
    for column in ("mode", *(f"tok/s B={b}" for b in args.batch_sizes), "train pass",
                   "|Δ logprob| same length", "|Δ logprob| mixed"):  # fmt: skip
        table.add_column(column, justify="right")
    for row in rows:
        cells = [f"{row[f'tokens_per_s_b{b}']:.0f} (×{row[f'ratio_b{b}']:.2f})"
                 for b in args.batch_sizes]  # fmt: skip
        table.add_row(row["mode"], *cells,
                      f"{row['train_pass_s'] * 1e3:.0f} ms (×{row['train_pass_ratio']:.2f})",
                      f"{row['max_logprob_drift']['same_length']:.1e}",
                      f"{row['max_logprob_drift']['mixed_lengths']:.1e}")  # fmt: skip
    Console(width=130).print(table)
    return {
        "device": "cpu",
        "cpu": platform.processor() or platform.machine(),
        "torch_threads": args.threads,
        "requests": args.requests,
        "max_tokens": args.max_tokens,
        "repeats": args.repeats,
        "load_average_1min": os.getloadavg()[0],
        "rows": rows,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=64)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument(
        "--batch-sizes", type=lambda s: [int(x) for x in s.split(",")], default=[16, 64]
    )
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads per child")
    parser.add_argument("--repeats", type=int, default=3, help="child runs per MKL setting")
    parser.add_argument("--child", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument(
        "--out", type=Path, default=Path(__file__).parent / "results" / "determinism.json"
    )
    args = parser.parse_args()
    if args.child is not None:
        args.child.write_text(json.dumps(child(args)))
        return
    args.passthrough = [
        f"--requests={args.requests}",
        f"--max-tokens={args.max_tokens}",
        f"--batch-sizes={','.join(map(str, args.batch_sizes))}",
        f"--threads={args.threads}",
    ]
    result = report(measure(args), args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
