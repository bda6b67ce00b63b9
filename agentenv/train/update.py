"""The update: several epochs of clipped-surrogate optimisation over one step's token batch.

Per epoch the batch is shuffled into ``optim.mini_batches`` mini-batches, one optimizer step
each; a mini-batch is run in micro-batches of at most ``optim.micro_batch_tokens`` tokens whose
gradients accumulate, normalised by :class:`~agentenv.train.losses.AggNorm` over the whole
mini-batch so the result does not depend on how it was split.

Before the epochs: the KL reference's log-probabilities, and with
``loss.recompute_old_logprobs`` the old log-probabilities recomputed by the training forward
pass (no grad, eval mode), replacing the rollout's; ``old_logprob_drift`` is their mean
absolute difference over loss tokens. With a value head (PPO) every micro-batch's forward pass
also reads the hidden states at the turns' decision positions, and the loss is
L_policy + ``value.coef``·L_V (:func:`~agentenv.train.value.clipped_value_loss`, normalised by
the mini-batch's turns).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from agentenv.train.batching import TokenBatch, micro_batches
from agentenv.train.config import TrainConfig
from agentenv.train.learner import Learner
from agentenv.train.losses import (
    AggNorm,
    masked_token_logprobs,
    rl_loss,
    token_logprobs_and_states,
)
from agentenv.train.model import optimizer_step
from agentenv.train.value import ValueLoss, clipped_value_loss, explained_variance


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
    value_loss: float = 0.0
    value_clipped: float = 0.0
    value_turns: float = 0.0
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

    def add_value(self, value: ValueLoss, turns: int) -> None:
        self.value_loss += float(value.loss.detach())
        self.value_clipped += value.clipped
        self.value_turns += turns

    def finish(self) -> dict[str, float]:
        passes = max(1, self.optimizer_steps)
        w = max(1.0, self._weights)
        value = {}
        if self.value_turns:
            value = {
                "value_loss": self.value_loss / passes,
                "value_clip_fraction": self.value_clipped / self.value_turns,
            }
        return value | {
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


@torch.no_grad()
def batch_logprobs(
    learner: Learner,
    batch: TokenBatch,
    token_budget: int,
    logprobs: Callable[[TokenBatch], torch.Tensor],
) -> torch.Tensor:
    """``logprobs`` of every row of ``batch`` (eval mode, no grad), micro-batched by
    ``token_budget``, as a CPU float tensor shaped like ``batch.old_logprobs``."""
    learner.model.eval()
    out = torch.zeros_like(batch.old_logprobs)
    for rows in micro_batches(batch.lengths.tolist(), token_budget):
        logp = logprobs(batch.select(rows).to(learner.device)).float().cpu()
        out[rows, : logp.shape[1]] = logp
    return out


def attach_reference_logprobs(learner: Learner, batch: TokenBatch, token_budget: int) -> None:
    """Fill ``batch.ref_logprobs`` with the KL reference's per-token log-probs."""
    batch.ref_logprobs = batch_logprobs(learner, batch, token_budget, learner.reference_logprobs)


def recompute_old_logprobs(learner: Learner, batch: TokenBatch, token_budget: int) -> float:
    """Replace ``batch.old_logprobs`` by the training forward pass's (eval mode, no grad) and
    return mean |rollout − recomputed| over the loss tokens."""

    def training_pass(mb: TokenBatch) -> torch.Tensor:
        with learner.forward():
            args = (mb.input_ids, mb.attention_mask, mb.loss_mask)
            return masked_token_logprobs(learner.model, *args, with_entropy=False)[0]

    fresh = batch_logprobs(learner, batch, token_budget, training_pass)
    drift = (batch.old_logprobs - fresh).abs()[batch.loss_mask > 0]
    batch.old_logprobs = fresh
    return float(drift.mean()) if drift.numel() else 0.0


def value_statistics(batch: TokenBatch) -> dict[str, float]:
    """The pre-update values against their targets over the batch's turns: means and the
    explained variance 1 − Var(R − V)/Var(R)."""
    at = batch.value_mask > 0
    old, returns = batch.old_values[at].double().numpy(), batch.returns[at].double().numpy()
    return {
        "value_mean": float(old.mean()) if old.size else 0.0,
        "return_mean": float(returns.mean()) if returns.size else 0.0,
        "value_explained_variance": explained_variance(old, returns),
    }


def update(learner: Learner, batch: TokenBatch, config: TrainConfig) -> dict[str, float]:
    """Several epochs of clipped-surrogate optimisation over one rollout batch (and of the
    value loss, when ``learner`` has a value head and ``batch`` value targets)."""
    optim, loss_cfg = config.optim, config.loss
    model = learner.model
    length = loss_cfg.norm_length or config.rollout.max_context_tokens
    budget = optim.micro_batch_tokens
    extra: dict[str, float] = {}
    if loss_cfg.recompute_old_logprobs:
        extra["old_logprob_drift"] = recompute_old_logprobs(learner, batch, budget)
    if learner.uses_reference:
        attach_reference_logprobs(learner, batch, budget)
    head = learner.value_head if batch.value_mask is not None else None
    if head is not None:
        extra.update(value_statistics(batch))
    stats = UpdateStats()
    params = learner.trainable_parameters()
    model.train()
    for _ in range(optim.epochs):
        order = torch.randperm(batch.size)
        for mini in torch.tensor_split(order, min(optim.mini_batches, batch.size)):
            sub = batch.select(mini)
            norm = AggNorm.of(sub.loss_mask, length)
            turns = float(sub.value_mask.sum()) if head is not None else 0.0
            for rows in micro_batches(sub.lengths.tolist(), budget):
                mb = sub.select(rows).to(learner.device)
                at = mb.value_mask > 0 if head is not None else None
                with learner.forward():
                    logp, entropy, states = token_logprobs_and_states(
                        model, mb.input_ids, mb.attention_mask, mb.loss_mask, at
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
                loss = terms.loss
                if head is not None:
                    value = clipped_value_loss(
                        head(states),
                        mb.old_values[at],
                        mb.returns[at],
                        clip=config.value.clip,
                        norm=turns,
                    )
                    loss = loss + config.value.coef * value.loss
                    stats.add_value(value, int(at.sum()))
                loss.backward()
                stats.add_micro(terms, mb.num_loss_tokens)
            with learner.exclusive():
                stats.grad_norm += optimizer_step(
                    params, learner.optimizer, learner.scheduler, optim.grad_clip
                )
            stats.optimizer_steps += 1
    model.eval()
    return extra | stats.finish()
