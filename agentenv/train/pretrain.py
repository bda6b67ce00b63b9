"""Language-model warm-up of a model built from scratch, before SFT.

A model trained from random weights cannot read its context: SFT on a few thousand agent
episodes teaches it the protocol but not to copy a name from the question into its query or a
value from a document into its answer (measured in ``docs/training.md``, "Status"). This stage
trains it on text that needs exactly that, with the plain next-token loss

    L = −(1/N) Σ_t log π(x_t | x_<t)

over two kinds of sequence (``pretrain.batch_sequences`` per step, ``pretrain.seq_len`` tokens):

- windows of the envs' pretraining text (``EnvInfo.pretraining``; for ``search-v0``, documents
  and worked reading examples of *other* generated worlds), packed end to end;
- a ``pretrain.copy_fraction`` share of synthetic copy sequences ``a a`` (``a`` uniform random
  tokens, loss on the second ``a`` only), which form induction heads — the attention circuit that
  copies what followed an earlier occurrence of the current token (Olsson et al., 2022,
  "In-context Learning and Induction Heads", arXiv:2209.11895). By default one pair of half
  ``seq_len // 2`` fills a sequence, which a copy at that fixed offset already predicts;
  ``pretrain.copy_lengths: [min, max]`` packs pairs of half-lengths drawn in that range instead,
  so the offset varies and only copying by content predicts the repeat.
"""

from __future__ import annotations

import importlib
import json
import time
from pathlib import Path
from typing import Any

import torch

from agentenv.registry import env_info
from agentenv.train.config import ConfigError, TrainConfig
from agentenv.train.metrics import MetricsLogger
from agentenv.train.model import (
    FINAL_MODEL,
    build_optimizer,
    load_trainable,
    optimizer_step,
    save_model,
)

PRETRAIN_DIR = "pretrain"


def pretraining_texts(config: TrainConfig) -> list[str]:
    """The pretraining text of every configured env that provides a hook (each env id once)."""
    texts: list[str] = []
    seen: set[str] = set()
    for env in config.envs:
        hook = env_info(env.id).pretraining
        if hook is None or env.id in seen:
            continue
        seen.add(env.id)
        module, _, name = hook.partition(":")
        function = getattr(importlib.import_module(module), name)
        texts += function(config.pretrain.texts, seed=config.pretrain.seed, **env.kwargs)
    if not texts:
        ids = ", ".join(e.id for e in config.envs)
        raise ConfigError(f"pretrain.enabled: none of the envs ({ids}) provides pretraining text")
    return texts


def token_stream(texts: list[str], tokenizer: Any, generator: torch.Generator) -> torch.Tensor:
    """``texts`` in a seeded random order, tokenized and joined by newlines, as one 1-D tensor."""
    order = torch.randperm(len(texts), generator=generator).tolist()
    encoded = tokenizer([texts[i] + "\n" for i in order], add_special_tokens=False)["input_ids"]
    return torch.tensor([t for ids in encoded for t in ids], dtype=torch.long)


def text_windows(
    stream: torch.Tensor, n: int, seq_len: int, generator: torch.Generator
) -> torch.Tensor:
    """``n`` windows of ``seq_len`` tokens at random offsets of ``stream``; (n, seq_len)."""
    if len(stream) <= seq_len:
        raise ValueError(f"pretraining text has {len(stream)} tokens, fewer than seq_len={seq_len}")
    starts = torch.randint(0, len(stream) - seq_len, (n,), generator=generator)
    return stream[starts.unsqueeze(1) + torch.arange(seq_len)]


def copy_sequences(
    n: int,
    seq_len: int,
    vocabulary: torch.Tensor,
    generator: torch.Generator,
    lengths: tuple[int, int] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` sequences of copy pairs ``a a`` of random tokens from ``vocabulary`` and their
    labels (−100 on each first half and on the first token of each repeat, which cannot be
    predicted).

    With ``lengths`` None, one pair of half-length ``seq_len // 2`` per sequence: every repeat
    is at the same offset, so a fixed-offset copy predicts it. With ``lengths = (min, max)``,
    pairs of half-lengths drawn uniformly from ``[min, max]`` are packed end to end up to
    ``seq_len`` (the last one cut there): the offsets vary, so only copying by content (an
    induction head) predicts the repeats."""
    if lengths is None:
        half = seq_len // 2
        first = vocabulary[torch.randint(len(vocabulary), (n, half), generator=generator)]
        ids = torch.cat([first, first], dim=1)
        labels = ids.clone()
        labels[:, : half + 1] = -100
        return ids, labels
    low, high = lengths
    ids = torch.empty((n, seq_len), dtype=torch.long)
    labels = torch.full((n, seq_len), -100, dtype=torch.long)
    for row in range(n):
        pos = 0
        while pos < seq_len:
            half = int(torch.randint(low, high + 1, (1,), generator=generator))
            first = vocabulary[torch.randint(len(vocabulary), (half,), generator=generator)]
            pair = torch.cat([first, first])[: seq_len - pos]
            ids[row, pos : pos + len(pair)] = pair
            labels[row, pos + half + 1 : pos + len(pair)] = pair[half + 1 :]
            pos += len(pair)
    return ids, labels


def run_pretrain(config: TrainConfig, out_dir: Path, start: Path) -> Path:
    """Warm the model at ``start`` up on the envs' text and copy sequences; save to
    ``out_dir/model`` and return that folder. Every file of ``out_dir`` is written afresh, so a
    stage restarted after a kill logs each of its steps once."""
    pre = config.pretrain
    out_dir.mkdir(parents=True, exist_ok=True)
    model, tokenizer, device = load_trainable(config, start)
    generator = torch.Generator().manual_seed(pre.seed)
    t0 = time.perf_counter()
    stream = token_stream(pretraining_texts(config), tokenizer, generator)
    special = set(tokenizer.all_special_ids)
    vocabulary = torch.tensor([i for i in range(len(tokenizer)) if i not in special])
    n_copy = round(pre.batch_sequences * pre.copy_fraction)
    params = list(model.parameters())
    optimizer, scheduler = build_optimizer(
        params,
        pre.lr,
        config.optim.betas,
        config.optim.eps,
        0.0,
        pre.steps,
        pre.warmup_steps,
        "cosine",
        config.optim.min_lr_ratio,
    )
    logger = MetricsLogger(out_dir, total_steps=pre.steps, live=False, append=False)
    model.train()
    try:
        for step in range(1, pre.steps + 1):
            ids = text_windows(stream, pre.batch_sequences - n_copy, pre.seq_len, generator)
            labels = ids.clone()
            if n_copy:
                copy_ids, copy_labels = copy_sequences(
                    n_copy, pre.seq_len, vocabulary, generator, pre.copy_lengths
                )
                ids, labels = torch.cat([ids, copy_ids]), torch.cat([labels, copy_labels])
            loss = model(input_ids=ids.to(device), labels=labels.to(device)).loss
            loss.backward()
            grad = optimizer_step(params, optimizer, scheduler, config.optim.grad_clip)
            logger.log(
                {
                    "kind": "pretrain",
                    "step": step,
                    "loss": loss.detach().item(),
                    "grad_norm": grad,
                }
            )
    finally:
        logger.close()
    model.eval()
    save_model(model, tokenizer, out_dir / FINAL_MODEL)
    summary = {"tokens": len(stream), "steps": pre.steps, "seconds": time.perf_counter() - t0}
    (out_dir / "pretrain_summary.json").write_text(json.dumps(summary, indent=2))
    return out_dir / FINAL_MODEL
