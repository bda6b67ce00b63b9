"""Token-level policy-gradient losses: PPO clip, dual clip, turn-level ratio, KL, entropy.

Every tensor here is ``(batch, length)`` and aligned with the trajectory's tokens: position ``t``
holds the quantity for token ``t`` (log-probabilities at position 0 are 0 and always masked).
``mask`` is the loss mask (1 on generated tokens); prompt, observation and padding tokens have
mask 0 and so contribute to no term and receive no gradient.

Conventions follow verl's ``core_algos`` (``agg_loss``, ``kl_penalty``, ``compute_policy_loss``),
with the turn-level ratio of A²TGPO (arXiv 2605.06200, ``compute_policy_loss_gspo_turn``) computed
from explicit turn ids rather than inferred from advantage changes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

AggMode = Literal[
    "token-mean", "seq-mean-token-mean", "seq-mean-token-sum", "seq-mean-token-sum-norm"
]
KLKind = Literal["k1", "k2", "k3"]

AGG_MODES: tuple[str, ...] = AggMode.__args__  # type: ignore[attr-defined]
KL_KINDS: tuple[str, ...] = KLKind.__args__  # type: ignore[attr-defined]

#: log-ratios are clamped here before exponentiation (turn-level ratio, as in A²TGPO).
MAX_LOG_RATIO = 10.0


@dataclass(frozen=True)
class AggNorm:
    """Normalizers of one optimisation batch, shared by all its micro-batches.

    With them, summing :func:`agg_loss` over micro-batches equals aggregating the whole batch at
    once: ``tokens`` is the number of loss tokens, ``seqs`` the number of sequences and ``length``
    the constant normalizer of ``seq-mean-token-sum-norm`` (Dr. GRPO's ``MAX_TOKENS``).
    """

    tokens: float
    seqs: float
    length: float

    @classmethod
    def of(cls, mask: torch.Tensor, length: float | None = None) -> AggNorm:
        """Normalizers of a single batch (``length`` defaults to ``mask.shape[-1]``)."""
        return cls(
            tokens=max(float(mask.sum()), 1.0),
            seqs=max(float(mask.shape[0]), 1.0),
            length=float(length if length is not None else mask.shape[-1]),
        )


def agg_loss(
    values: torch.Tensor, mask: torch.Tensor, mode: AggMode, norm: AggNorm | None = None
) -> torch.Tensor:
    """Aggregate per-token values ℓ under mask m.

    - ``token-mean``: Σ m·ℓ / Σ m
    - ``seq-mean-token-mean``: mean_i (Σ_t m·ℓ / Σ_t m)
    - ``seq-mean-token-sum``: mean_i Σ_t m·ℓ
    - ``seq-mean-token-sum-norm``: Σ_i Σ_t m·ℓ / L  (L = ``norm.length``; verl's Dr. GRPO form)

    Sequences with no loss token count in the sequence means with value 0.
    """
    norm = norm or AggNorm.of(mask)
    mask = mask.to(values.dtype)
    masked = values * mask
    if mode == "token-mean":
        return masked.sum() / norm.tokens
    seq_sums = masked.sum(dim=-1)
    if mode == "seq-mean-token-mean":
        return (seq_sums / mask.sum(dim=-1).clamp_min(1.0)).sum() / norm.seqs
    if mode == "seq-mean-token-sum":
        return seq_sums.sum() / norm.seqs
    if mode == "seq-mean-token-sum-norm":
        return seq_sums.sum() / norm.length
    raise ValueError(f"loss.agg_mode: unknown mode {mode!r}; expected one of {AGG_MODES}")


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Σ m·v / Σ m (0 when the mask is empty)."""
    mask = mask.to(values.dtype)
    return (values * mask).sum() / mask.sum().clamp_min(1.0)


def kl_penalty(logp: torch.Tensor, ref_logp: torch.Tensor, kind: KLKind) -> torch.Tensor:
    """Per-token KL(π‖π_ref) estimate from sampled-token log-probabilities (Schulman's k1/k2/k3).

    - ``k1``: log π − log π_ref
    - ``k2``: ½ (log π − log π_ref)²
    - ``k3``: e^Δ − Δ − 1 with Δ = log π_ref − log π clamped to [−10, 10] (non-negative,
      low variance; verl's ``low_var_kl``)
    """
    diff = logp - ref_logp
    if kind == "k1":
        return diff
    if kind == "k2":
        return 0.5 * diff.square()
    if kind == "k3":
        delta = (-diff).clamp(-MAX_LOG_RATIO, MAX_LOG_RATIO)
        return torch.exp(delta) - delta - 1.0
    raise ValueError(f"loss.kl_kind: unknown estimator {kind!r}; expected one of {KL_KINDS}")


def turn_segments(turn_ids: torch.Tensor) -> tuple[torch.Tensor, int]:
    """A flat segment id per token: one segment per (sequence, turn); prompt tokens share one."""
    span = int(turn_ids.max().item()) + 2 if turn_ids.numel() else 1
    rows = torch.arange(turn_ids.shape[0], device=turn_ids.device).unsqueeze(-1)
    return rows * span + (turn_ids + 1), turn_ids.shape[0] * span


def turn_mean(values: torch.Tensor, mask: torch.Tensor, turn_ids: torch.Tensor) -> torch.Tensor:
    """Broadcast back to every token the masked mean of ``values`` over its (sequence, turn)."""
    seg, n = turn_segments(turn_ids)
    weights = mask.to(values.dtype)
    sums = torch.zeros(n, dtype=values.dtype, device=values.device)
    counts = torch.zeros(n, dtype=values.dtype, device=values.device)
    sums.index_add_(0, seg.flatten(), (values * weights).flatten())
    counts.index_add_(0, seg.flatten(), weights.flatten())
    return (sums / counts.clamp_min(1.0))[seg]


def importance_log_ratio(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    mask: torch.Tensor,
    turn_ids: torch.Tensor | None = None,
) -> torch.Tensor:
    """log r per token: token-level log π − log π_old, or A²TGPO's turn-level ratio.

    With ``turn_ids`` the value at each token is the turn mean m of the token log-ratios while the
    gradient stays per token: log r = log π − sg(log π) + sg(m), clamped at 10 (GSPO-style).
    """
    log_ratio = logp - old_logp
    if turn_ids is None:
        return log_ratio
    m = turn_mean(log_ratio.detach(), mask, turn_ids)
    return (logp - logp.detach() + m).clamp(max=MAX_LOG_RATIO)


@dataclass
class PolicyLoss:
    """The aggregated surrogate and per-batch diagnostics (floats are detached)."""

    loss: torch.Tensor
    clip_fraction: float
    ratio_mean: float
    approx_kl: float


def ppo_clip_loss(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    *,
    clip_low: float = 0.2,
    clip_high: float = 0.2,
    dual_clip: float | None = None,
    turn_ids: torch.Tensor | None = None,
    clip_scale: torch.Tensor | None = None,
    agg_mode: AggMode = "token-mean",
    norm: AggNorm | None = None,
) -> PolicyLoss:
    """PPO-clip surrogate on the rollout policy's log-probabilities.

    ℓ = max(−A·r, −A·clip(r, 1 − ε_low·c, 1 + ε_high·c)); with dual clip (Ye et al. 2020,
    verl ``clip_ratio_c``) tokens with A < 0 use min(ℓ, −A·c_dual). ``clip_scale`` is A²TGPO's
    per-token c (1 when absent); ``turn_ids`` switches to the turn-level ratio of
    :func:`importance_log_ratio`.
    """
    if dual_clip is not None and dual_clip <= 1.0:
        raise ValueError(f"loss.dual_clip must be > 1 (got {dual_clip})")
    log_ratio = importance_log_ratio(logp, old_logp, mask, turn_ids)
    ratio = torch.exp(log_ratio.clamp(max=MAX_LOG_RATIO))
    scale = clip_scale if clip_scale is not None else 1.0
    clipped = torch.clamp(ratio, 1.0 - clip_low * scale, 1.0 + clip_high * scale)
    unclipped_loss = -advantages * ratio
    clipped_loss = -advantages * clipped
    loss = torch.maximum(unclipped_loss, clipped_loss)
    if dual_clip is not None:
        loss = torch.where(advantages < 0, torch.minimum(loss, -advantages * dual_clip), loss)
    with torch.no_grad():
        raw = logp - old_logp
        clip_frac = masked_mean((clipped_loss > unclipped_loss).float(), mask)
        ratio_mean = masked_mean(ratio, mask)
        approx_kl = masked_mean(0.5 * raw.square(), mask)
    return PolicyLoss(
        loss=agg_loss(loss, mask, agg_mode, norm),
        clip_fraction=float(clip_frac),
        ratio_mean=float(ratio_mean),
        approx_kl=float(approx_kl),
    )


def token_logprobs_and_entropy(
    logits: torch.Tensor, input_ids: torch.Tensor, *, with_entropy: bool = True
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Log-probability of every token given its prefix, aligned with ``input_ids``.

    ``logits`` is the model output for ``input_ids`` (``(B, L, V)``); position 0 has no prefix and
    gets log-probability 0 (it is always a prompt token). The entropy of the predictive
    distribution for token t, H = −Σ p log p, is returned at position t as well.
    """
    logp_all = torch.log_softmax(logits[:, :-1].float(), dim=-1)
    target = input_ids[:, 1:].unsqueeze(-1)
    logp = logp_all.gather(-1, target).squeeze(-1)
    pad = logp.new_zeros(logp.shape[0], 1)
    logp = torch.cat([pad, logp], dim=1)
    if not with_entropy:
        return logp, None
    entropy = -(logp_all.exp() * logp_all).sum(-1)
    return logp, torch.cat([pad, entropy], dim=1)


def masked_token_logprobs(
    model: torch.nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    mask: torch.Tensor,
    *,
    with_entropy: bool = True,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """:func:`token_logprobs_and_entropy` at the positions of ``mask`` only (0 elsewhere).

    The LM head and the softmax run only on the hidden states that predict a masked token: in
    agent trajectories most tokens are prompt and observation, so this skips most of the
    vocabulary projection. Values and gradients at masked positions equal those of the full
    computation. Models whose logits are not ``lm_head(last_hidden_state)`` (no
    ``get_decoder``, or logit soft-capping/scaling in their config) take the full computation.
    """
    logp, entropy, _ = token_logprobs_and_states(
        model, input_ids, attention_mask, mask, None, with_entropy=with_entropy
    )
    return logp, entropy


def token_logprobs_and_states(
    model: torch.nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    mask: torch.Tensor,
    states_at: torch.Tensor | None,
    *,
    with_entropy: bool = True,
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """:func:`masked_token_logprobs`, plus the last hidden states ``(n, H)`` at the positions
    ``states_at`` (a boolean ``(batch, length)`` mask; row-major order) from the same forward
    pass (None when ``states_at`` is None) — what a value head reads."""
    target = mask[:, 1:] > 0
    keep = torch.nn.functional.pad(target, (0, 1))
    logits, states = _logits_at(model, input_ids, attention_mask, keep, states_at)
    logp_all = torch.log_softmax(logits.float(), dim=-1)
    logp = logp_all.gather(-1, input_ids[:, 1:][target].unsqueeze(-1)).squeeze(-1)
    at = torch.nn.functional.pad(target, (1, 0))
    logp_full = logp.new_zeros(input_ids.shape).masked_scatter(at, logp)
    if not with_entropy:
        return logp_full, None, states
    entropy = -(logp_all.exp() * logp_all).sum(-1)
    return logp_full, entropy.new_zeros(input_ids.shape).masked_scatter(at, entropy), states


def base_model(model: torch.nn.Module) -> torch.nn.Module:
    """The transformers model itself, under a peft wrapper if there is one."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def last_hidden_states(
    model: torch.nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor
) -> torch.Tensor:
    """``(B, L, D)`` final-layer hidden states (after the final norm), without the LM head where
    the model exposes its decoder."""
    base = base_model(model)
    if hasattr(base, "get_decoder"):
        out = base.get_decoder()(input_ids=input_ids, attention_mask=attention_mask)
        return out.last_hidden_state
    out = model(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True)
    return out.hidden_states[-1]


def _logits_at(
    model: torch.nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    keep: torch.Tensor,
    states_at: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Logits of the positions ``keep`` (a boolean ``(batch, length)`` mask), shape ``(n, V)``,
    and the last hidden states at ``states_at`` (None when it is None)."""
    base = base_model(model)
    config = getattr(base, "config", None)
    rescaled = any(
        getattr(config, name, None) for name in ("final_logit_softcapping", "logit_scale")
    )
    if rescaled or not hasattr(base, "get_decoder") or base.get_output_embeddings() is None:
        out = model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            output_hidden_states=states_at is not None,
        )
        states = None if states_at is None else out.hidden_states[-1][states_at]
        return out.logits[keep], states
    last = last_hidden_states(model, input_ids, attention_mask)
    states = None if states_at is None else last[states_at]
    return base.get_output_embeddings()(last[keep]), states


@dataclass
class LossTerms:
    """The optimised loss and its parts (aggregated with the same mode and normalizers)."""

    loss: torch.Tensor
    policy: PolicyLoss
    kl: float
    entropy: float


def rl_loss(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    *,
    entropy: torch.Tensor | None = None,
    ref_logp: torch.Tensor | None = None,
    kl_coef: float = 0.0,
    kl_kind: KLKind = "k3",
    entropy_coef: float = 0.0,
    agg_mode: AggMode = "token-mean",
    norm: AggNorm | None = None,
    **clip: object,
) -> LossTerms:
    """L = L_clip + β_KL · agg(KL(π‖π_ref)) − β_H · agg(H), all over loss tokens only.

    ``clip`` is passed to :func:`ppo_clip_loss` (``clip_low``, ``clip_high``, ``dual_clip``,
    ``turn_ids``, ``clip_scale``).
    """
    norm = norm or AggNorm.of(mask)
    policy = ppo_clip_loss(logp, old_logp, advantages, mask, agg_mode=agg_mode, norm=norm, **clip)
    loss = policy.loss
    kl_value = 0.0
    if ref_logp is not None:
        kl = agg_loss(kl_penalty(logp, ref_logp, kl_kind), mask, agg_mode, norm)
        kl_value = float(kl.detach())
        if kl_coef:
            loss = loss + kl_coef * kl
    entropy_value = 0.0
    if entropy is not None:
        ent = agg_loss(entropy, mask, agg_mode, norm)
        entropy_value = float(ent.detach())
        if entropy_coef:
            loss = loss - entropy_coef * ent
    return LossTerms(loss=loss, policy=policy, kl=kl_value, entropy=entropy_value)
