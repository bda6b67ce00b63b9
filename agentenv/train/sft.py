"""Supervised warm start on demonstrations collected through the rollout engine.

Demonstrators (``sft.demonstrators``: policy specs with weights, by default the env's scripted
expert alone) play episodes through the same :class:`~agentenv.rollout.RolloutEngine` as RL,
tokenized by the trained model's tokenizer, so SFT data has exactly the token layout and loss
mask of RL rollouts: prompt and observation tokens are context, the demonstrator's action tokens
are targets. The loss is the weighted token-mean cross-entropy

    L = −Σ_t w_t log π(x_t | x_<t) / Σ_t w_t,    w_t = m_t + λ·(1 − m_t)

over real tokens, with m the loss mask and λ = ``sft.context_weight``: 0 (default) trains on the
demonstrated actions only; λ > 0 adds language modelling of prompts and observations, which teaches
a model trained from scratch to read and copy from its context much faster.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from agentenv.planner import TaskSource, demo_episodes, split_counts
from agentenv.policies.specs import load_policy
from agentenv.rollout import EpisodeRequest, RolloutEngine
from agentenv.train.batching import TokenBatch, build_batch, micro_batches
from agentenv.train.config import TrainConfig
from agentenv.train.episodes import rollout_config
from agentenv.train.losses import masked_token_logprobs
from agentenv.train.metrics import MetricsLogger
from agentenv.train.model import (
    FINAL_MODEL,
    build_optimizer,
    load_trainable,
    optimizer_step,
    save_model,
)
from agentenv.trajectory import Trajectory, write_jsonl

SFT_DIR = "sft"
DEMONSTRATIONS = "demonstrations.jsonl"


def demonstration_requests(config: TrainConfig, sources: list[TaskSource]) -> list[EpisodeRequest]:
    """``sft.episodes`` training-split episodes, spread over the envs by weight."""
    counts = split_counts([e.weight for e in config.envs], config.sft.episodes)
    return [
        request
        for source, n in zip(sources, counts, strict=True)
        for request in demo_episodes(source, n, config.sft.seed_start)
    ]


def assign_demonstrators(
    requests: list[EpisodeRequest], weights: dict[str, float], seed: int
) -> dict[str, list[EpisodeRequest]]:
    """Each request to one demonstrator spec: a seeded shuffle cut by largest-remainder counts."""
    order = np.random.default_rng(seed).permutation(len(requests))
    counts = split_counts(list(weights.values()), len(requests))
    cuts = np.cumsum([0, *counts])
    return {
        spec: [requests[i] for i in sorted(order[cuts[k] : cuts[k + 1]].tolist())]
        for k, spec in enumerate(weights)
    }


async def collect_demonstrations(
    config: TrainConfig, tokenizer: Any, sources: list[TaskSource]
) -> list[Trajectory]:
    """Demonstrations tokenized with ``tokenizer``, each episode played by one of
    ``sft.demonstrators`` (errored ones dropped; with ``sft.only_successful`` only solved ones)."""
    plan = assign_demonstrators(
        demonstration_requests(config, sources), config.sft.demonstrators, config.sft.seed_start
    )
    trajectories: list[Trajectory] = []
    for spec, requests in plan.items():
        engine = RolloutEngine(load_policy(spec, tokenizer=tokenizer), rollout_config(config))
        trajectories += await engine.run(requests)
    keep = [t for t in trajectories if t.trainable]
    if config.sft.only_successful:
        keep = [t for t in keep if t.success]
    return keep


def token_weights(batch: TokenBatch, context_weight: float) -> torch.Tensor:
    """w = m + λ·(1 − m) on real tokens: action tokens weigh 1, prompt and observation tokens λ."""
    context = batch.attention_mask.to(batch.loss_mask.dtype) - batch.loss_mask
    return batch.loss_mask + context_weight * context


def cross_entropy(
    model: torch.nn.Module, batch: TokenBatch, weights: torch.Tensor, total: float
) -> torch.Tensor:
    """Σ w·(−log π) over the batch divided by ``total`` (the whole step's Σ w)."""
    logp, _ = masked_token_logprobs(
        model, batch.input_ids, batch.attention_mask, weights, with_entropy=False
    )
    return (-logp * weights).sum() / total


async def run_sft(
    config: TrainConfig, out_dir: Path, start: Path, sources: list[TaskSource]
) -> Path:
    """Collect demonstrations, fine-tune the model at ``start`` on them, save to ``out_dir/model``.

    Every file of ``out_dir`` is written afresh, so a stage restarted after a kill logs each of
    its steps once."""
    sft = config.sft
    out_dir.mkdir(parents=True, exist_ok=True)
    model, tokenizer, device = load_trainable(config, start)
    t0 = time.perf_counter()
    data = await collect_demonstrations(config, tokenizer, sources)
    if not data:
        raise RuntimeError("sft: the demonstrators produced no usable episode")
    write_jsonl(data, out_dir / DEMONSTRATIONS)
    collect_s = time.perf_counter() - t0
    batch = build_batch(
        data, np.zeros(sum(len(t.turns) for t in data)), pad_id=int(tokenizer.pad_token_id or 0)
    )
    steps_per_epoch = max(1, -(-batch.size // sft.batch_sequences))
    total = steps_per_epoch * sft.epochs
    params = list(model.parameters())
    optimizer, scheduler = build_optimizer(
        params,
        sft.lr,
        config.optim.betas,
        config.optim.eps,
        config.optim.weight_decay,
        total,
        sft.warmup_steps,
        "cosine",
        config.optim.min_lr_ratio,
    )
    logger = MetricsLogger(out_dir, total_steps=total, live=False, append=False)
    model.train()
    step = 0
    try:
        for _ in range(sft.epochs):
            order = torch.randperm(batch.size)
            for rows in torch.split(order, sft.batch_sequences):
                sub = batch.select(rows)
                weights = token_weights(sub, sft.context_weight)
                total = max(1.0, float(weights.sum()))
                loss_value = 0.0
                for micro in micro_batches(sub.lengths.tolist(), config.optim.micro_batch_tokens):
                    part = sub.select(micro)
                    loss = cross_entropy(
                        model,
                        part.to(device),
                        token_weights(part, sft.context_weight).to(device),
                        total,
                    )
                    loss.backward()
                    loss_value += float(loss.detach())
                grad = optimizer_step(params, optimizer, scheduler, config.optim.grad_clip)
                step += 1
                logger.log(
                    {
                        "kind": "sft",
                        "step": step,
                        "loss": loss_value,
                        "grad_norm": grad,
                        "lr": scheduler.get_last_lr()[0],
                        "trained_tokens": int(sub.loss_mask.sum()),
                    }
                )
    finally:
        logger.close()
    model.eval()
    save_model(model, tokenizer, out_dir / FINAL_MODEL)
    (out_dir / "sft_summary.json").write_text(
        json.dumps(
            {
                "episodes": len(data),
                "steps": step,
                "collect_seconds": collect_s,
                "seconds": time.perf_counter() - t0,
            },
            indent=2,
        )
    )
    return out_dir / FINAL_MODEL
