"""Trajectories + per-turn advantages → padded token tensors and token-budget micro-batches.

A turn's advantage is broadcast to its tokens with one gather: the rows of a
:class:`~agentenv.trajectory.TurnTable` are ordered trajectory by trajectory and turn by turn,
so the row of token ``t`` of trajectory ``i`` is ``first_row[i] + turn_ids[t]``. Tokens outside
any turn (the prompt) and tokens whose turn has no record get advantage 0 and loss mask 0.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields, replace

import numpy as np
import torch

from agentenv.trajectory import Trajectory


@dataclass
class TokenBatch:
    """Right-padded ``(batch, length)`` tensors, one row per trajectory.

    ``loss_mask`` is 1 exactly on generated tokens that belong to a recorded turn;
    ``old_logprobs`` are the rollout policy's; ``advantages`` and ``clip_scale`` are the
    per-turn values broadcast to tokens; ``ref_logprobs`` is filled by the trainer when a KL
    reference is used. With a value head (:mod:`agentenv.train.value`), ``value_mask`` is 1 at
    each turn's decision position (the token before its first one), where ``returns`` holds the
    turn's value target and ``old_values`` its value before the update (0 elsewhere).
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    loss_mask: torch.Tensor
    turn_ids: torch.Tensor
    old_logprobs: torch.Tensor
    advantages: torch.Tensor
    clip_scale: torch.Tensor | None = None
    ref_logprobs: torch.Tensor | None = None
    value_mask: torch.Tensor | None = None
    returns: torch.Tensor | None = None
    old_values: torch.Tensor | None = None

    @property
    def size(self) -> int:
        return int(self.input_ids.shape[0])

    @property
    def lengths(self) -> torch.Tensor:
        return self.attention_mask.sum(-1)

    @property
    def num_loss_tokens(self) -> int:
        return int(self.loss_mask.sum())

    def _map(self, fn) -> TokenBatch:
        return replace(
            self,
            **{
                f.name: fn(getattr(self, f.name))
                for f in fields(self)
                if getattr(self, f.name) is not None
            },
        )

    def select(self, rows: Sequence[int] | torch.Tensor) -> TokenBatch:
        """The given rows, trimmed to their longest sequence."""
        index = torch.as_tensor(rows, dtype=torch.long)
        width = int(self.attention_mask[index].sum(-1).max()) if len(index) else 0
        return self._map(lambda t: t[index, :width])

    def to(self, device: torch.device | str) -> TokenBatch:
        return self._map(lambda t: t.to(device))


def _pad(arrays: list[np.ndarray], dtype: np.dtype, fill: float = 0) -> np.ndarray:
    """Stack 1-d arrays right-padded with ``fill`` (vectorized scatter, no per-token loop)."""
    lengths = np.array([len(a) for a in arrays], dtype=np.int64)
    out = np.full((len(arrays), int(lengths.max(initial=0))), fill, dtype=dtype)
    if lengths.sum():
        rows = np.repeat(np.arange(len(arrays)), lengths)
        starts = np.repeat(np.cumsum(lengths) - lengths, lengths)
        cols = np.arange(int(lengths.sum())) - starts
        out[rows, cols] = np.concatenate(arrays)
    return out


def turn_values_to_tokens(
    turn_ids: np.ndarray, num_turns: np.ndarray, values: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Gather per-turn-row ``values`` onto padded ``turn_ids`` ``(B, L)``.

    ``num_turns[i]`` is trajectory i's number of turn rows; returns ``(token_values, valid)``
    where ``valid`` marks tokens whose turn has a row.
    """
    first_row = np.cumsum(num_turns) - num_turns
    valid = (turn_ids >= 0) & (turn_ids < num_turns[:, None])
    rows = np.where(valid, first_row[:, None] + turn_ids, 0)
    gathered = values[rows] if len(values) else np.zeros(turn_ids.shape)
    return np.where(valid, gathered, 0.0), valid


def build_batch(
    trajectories: Sequence[Trajectory],
    turn_advantages: np.ndarray,
    *,
    pad_id: int = 0,
    turn_clip_scale: np.ndarray | None = None,
) -> TokenBatch:
    """Pad trajectories and broadcast per-turn-row advantages (TurnTable row order) to tokens."""
    if not trajectories:
        raise ValueError("build_batch: no trajectories")
    num_turns = np.array([len(t.turns) for t in trajectories], dtype=np.int64)
    if len(turn_advantages) != num_turns.sum():
        raise ValueError(
            f"build_batch: {len(turn_advantages)} advantages for {int(num_turns.sum())} turns"
        )
    per = [t.arrays() for t in trajectories]
    ids = _pad([p["token_ids"] for p in per], np.int64, pad_id)
    attention = _pad([np.ones(len(p["token_ids"]), np.int64) for p in per], np.int64)
    mask = _pad([p["loss_mask"] for p in per], np.float32)
    turns = _pad([p["turn_ids"] for p in per], np.int64, -1)
    logprobs = _pad([p["logprobs"] for p in per], np.float32)
    adv, valid = turn_values_to_tokens(turns, num_turns, np.asarray(turn_advantages, np.float64))
    mask = mask * valid
    scale = None
    if turn_clip_scale is not None:
        scale_values, _ = turn_values_to_tokens(
            turns, num_turns, np.asarray(turn_clip_scale, np.float64)
        )
        scale = torch.from_numpy(np.where(valid, scale_values, 1.0).astype(np.float32))
    return TokenBatch(
        input_ids=torch.from_numpy(ids),
        attention_mask=torch.from_numpy(attention),
        loss_mask=torch.from_numpy(mask.astype(np.float32)),
        turn_ids=torch.from_numpy(turns),
        old_logprobs=torch.from_numpy(logprobs),
        advantages=torch.from_numpy(adv.astype(np.float32)),
        clip_scale=scale,
    )


def micro_batches(lengths: Sequence[int], token_budget: int) -> list[list[int]]:
    """Pack row indices into micro-batches whose padded size (rows × longest) fits the budget.

    Rows are taken longest first, so rows of similar length share a batch and padding is small;
    a single row longer than the budget forms its own micro-batch.
    """
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batches: list[list[int]] = []
    current: list[int] = []
    for i in order:
        longest = lengths[current[0]] if current else lengths[i]
        if current and (len(current) + 1) * longest > token_budget:
            batches.append(current)
            current = []
        current.append(i)
    if current:
        batches.append(current)
    return batches
