"""PPO's value head: one value per turn, read from the policy's last hidden state.

The value of turn t is read at its *decision position*, the last token before the turn's first
token: the end of the prompt for turn 0, the end of the previous turn's observation after that —
the state the turn acts from (the turn-level MDP of :func:`agentenv.rewards.advantages.gae`).
The state after a trajectory's last turn is its last token, the bootstrap V(s_T) of a
truncated episode.

- :class:`ValueHead`: V(s) = w·h + b on the last hidden state h (after the final norm), in
  float32 even when the forward pass runs under autocast. It starts at w = 0, b = 0: the first
  values are 0, so the first advantages are the returns (GAE against V = 0) with no random
  baseline; ∂L/∂w = (V − R)·h is not 0, so it learns from the first update.
- The trunk is shared with the policy (PPO's shared-parameter form, Schulman et al. 2017,
  arXiv 1707.06347: L = L_clip + c_V·L_V): the value loss reaches the trunk, and the head's
  parameters join the policy's optimizer.
- :func:`clipped_value_loss`: PPO's clipped value loss (verl ``compute_value_loss``),
  L_V = ½·mean_t max((V_t − R_t)², (V_old,t + clip(V_t − V_old,t, −ε, ε) − R_t)²).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch

from agentenv.train.batching import TokenBatch, micro_batches
from agentenv.train.losses import base_model, token_logprobs_and_states

VALUE_HEAD = "value_head"
"""The name of the value head's weights in a checkpoint."""


class ValueHead(torch.nn.Module):
    """A zero-initialised float32 linear map from the last hidden state to a scalar value."""

    def __init__(self, hidden_size: int) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(hidden_size, 1, dtype=torch.float32)
        torch.nn.init.zeros_(self.linear.weight)
        torch.nn.init.zeros_(self.linear.bias)

    @classmethod
    def for_model(cls, model: torch.nn.Module) -> ValueHead:
        """A head sized for ``model``'s hidden states, on its device."""
        hidden_size = int(base_model(model).config.hidden_size)
        return cls(hidden_size).to(next(model.parameters()).device)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        """``(n, H)`` hidden states → ``(n,)`` float32 values."""
        with torch.autocast(hidden.device.type, enabled=False):
            return self.linear(hidden.float()).squeeze(-1)


def decision_positions(
    turn_ids: torch.Tensor, lengths: torch.Tensor, num_turns: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(batch row, turn index, column) of the decision position of every turn, in TurnTable
    order (trajectory by trajectory, turn by turn; ``num_turns[i]`` turns for batch row i).

    Turn ids are non-decreasing along a sequence (-1 on the prompt), so turn t's first token is
    found by a batched binary search; a turn with no token of its own (an empty last action)
    acts from the end of the sequence.
    """
    width = turn_ids.shape[1]
    real = torch.arange(width, device=turn_ids.device) < lengths[:, None]
    ordered = torch.where(real, turn_ids, torch.iinfo(turn_ids.dtype).max).contiguous()
    most = int(num_turns.max()) if num_turns.numel() else 0
    wanted = torch.arange(most, device=turn_ids.device, dtype=turn_ids.dtype)
    wanted = wanted.expand(turn_ids.shape[0], most).contiguous()
    first = torch.searchsorted(ordered, wanted)
    cols = torch.minimum(first, lengths[:, None]) - 1
    valid = wanted < num_turns.to(wanted.device)[:, None]
    rows = torch.arange(turn_ids.shape[0], device=turn_ids.device)[:, None].expand_as(wanted)
    return rows[valid], wanted[valid], cols.clamp_min(0)[valid]


@dataclass
class TurnValues:
    """Values before an update: ``values`` per TurnTable row (V of the state each turn acts
    from), ``end_values`` per trajectory (V at its last token, the state after its last turn)."""

    values: np.ndarray
    end_values: np.ndarray


@torch.no_grad()
def turn_values(
    model: torch.nn.Module,
    head: ValueHead,
    batch: TokenBatch,
    num_turns: np.ndarray,
    *,
    token_budget: int,
    device: torch.device | str,
    context: Callable[[], contextlib.AbstractContextManager[Any]] = contextlib.nullcontext,
) -> TurnValues:
    """:class:`TurnValues` of ``batch`` (rows in the order of ``num_turns``), one forward pass
    per micro-batch of at most ``token_budget`` padded tokens, each inside ``context()`` (the
    trainer's autocast)."""
    counts = torch.as_tensor(np.asarray(num_turns, dtype=np.int64))
    first_row = torch.cumsum(counts, 0) - counts
    values = torch.zeros(int(counts.sum()))
    ends = torch.zeros(batch.size)
    for rows in micro_batches(batch.lengths.tolist(), token_budget):
        index = torch.as_tensor(rows, dtype=torch.long)
        mb = batch.select(index).to(device)
        r, t, c = decision_positions(mb.turn_ids, mb.lengths, counts[index].to(device))
        at = torch.zeros_like(mb.attention_mask, dtype=torch.bool)
        at[r, c] = True
        at[torch.arange(mb.size, device=at.device), mb.lengths - 1] = True
        with context():
            _, _, states = token_logprobs_and_states(
                model,
                mb.input_ids,
                mb.attention_mask,
                torch.zeros_like(mb.loss_mask),
                at,
                with_entropy=False,
            )
        v = torch.zeros(at.shape, device=at.device)
        v[at] = head(states)
        values[(first_row[index].to(r.device)[r] + t).cpu()] = v[r, c].cpu()
        ends[index] = v[torch.arange(mb.size, device=v.device), mb.lengths - 1].cpu()
    return TurnValues(values.numpy().astype(np.float64), ends.numpy().astype(np.float64))


def with_value_targets(
    batch: TokenBatch, num_turns: np.ndarray, returns: np.ndarray, old_values: np.ndarray
) -> TokenBatch:
    """``batch`` with ``value_mask``, ``returns`` and ``old_values`` set at each turn's decision
    position from per-TurnTable-row ``returns`` and ``old_values``."""
    counts = torch.as_tensor(np.asarray(num_turns, dtype=np.int64))
    rows, _, cols = decision_positions(batch.turn_ids, batch.lengths, counts)
    if rows.shape[0] != len(returns) or rows.shape[0] != len(old_values):
        raise ValueError(f"value targets: {len(returns)} returns for {rows.shape[0]} turns")
    mask = torch.zeros(batch.loss_mask.shape, dtype=torch.float32)
    target = torch.zeros_like(mask)
    old = torch.zeros_like(mask)
    mask[rows, cols] = 1.0
    target[rows, cols] = torch.as_tensor(np.asarray(returns), dtype=torch.float32)
    old[rows, cols] = torch.as_tensor(np.asarray(old_values), dtype=torch.float32)
    return replace(batch, value_mask=mask, returns=target, old_values=old)


@dataclass
class ValueLoss:
    """The value loss of a micro-batch (normalised by its mini-batch) and its diagnostics."""

    loss: torch.Tensor
    clipped: float


def clipped_value_loss(
    values: torch.Tensor,
    old_values: torch.Tensor,
    returns: torch.Tensor,
    *,
    clip: float | None,
    norm: float,
) -> ValueLoss:
    """½·Σ_t max((V − R)², (V_old + clip(V − V_old, −ε, ε) − R)²) / ``norm`` over the given
    turns (``clip`` None: ½·Σ (V − R)² / norm). ``norm`` is the number of turns in the
    optimisation batch, so micro-batches sum to its mean. ``clipped`` counts the turns whose
    clipped error is the larger."""
    error = (values - returns).square()
    if clip is None:
        worst, clipped = error, torch.zeros_like(error, dtype=torch.bool)
    else:
        moved = old_values + (values - old_values).clamp(-clip, clip)
        clipped_error = (moved - returns).square()
        worst = torch.maximum(error, clipped_error)
        clipped = clipped_error > error
    return ValueLoss(
        loss=0.5 * worst.sum() / max(norm, 1.0),
        clipped=float(clipped.float().sum().detach()),
    )


def explained_variance(values: np.ndarray, returns: np.ndarray) -> float:
    """1 − Var(R − V)/Var(R) over the turns: 1 a perfect critic, 0 no better than the mean
    return, negative worse; NaN when the returns do not vary."""
    values, returns = np.asarray(values, np.float64), np.asarray(returns, np.float64)
    spread = float(np.var(returns)) if returns.size else 0.0
    if spread == 0.0:
        return float("nan")
    return 1.0 - float(np.var(returns - values)) / spread
