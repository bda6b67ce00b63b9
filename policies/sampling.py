"""Backend-neutral sampling pieces beyond plain :class:`~agentenv.policies.base.SamplingParams`.

:class:`~agentenv.policies.base.SamplingExtras` (re-exported here) holds vLLM's extra sampling
knobs (penalties, ``logit_bias``, ``min_p``, ``min_tokens``, ``ignore_eos``,
``stop_token_ids``) with vLLM's meaning. :class:`LogitsProcessor` applies them to the
next-token logits of a generation batch, row by row, in vLLM's order (vLLM v1's sampler):
``min_tokens`` masking and ``logit_bias``, then the repetition, frequency and presence
penalties, then ``min_p`` (relative to the most likely token at the row's temperature, after
which top-k/top-p apply). A sampling loop (:class:`~agentenv.policies.hf.HFPolicy`'s) calls it
on each step's logits before sampling, :meth:`LogitsProcessor.push` with the sampled tokens,
:meth:`LogitsProcessor.finished` to know which of them end their row,
:meth:`LogitsProcessor.select` when rows leave the batch and :meth:`LogitsProcessor.extend`
when rows join it. Reported logprobs stay those of the raw logits (vLLM's default
``logprobs_mode="raw_logprobs"``).

:func:`top_logprobs` gives the ``k`` most likely tokens at each position of a sequence under
the raw distribution, teacher-forced (what the OpenAI ``logprobs``/``top_logprobs`` fields
report for sampled or echoed tokens).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

from agentenv.policies.base import SamplingExtras

__all__ = ["LogitsProcessor", "SamplingExtras", "top_logprobs"]


class LogitsProcessor:
    """:class:`SamplingExtras` of the rows of one generation batch, applied to its logits.

    ``prompts`` are the rows' prompt ids (the repetition penalty counts them), ``eos_token_ids``
    the model's end-of-sequence ids (those outside the vocabulary, never sampled, are ignored);
    tensors live on ``device``. Every operation is row-wise
    and exact for neutral rows (adding 0, dividing by 1), so a row's processed logits do not
    depend on its batch-mates, and a neutral row's are its raw logits.
    """

    def __init__(
        self,
        extras: Sequence[SamplingExtras],
        prompts: Sequence[Sequence[int]],
        *,
        vocab_size: int,
        eos_token_ids: Sequence[int],
        device: torch.device | str = "cpu",
    ) -> None:
        rows = len(extras)
        self.vocab_size = vocab_size
        self.eos_token_ids = tuple(sorted(t for t in eos_token_ids if 0 <= t < vocab_size))
        self.device = torch.device(device)
        self.presence = _column([e.presence_penalty for e in extras], device)
        self.frequency = _column([e.frequency_penalty for e in extras], device)
        self.repetition = _column([e.repetition_penalty for e in extras], device)
        self.min_p = _column([e.min_p for e in extras], device)
        self.min_tokens = torch.tensor([e.min_tokens for e in extras], device=device)
        self.bias = torch.zeros(rows, vocab_size, device=device)
        self.banned_early = torch.zeros(rows, vocab_size, dtype=torch.bool, device=device)
        self.ends = torch.zeros(rows, vocab_size, dtype=torch.bool, device=device)
        for row, extra in enumerate(extras):
            for token, value in extra.logit_bias:
                self.bias[row, token] += value
            self.banned_early[row, [*extra.stop_token_ids, *self.eos_token_ids]] = True
            eos = () if extra.ignore_eos else self.eos_token_ids
            self.ends[row, [*extra.stop_token_ids, *eos]] = True
        self.seen = torch.zeros(rows, vocab_size, dtype=torch.bool, device=device)
        for row, prompt in enumerate(prompts):
            self.seen[row, list(prompt)] = True
        self.counts = torch.zeros(rows, vocab_size, device=device)
        self.generated = torch.zeros(rows, dtype=torch.long, device=device)

    def neutral(self, rows: int) -> LogitsProcessor:
        """A processor of ``rows`` rows with neutral extras (on this one's vocabulary, eos ids
        and device), for rows without extras that join, or are joined by, rows with them. It
        records no history: neutral rows need none."""
        return LogitsProcessor(
            [SamplingExtras()] * rows,
            [()] * rows,
            vocab_size=self.vocab_size,
            eos_token_ids=self.eos_token_ids,
            device=self.device,
        )

    def __call__(self, logits: torch.Tensor, temperature: torch.Tensor) -> torch.Tensor:
        """The processed float32 logits of this step (``temperature`` per row; 0: greedy)."""
        out = logits.float() + self.bias
        out = out.masked_fill(
            self.banned_early & (self.generated < self.min_tokens)[:, None], -math.inf
        )
        seen = self.seen | (self.counts > 0)
        out = torch.where(
            seen, torch.where(out > 0, out / self.repetition, out * self.repetition), out
        )
        out = out - self.frequency * self.counts - self.presence * (self.counts > 0)
        floor = out.max(dim=-1, keepdim=True).values + temperature[:, None] * torch.log(
            self.min_p.clamp(min=1e-30)
        )
        drop = (self.min_p > 0) & (temperature[:, None] > 0) & (out < floor)
        return out.masked_fill(drop, -math.inf)

    def push(self, tokens: torch.Tensor) -> None:
        """Record this step's sampled token of every row."""
        self.counts[torch.arange(len(tokens), device=tokens.device), tokens] += 1
        self.generated += 1

    def finished(self, tokens: torch.Tensor) -> torch.Tensor:
        """Whether each row's just-pushed token ends it (bool per row): a stop token id, or an
        end-of-sequence token where ``ignore_eos`` is off (``min_tokens`` already kept both out
        until due)."""
        return self.ends[torch.arange(len(tokens), device=tokens.device), tokens]

    def select(self, keep: torch.Tensor) -> None:
        """Keep only rows ``keep`` (indices into the current rows), as the batch drops rows."""
        for name in _ROW_STATE:
            setattr(self, name, getattr(self, name)[keep])

    def extend(self, other: LogitsProcessor) -> None:
        """Append ``other``'s rows (with their state), as rows join a running batch."""
        for name in _ROW_STATE:
            setattr(self, name, torch.cat([getattr(self, name), getattr(other, name)]))


_ROW_STATE = (
    "presence", "frequency", "repetition", "min_p", "min_tokens",
    "bias", "banned_early", "ends", "seen", "counts", "generated",
)  # fmt: skip
"""The per-row tensors of a :class:`LogitsProcessor`."""


def _column(values: list[float], device: torch.device | str) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float32, device=device)[:, None]


@torch.inference_mode()
def top_logprobs(
    model: Any, ids: Sequence[int], start: int, k: int, device: torch.device | str = "cpu"
) -> tuple[list[list[int]], list[list[float]]]:
    """The ``k`` most likely tokens and their logprobs (raw distribution, most likely first) at
    each position ``start..len(ids)-1`` of ``ids``, teacher-forced: position ``p`` given
    ``ids[:p]``. ``start`` must be at least 1."""
    if not 1 <= start <= len(ids):
        raise ValueError(f"start must be in [1, {len(ids)}], got {start}")
    if start == len(ids) or k == 0:
        return [[] for _ in range(len(ids) - start)], [[] for _ in range(len(ids) - start)]
    input_ids = torch.tensor([list(ids)], device=device)
    logits = model(input_ids=input_ids, logits_to_keep=len(ids) - start + 1).logits[0, :-1]
    values, tokens = torch.log_softmax(logits.float(), dim=-1).topk(k, dim=-1)
    return tokens.tolist(), values.tolist()
