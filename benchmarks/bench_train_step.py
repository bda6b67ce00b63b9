"""One RL training step of a randomly initialised model: tokens/s, peak memory, phase times.

Builds a Qwen2.5-0.5B-shaped model (``--shape qwen0.5b``; random weights, no download) or the
tiny model (``--shape tiny``), makes a synthetic rollout batch (``--batch`` sequences of
``--length`` tokens, the second half of each loss-masked), and times a forward+backward+AdamW
step of the PPO-clip loss against the same step without the loss plumbing (plain cross-entropy)
as the in-process baseline, and the rollout phase that would produce such a batch: sampling
``--length // 2`` new tokens for every sequence with a KV cache (transformers' ``generate``).
Prints a table and writes JSON.

    python benchmarks/bench_train_step.py --shape tiny               # CPU
    python benchmarks/bench_train_step.py --shape qwen0.5b --batch 16 --length 1024   # GPU
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from agentenv.devices import resolve_device, resolve_dtype
from agentenv.train.losses import rl_loss, token_logprobs_and_entropy

SHAPES = {
    "tiny": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                 num_attention_heads=4, num_key_value_heads=2, vocab_size=1024),
    "qwen0.5b": dict(hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
                     num_attention_heads=14, num_key_value_heads=2, vocab_size=151936),
}  # fmt: skip


def build(shape: str, device: torch.device, dtype: torch.dtype) -> torch.nn.Module:
    from transformers import AutoModelForCausalLM, Qwen2Config

    config = Qwen2Config(**SHAPES[shape], max_position_embeddings=32768, tie_word_embeddings=True)
    return AutoModelForCausalLM.from_config(config, dtype=dtype).to(device)


def step(model, optimizer, ids, mask, rl: bool) -> None:
    logits = model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits
    logp, entropy = token_logprobs_and_entropy(logits, ids, with_entropy=rl)
    if rl:
        adv = torch.randn_like(logp)
        loss = rl_loss(logp, logp.detach(), adv, mask, entropy=entropy.detach()).loss
    else:
        loss = -(logp * mask).sum() / mask.sum()
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def timed(fn, device: torch.device, repeats: int) -> float:
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(repeats):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - t0) / repeats


def rollout(model, ids: torch.Tensor, new_tokens: int) -> None:
    """Sample exactly ``new_tokens`` tokens after the prompts ``ids`` (no stop token)."""
    with torch.no_grad():
        model.generate(
            input_ids=ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=new_tokens,
            min_new_tokens=new_tokens,
            do_sample=True,
            pad_token_id=0,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", choices=list(SHAPES), default="tiny")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--length", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default="bench_train_step.json")
    args = parser.parse_args()
    device = resolve_device("auto")
    dtype = resolve_dtype("auto", device)
    model = build(args.shape, device, dtype)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-6)
    vocab = SHAPES[args.shape]["vocab_size"]
    ids = torch.randint(0, vocab, (args.batch, args.length), device=device)
    mask = torch.zeros(args.batch, args.length, device=device)
    mask[:, args.length // 2 :] = 1
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    rl_s = timed(lambda: step(model, optimizer, ids, mask, True), device, args.repeats)
    ce_s = timed(lambda: step(model, optimizer, ids, mask, False), device, args.repeats)
    half = args.length // 2
    rollout_s = timed(lambda: rollout(model, ids[:, :half], half), device, 1)
    tokens = args.batch * args.length
    result = {
        "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
        "shape": args.shape,
        "params": sum(p.numel() for p in model.parameters()),
        "batch": args.batch,
        "length": args.length,
        "rl_step_s": rl_s,
        "ce_step_s": ce_s,
        "rl_tokens_per_s": tokens / rl_s,
        "ce_tokens_per_s": tokens / ce_s,
        "rl_over_ce_time": rl_s / ce_s,
        "rollout_s": rollout_s,
        "rollout_tokens_per_s": args.batch * half / rollout_s,
        "rollout_over_update_time": rollout_s / rl_s,
        "peak_memory_gb": torch.cuda.max_memory_allocated() / 2**30
        if device.type == "cuda"
        else None,
    }
    print(
        f"{'shape':<10}{'device':<24}{'tokens':>8}{'update s':>10}{'tok/s':>10}{'RL/CE':>7}"
        f"{'rollout s':>11}{'gen tok/s':>11}{'peak GiB':>10}"
    )
    peak = result["peak_memory_gb"]
    print(
        f"{args.shape:<10}{result['device'][:23]:<24}{tokens:>8}{rl_s:>10.3f}"
        f"{result['rl_tokens_per_s']:>10.0f}{result['rl_over_ce_time']:>7.2f}"
        f"{rollout_s:>11.2f}{result['rollout_tokens_per_s']:>11.0f}"
        f"{'–' if peak is None else f'{peak:.1f}':>10}"
    )
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
