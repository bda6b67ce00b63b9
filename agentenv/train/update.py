"""The update: several epochs of clipped-surrogate optimisation over one step's token batch.

Per epoch the batch is shuffled into ``optim.mini_batches`` mini-batches, one optimizer step
each; a mini-batch is run in micro-batches of at most ``optim.micro_batch_tokens`` tokens whose
gradients accumulate, normalised by :class:`~agentenv.train.losses.AggNorm` over the whole
mini-batch so the result does not depend on how it was split."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from agentenv.train.batching import TokenBatch, micro_batches
from agentenv.train.config import TrainConfig
from agentenv.train.learner import Learner
from agentenv.train.losses import AggNorm, masked_token_logprobs, rl_loss
from agentenv.train.model import optimizer_step


@dataclass
class UpdateStats:
    loss: float = 0.0
    kl: float = 0.0
    entropy: float = 0.0
    clip_fraction: float = 0.0
    ratio_mean: float = 0.0
    approx_kl: float = 0.0
    grad_norm: float = 0.0
    tokens: int = 0
    optimizer_steps: int = 0
    _weights: float = 0.0

    def add_micro(self, terms: Any, tokens: int) -> None:
        self.loss += float(terms.loss.detach())
        self.kl += terms.kl
        self.entropy += terms.entropy
        self.clip_fraction += terms.policy.clip_fraction * tokens
        self.ratio_mean += terms.policy.ratio_mean * tokens
        self.approx_kl += terms.policy.approx_kl * tokens
        self.tokens += tokens
        self._weights += tokens

    def finish(self) -> dict[str, float]:
        passes = max(1, self.optimizer_steps)
        w = max(1.0, self._weights)
        return {
            "loss": self.loss / passes,
            "kl": self.kl / passes,
            "entropy": self.entropy / passes,
            "clip_fraction": self.clip_fraction / w,
            "ratio_mean": self.ratio_mean / w,
            "approx_kl": self.approx_kl / w,
            "grad_norm": self.grad_norm / passes,
            "optimizer_steps": self.optimizer_steps,
            "trained_tokens": self.tokens,
        }


def attach_reference_logprobs(learner: Learner, batch: TokenBatch, token_budget: int) -> None:
    """Fill ``batch.ref_logprobs`` with the KL reference's per-token log-probs."""
    learner.model.eval()
    batch.ref_logprobs = torch.zeros_like(batch.old_logprobs)
    for rows in micro_batches(batch.lengths.tolist(), token_budget):
        mb = batch.select(rows).to(learner.device)
        ref = learner.reference_logprobs(mb).float().cpu()
        batch.ref_logprobs[rows, : ref.shape[1]] = ref


def update(learner: Learner, batch: TokenBatch, config: TrainConfig) -> dict[str, float]:
    """Several epochs of clipped-surrogate optimisation over one rollout batch."""
    optim, loss_cfg = config.optim, config.loss
    model = learner.model
    length = loss_cfg.norm_length or config.rollout.max_context_tokens
    budget = optim.micro_batch_tokens
    if learner.uses_reference:
        attach_reference_logprobs(learner, batch, budget)
    stats = UpdateStats()
    params = learner.trainable_parameters()
    model.train()
    for _ in range(optim.epochs):
        order = torch.randperm(batch.size)
        for mini in torch.tensor_split(order, min(optim.mini_batches, batch.size)):
            sub = batch.select(mini)
            norm = AggNorm.of(sub.loss_mask, length)
            for rows in micro_batches(sub.lengths.tolist(), budget):
                mb = sub.select(rows).to(learner.device)
                logp, entropy = masked_token_logprobs(
                    model, mb.input_ids, mb.attention_mask, mb.loss_mask
                )
                if not loss_cfg.entropy_coef:
                    entropy = entropy.detach()
                terms = rl_loss(
                    logp,
                    mb.old_logprobs,
                    mb.advantages,
                    mb.loss_mask,
                    entropy=entropy,
                    ref_logp=mb.ref_logprobs,
                    kl_coef=loss_cfg.kl_coef,
                    kl_kind=loss_cfg.kl_kind,
                    entropy_coef=loss_cfg.entropy_coef,
                    agg_mode=loss_cfg.agg_mode,
                    norm=norm,
                    clip_low=loss_cfg.clip_low,
                    clip_high=loss_cfg.clip_high,
                    dual_clip=loss_cfg.dual_clip,
                    turn_ids=mb.turn_ids if loss_cfg.turn_ratio else None,
                    clip_scale=mb.clip_scale if loss_cfg.turn_clip_scale else None,
                )
                terms.loss.backward()
                stats.add_micro(terms, mb.num_loss_tokens)
            with learner.exclusive():
                stats.grad_norm += optimizer_step(
                    params, learner.optimizer, learner.scheduler, optim.grad_clip
                )
            stats.optimizer_steps += 1
    model.eval()
    return stats.finish()
