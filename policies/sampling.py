"""Backend-neutral sampling pieces beyond :class:`~agentenv.policies.base.SamplingParams`.

:class:`SamplingExtras` holds vLLM's extra sampling knobs (penalties, ``logit_bias``, ``min_p``,
``min_tokens``, ``ignore_eos``, ``stop_token_ids``) with vLLM's meaning. :class:`LogitsProcessor`
applies them to the next-token logits of a generation batch, row by row, in vLLM's order:
``min_tokens`` masking and ``logit_bias``, then the repetition, frequency and presence
penalties, then ``min_p`` (relative to the most likely token at the row's temperature).
A sampling loop calls it on each step's logits before sampling, :meth:`LogitsProcessor.push`
with the sampled tokens, :meth:`LogitsProcessor.select` when rows leave the batch,
:meth:`LogitsProcessor.extend` when rows join it, and
:meth:`LogitsProcessor.finished` to know which sampled tokens end their row. Reported logprobs
stay those of the raw logits.

:func:`top_logprobs` gives the ``k`` most likely tokens at each position of a sequence under
the raw distribution, teacher-forced (what the OpenAI ``logprobs``/``top_logprobs`` fields
report for sampled or echoed tokens).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch


@dataclass(frozen=True)
class SamplingExtras:
    """vLLM's extra sampling parameters; the defaults change nothing.

    ``repetition_penalty`` (> 0) divides positive logits and multiplies negative ones of every
    token seen in the prompt or the output; ``frequency_penalty`` subtracts its value times the
    token's count in the output, ``presence_penalty`` its value once per token present there;
    ``logit_bias`` adds a bias to a token's logit; ``min_p`` drops tokens less likely than
    ``min_p`` times the most likely one; ``min_tokens`` forbids end-of-sequence and
    ``stop_token_ids`` until that many tokens are out; ``ignore_eos`` keeps generating past an
    end-of-sequence token; ``stop_token_ids`` end the row (the token is kept in the output).
    """

    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    repetition_penalty: float = 1.0
    logit_bias: tuple[tuple[int, float], ...] = ()
    min_p: float = 0.0
    min_tokens: int = 0
    ignore_eos: bool = False
    stop_token_ids: tuple[int, ...] = ()

    def changed(self) -> list[str]:
        """The names of the fields that differ from their defaults."""
        default = SamplingExtras()
        return [
            name
            for name in self.__dataclass_fields__
            if getattr(self, name) != getattr(default, name)
        ]


class LogitsProcessor:
    """:class:`SamplingExtras` of the rows of one generation batch, applied to its logits.

    ``prompts`` are the rows' prompt ids (the repetition penalty counts them), ``eos_token_ids``
    the model's end-of-sequence ids; tensors live on ``device``.
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
        self.extras = list(extras)
        self.vocab_size = vocab_size
        self.eos = torch.tensor(sorted(eos_token_ids), dtype=torch.long, device=device)
        self.presence = _column([e.presence_penalty for e in extras], device)
        self.frequency = _column([e.frequency_penalty for e in extras], device)
        self.repetition = _column([e.repetition_penalty for e in extras], device)
        self.min_p = _column([e.min_p for e in extras], device)
        self.min_tokens = torch.tensor([e.min_tokens for e in extras], device=device)
        self.bias = torch.zeros(rows, vocab_size, device=device)
        self.banned_early = torch.zeros(rows, vocab_size, dtype=torch.bool, device=device)
        for row, extra in enumerate(extras):
            for token, value in extra.logit_bias:
                self.bias[row, token] += value
            early = [*extra.stop_token_ids, *([] if extra.ignore_eos else eos_token_ids)]
            self.banned_early[row, early] = True
        self.seen = torch.zeros(rows, vocab_size, dtype=torch.bool, device=device)
        for row, prompt in enumerate(prompts):
            self.seen[row, list(prompt)] = True
        self.counts = torch.zeros(rows, vocab_size, device=device)
        self.generated = torch.zeros(rows, dtype=torch.long, device=device)

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

    def finished(self, tokens: torch.Tensor) -> list[bool]:
        """Whether each row's just-pushed token ends it: a stop token id, or an end-of-sequence
        token where ``ignore_eos`` is off (``min_tokens`` already kept both out until due)."""
        out = []
        for extra, token in zip(self.extras, tokens.tolist(), strict=True):
            eos = not extra.ignore_eos and token in self.eos.tolist()
            out.append(eos or token in extra.stop_token_ids)
        return out

    def select(self, keep: torch.Tensor) -> None:
        """Keep only rows ``keep`` (indices into the current rows), as the batch drops rows."""
        self.extras = [self.extras[i] for i in keep.tolist()]
        for name in _ROW_STATE:
            setattr(self, name, getattr(self, name)[keep])

    def extend(self, other: LogitsProcessor) -> None:
        """Append ``other``'s rows (with their state), as rows join a running batch."""
        self.extras = self.extras + other.extras
        for name in _ROW_STATE:
            setattr(self, name, torch.cat([getattr(self, name), getattr(other, name)]))


_ROW_STATE = (
    "presence", "frequency", "repetition", "min_p", "min_tokens",
    "bias", "banned_early", "seen", "counts", "generated",
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
