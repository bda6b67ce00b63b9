"""HFPolicy: a transformers causal LM behind the Policy protocol, with continuous batching.

Concurrent ``generate`` calls (from many episodes' coroutines, or many HTTP requests) are queued
to one worker thread that schedules at the iteration level (``scheduling="continuous"``, the
default). It keeps one running batch of up to ``max_batch_size`` rows over one left-padded KV
cache (a :class:`~transformers.Cache` of :class:`PaddedKVLayer` layers, which write each
step's keys and values in place; row ``j`` of every layer holds its padding, then its own keys
and values) and loops:

1. drop the rows whose caller cancelled;
2. admit waiting requests into the free rows (at most ``max_prefill_tokens`` padded prompt
   tokens per iteration): prefill them as one left-padded group into a fresh cache, sample each
   one's first token, and join that cache to the running one (the columns that are padding in
   every running row are dropped first; the narrower cache is left-padded to the other's width;
   rows are concatenated);
3. one decode step for every running row (its last token, at its own position, with the padding
   mask): sample the next tokens; rows that finish (eos or a stop token id, a stop string,
   their ``max_tokens``) leave the batch and their futures are resolved at once.

So a short request is never held back by a long one, and a request that arrives mid-flight
waits one decode step, not for the batch to drain. When the worker is idle, the first request
waits at most ``max_wait_ms`` for others, so a burst is prefilled together.
``scheduling="static"`` is the lock-step baseline: a batch is formed while the worker is idle
and hands back all its completions when its last row finishes.

Every row has its own stop strings, max tokens, temperature, top-p, top-k, seed and vLLM
extras (:class:`~agentenv.policies.base.SamplingExtras`: penalties, ``logit_bias``, ``min_p``,
``min_tokens``, ``ignore_eos``, ``stop_token_ids``). A group of rows of which any has extras
carries a :class:`~agentenv.policies.sampling.LogitsProcessor` that processes the logits each
step before sampling (vLLM's order), records the sampled tokens and says which of them end
their row; it follows the rows as they leave and join (rows without extras get neutral ones),
and is dropped once no row has extras, so plain requests (RL rollouts) never pay for it.

Weights are read from :attr:`HFPolicy.model` at every step (no copies), so a trainer that
updates the module in place is seen by the next step. Hold :attr:`HFPolicy.weights_lock` while
changing weights: every scheduler iteration and scoring chunk runs under it (a row in flight
across an update keeps the keys and values it cached under the old weights).

Batch invariance (``batch_invariant``, on by default on CPU): which requests share a batch depends
on when they arrive and how far the others have got, so a row's tokens and logprobs must not
depend on its batch-mates, or two runs with the same seeds differ. Two things made them depend on it, measured on the tiny model:

- matrix products: MKL picks its kernel by the number of rows, so a row of ``x @ W`` changes in
  the last bits with the batch size (and with the padded width, which multiplies the rows of a
  prefill). MKL's strict conditional numerical reproducibility (``MKL_CBWR=AUTO,STRICT``, set
  below unless the environment sets it; MKL reads it at its first call) computes every row alike;
- attention over left padding: the kernels' reductions over keys group a row's keys differently
  when its padding changes (and joining a batch changes it). :func:`rowwise_attention` runs
  each run of equally padded rows as one unpadded SDPA call, so a row attends exactly as it
  would alone.

Sampling is per row: a row's uniform at its k-th token is hash(row seed, k), and top-p/top-k
truncation and the extras apply to the rows that ask for them only (the processor is row-wise
and exact on neutral rows). Reported logprobs are those of the raw logits whatever the
sampling settings, as vLLM reports them by default (``logprobs_mode="raw_logprobs"``).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import math
import os
import queue
import re
import threading
import time
import warnings
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from operator import attrgetter
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from peft import PeftConfig
from peft.utils import load_peft_weights
from transformers import AttentionInterface, AutoModelForCausalLM, AutoTokenizer, DynamicCache
from transformers.cache_utils import Cache, DynamicLayer
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask

from agentenv.devices import resolve_device, resolve_dtype
from agentenv.policies.base import (
    Completion,
    EpisodeContext,
    FinishReason,
    SamplingParams,
    score_pairs,
)
from agentenv.policies.prefix_cache import Entry, PrefixCache, weights_version
from agentenv.policies.sampling import LogitsProcessor

os.environ.setdefault("MKL_CBWR", "AUTO,STRICT")

SCORE_LOGITS_BUDGET = 1 << 28
"""Max float32 logits (rows x continuation tokens x vocab) materialised per scoring chunk."""

ROWWISE_ATTENTION = "agentenv_rowwise_sdpa"
"""Attention implementation name of :func:`rowwise_attention` (plain SDPA without row paddings)."""

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def _mix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64 finaliser: a bijective, well-mixed hash of uint64 values."""
    with np.errstate(over="ignore"):
        x = x ^ (x >> np.uint64(30))
        x = x * np.uint64(0xBF58476D1CE4E5B9)
        x = x ^ (x >> np.uint64(27))
        x = x * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))


def row_uniforms(row_seeds: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """One uniform in [0, 1) per row for the token each row generates next: hash(row seed, k),
    k = ``positions`` (tokens the row has generated so far).

    Counter-based and keyed by the row's own count, so a seeded row samples the same tokens
    whatever else shares its batch and whenever it joined it.
    """
    with np.errstate(over="ignore"):
        x = _mix64(row_seeds + (positions.astype(np.uint64) + np.uint64(1)) * _GOLDEN)
    return (x >> np.uint64(11)).astype(np.float64) * 2.0**-53


def request_seeds(seed: int | None, count: int, rng: np.random.Generator) -> np.ndarray:
    """Row seeds of one request: hash(seed, row index) when seeded, else fresh random ones."""
    if seed is None:
        return rng.integers(0, 2**63, size=count, dtype=np.uint64)
    with np.errstate(over="ignore"):
        base = _mix64(np.array([seed & (2**64 - 1)], dtype=np.uint64))
        return _mix64(base + np.arange(count, dtype=np.uint64) * _GOLDEN)


def sample_tokens(
    logits: torch.Tensor,
    temperature: torch.Tensor,
    top_p: torch.Tensor,
    top_k: torch.Tensor,
    uniforms: torch.Tensor,
) -> torch.Tensor:
    """Sample one token per row of ``logits`` (raw, or processed by a
    :class:`~agentenv.policies.sampling.LogitsProcessor`).

    Rows with ``temperature == 0`` take the argmax. Others sample by inverse CDF from
    softmax(logits / T) in vocabulary order; rows that truncate sample by inverse CDF over the
    distribution sorted by probability, restricted to the ``top_k`` most likely tokens (0 = all)
    and to the smallest prefix whose mass reaches ``top_p``. Every step is row-wise, so a row's
    token depends on its own logits, settings and uniform only.
    """
    logits = logits.float()
    greedy = logits.argmax(dim=-1)
    if bool((temperature == 0).all()):
        return greedy
    probs = torch.softmax(logits / temperature.clamp(min=1e-6)[:, None], dim=-1)
    sampled = _inverse_cdf(probs, uniforms)
    truncates = (top_p < 1) | (top_k > 0)
    if bool(truncates.any()):
        ranked, order = probs.sort(dim=-1, descending=True)
        ranks = torch.arange(probs.shape[-1], device=probs.device)
        keep = (ranked.cumsum(-1) - ranked) < top_p[:, None]
        keep &= (top_k[:, None] <= 0) | (ranks[None, :] < top_k[:, None])
        truncated = order.gather(-1, _inverse_cdf(ranked * keep, uniforms)[:, None])[:, 0]
        sampled = torch.where(truncates, truncated, sampled)
    return torch.where(temperature == 0, greedy, sampled)


def token_logprobs(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """log π(token) of each row's ``tokens`` under the raw distribution of ``logits``
    (temperature 1, no truncation, penalties or biases: what PPO's ratio needs, and what vLLM
    reports by default, ``logprobs_mode="raw_logprobs"``)."""
    return token_logprobs_and_entropy(logits, tokens)[0]


def token_logprobs_and_entropy(
    logits: torch.Tensor, tokens: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`token_logprobs` and the entropy −Σ_v π(v) log π(v) of each row's raw distribution."""
    logp = torch.log_softmax(logits.float(), dim=-1)
    return logp.gather(-1, tokens[:, None])[:, 0], torch.special.entr(logp.exp()).sum(-1)


def _inverse_cdf(probs: torch.Tensor, uniforms: torch.Tensor) -> torch.Tensor:
    """Per row, the first index whose cumulative mass exceeds ``u`` times the row's total."""
    cdf = probs.cumsum(-1)
    target = uniforms.to(cdf.dtype)[:, None] * cdf[:, -1:]
    return torch.searchsorted(cdf, target, right=True).clamp(max=cdf.shape[-1] - 1)[:, 0]


PadRuns = tuple[tuple[int, int, int, int], ...]
"""Runs ``(start, stop, key_pad, query_pad)`` of consecutive batch rows whose keys start after
``key_pad`` padding columns and whose queries after ``query_pad`` padding positions."""


def pad_runs(key_pads: Sequence[int], query_pads: Sequence[int] | None = None) -> PadRuns:
    """Split rows into runs of equal paddings (rows sorted by padding give one per length);
    ``query_pads`` default to none (decoding: every row has its query)."""
    keys = np.asarray(key_pads, dtype=np.int64)
    queries = np.zeros_like(keys) if query_pads is None else np.asarray(query_pads, np.int64)
    change = (np.diff(keys) != 0) | (np.diff(queries) != 0)
    cuts = [0, *(np.flatnonzero(change) + 1).tolist(), len(keys)]
    return tuple(
        (a, b, int(keys[a]), int(queries[a])) for a, b in zip(cuts[:-1], cuts[1:], strict=True)
    )


def rowwise_attention(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    *,
    left_padding: PadRuns | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """SDPA in which every row of a left-padded batch attends over its own tokens only.

    Without ``left_padding`` this is transformers' SDPA attention. With it, rows
    ``start:stop`` attend with keys ``key_pad:`` and their queries after ``query_pad``, query
    ``i`` seeing the keys up to its own position (the queries are the last keys), in one
    unpadded SDPA call per run: the same shapes and values the rows would have alone, so the
    output does not depend on how the batch was padded. Outputs of padding queries are zero.
    """
    if left_padding is None:
        return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)
    rows, heads, q_len, _ = query.shape
    scale = kwargs.get("scaling")
    if len(left_padding) == 1 and left_padding[0][2:] == (0, 0):  # no row is padded
        cached = key.shape[2] - q_len
        return _unpadded_attention(query, key, value, scale, cached=cached), None
    if q_len == 1:  # decoding: every row has its query, the runs tile the batch
        parts = [
            _unpadded_attention(query[a:b], key[a:b, :, pad:], value[a:b, :, pad:], scale)
            for a, b, pad, _ in left_padding
        ]
        return torch.cat(parts), None
    out = query.new_zeros(rows, q_len, heads, value.shape[-1])
    for start, stop, key_pad, query_pad in left_padding:
        keys = key[start:stop, :, key_pad:]
        out[start:stop, query_pad:] = _unpadded_attention(
            query[start:stop, :, query_pad:],
            keys,
            value[start:stop, :, key_pad:],
            scale,
            cached=keys.shape[2] - (q_len - query_pad),
        )
    return out, None


def _unpadded_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    scale: float | None,
    cached: int = 0,
) -> torch.Tensor:
    """Causal SDPA of queries that follow ``cached`` keys, as ``(rows, queries, heads, dim)``:
    without a mask when nothing is cached (a multi-token query then spans all the keys) or the
    query is one token; query ``i`` sees keys ``<= cached + i`` otherwise. Grouped-query heads
    are shared without copies."""
    q_len = query.shape[2]
    mask = None
    if cached and q_len > 1:
        mask = torch.ones(q_len, key.shape[2], dtype=torch.bool, device=query.device)
        mask = mask.tril(cached)
    out = torch.nn.functional.scaled_dot_product_attention(
        query,
        key,
        value,
        attn_mask=mask,
        is_causal=q_len > 1 and not cached,
        scale=scale,
        enable_gqa=query.shape[1] != key.shape[1],
    )
    return out.transpose(1, 2)


AttentionInterface.register(ROWWISE_ATTENTION, rowwise_attention)
ALL_MASK_ATTENTION_FUNCTIONS.register(ROWWISE_ATTENTION, sdpa_mask)


def _rows_independent_in_matmul(device: torch.device) -> bool:
    """Whether a row of ``x @ W.T`` on ``device`` comes out bit-identical alone and among other
    rows (on CPU: whether MKL runs in strict reproducibility mode)."""
    generator = torch.Generator().manual_seed(0)
    weight = torch.randn(96, 64, generator=generator).to(device)
    x = torch.randn(7, 64, generator=generator).to(device)
    first = [torch.nn.functional.linear(x[:m], weight)[0] for m in (1, 2, 7)]
    return all(torch.equal(first[0], other) for other in first[1:])


def _full_attention_only(config: Any) -> bool:
    """No sliding-window or other layer kinds: rowwise attention ignores the attention mask."""
    layer_types = getattr(config, "layer_types", None) or ["full_attention"]
    windowed = getattr(config, "sliding_window", None) is not None and getattr(
        config, "use_sliding_window", True
    )
    return set(layer_types) == {"full_attention"} and not windowed


class PaddedKVLayer(DynamicLayer):
    """A full-attention cache layer whose keys and values live in a buffer with room to grow.

    :class:`~transformers.DynamicCache`'s layers concatenate the new token onto the whole cache
    at every step, a copy of the whole cache per decode step (on the tiny model, 64 rows of 300
    tokens: 2.2 ms for a step's four concatenations, against 0.02 ms for writing in place); here
    a step writes its column in place and the buffer grows by half when full. ``keys``/``values`` are views of the filled columns. Row ``j`` may start with
    left padding (zeros, or whatever its prefill computed there); the running batch trims, pads
    and concatenates rows through :meth:`trim_left` and :meth:`join`.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.length = 0
        self.keep: torch.Tensor | None = None
        """While set, ``(rows, 1, columns, 1)`` booleans: the new columns of the next
        :meth:`update` that keep what the buffer holds (a row's cached prefix reaching into
        them) instead of the new keys and values."""

    @classmethod
    def holding(cls, keys: torch.Tensor, values: torch.Tensor, length: int) -> PaddedKVLayer:
        """A layer over the buffers ``keys``/``values`` whose first ``length`` columns are
        filled (columns past them may hold rows' cached prefixes, see :attr:`keep`)."""
        layer = cls()
        layer.lazy_initialization(keys, values)
        layer._keys, layer._values, layer.length = keys, values, length
        layer._views()
        return layer

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        self.device = key_states.device
        self.length = 0
        self._keys, self._values = key_states[:, :, :0], value_states[:, :, :0]
        self.is_initialized = True

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Write the new columns after the filled ones; return all filled columns."""
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        end = self.length + key_states.shape[-2]
        if end > self._keys.shape[-2]:
            self._resize(end + max(end // 2, 16))
        if self.keep is not None:
            key_states = torch.where(self.keep, self._keys[:, :, self.length : end], key_states)
            value_states = torch.where(
                self.keep, self._values[:, :, self.length : end], value_states
            )
        self._keys[:, :, self.length : end] = key_states
        self._values[:, :, self.length : end] = value_states
        self.length = end
        return self._views()

    def get_seq_length(self) -> int:
        return self.length if self.is_initialized else 0

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        if self.is_initialized:
            self._keys, self._values = self._keys[indices], self._values[indices]
            self._views()

    def trim_left(self, columns: int) -> None:
        """Drop the first ``columns`` columns of every row."""
        self._keys, self._values = self._keys[:, :, columns:], self._values[:, :, columns:]
        self.length -= columns
        self._views()

    def join(self, other: PaddedKVLayer) -> None:
        """Append ``other``'s rows, the narrower side's rows left-padded with zero columns to
        the wider's width, in one new buffer (one copy of each side's filled columns; the
        spare room for later steps is the larger of the two)."""
        width = max(self.length, other.length)
        spare = max(self._keys.shape[-2] - self.length, other._keys.shape[-2] - other.length, 16)
        rows = self._keys.shape[0]
        buffers = []
        for mine, theirs in ((self.keys, other.keys), (self.values, other.values)):
            heads, dim = mine.shape[1], mine.shape[3]
            buffer = mine.new_zeros(rows + theirs.shape[0], heads, width + spare, dim)
            buffer[:rows, :, width - self.length : width] = mine
            buffer[rows:, :, width - other.length : width] = theirs
            buffers.append(buffer)
        self._keys, self._values = buffers
        self.length = width
        self._views()

    def _resize(self, capacity: int) -> None:
        """Move the filled columns into buffers of ``capacity`` columns."""
        grow = capacity - self._keys.shape[-2]
        self._keys, self._values = (
            torch.nn.functional.pad(t, (0, 0, 0, grow)) for t in (self._keys, self._values)
        )

    def _views(self) -> tuple[torch.Tensor, torch.Tensor]:
        self.keys = self._keys[:, :, : self.length]
        self.values = self._values[:, :, : self.length]
        return self.keys, self.values


class StopWatcher:
    """Decodes a growing token sequence incrementally and reports the first stop string that
    ends in the newly decoded text.

    Only the newly completed text is decoded each step (a two-token window), and only the tail
    that could hold a match ending in it is searched, so a step costs O(stop length). A match
    that ended in earlier text is not reported again (what lets ``min_tokens`` skip the stop
    strings completed by a row's first tokens, as vLLM does).
    """

    def __init__(self, tokenizer: Any, stops: Sequence[str]) -> None:
        self.tokenizer = tokenizer
        self.stops = tuple(s for s in stops if s)
        self.longest = max((len(s) for s in self.stops), default=0)
        self.ids: list[int] = []
        self.text = ""
        self._prefix = 0
        self._read = 0

    def _decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True)

    def push(self, token: int) -> str | None:
        self.ids.append(token)
        before = self._decode(self.ids[self._prefix : self._read])
        after = self._decode(self.ids[self._prefix :])
        if len(after) <= len(before) or after.endswith("\ufffd"):
            return None  # an incomplete UTF-8 sequence: wait for the rest of its bytes
        old = len(self.text)
        start = max(0, old - self.longest + 1)
        self.text += after[len(before) :]
        self._prefix, self._read = self._read, len(self.ids)
        tail = self.text[start:]
        ends = [(tail.find(s, max(0, old - start - len(s) + 1)) + len(s), s) for s in self.stops]
        found = [(end, s) for end, s in ends if end >= len(s)]
        return min(found)[1] if found else None


@dataclass
class GenerationStats:
    """Counters since construction (or :meth:`HFPolicy.reset_stats`)."""

    batches: int = 0
    """Busy periods: times rows entered an empty running batch (with ``scheduling="static"``,
    one per lock-step batch)."""
    prefills: int = 0
    """Prefill passes: groups of waiting requests run through the model to join the batch."""
    prefilled_tokens: int = 0
    """Prompt tokens run through the model by prefills (those reused from the prefix cache
    are not)."""
    decode_steps: int = 0
    """Decode steps: one token for every running row."""
    forward_passes: int = 0
    """Model forward calls made by generation (prefills + decode steps)."""
    rows: int = 0
    """Completions produced."""
    generated_tokens: int = 0
    score_forward_passes: int = 0
    max_batch_rows: int = 0
    """Most rows in flight at once (running plus joining)."""


@dataclass
class _Request:
    """One prompt to complete, with its row seed and the future its caller awaits."""

    prompt: list[int]
    sampling: SamplingParams
    seed: np.uint64
    future: concurrent.futures.Future[Completion] = field(default_factory=concurrent.futures.Future)


@dataclass
class _Row:
    """A request being generated: its token budget, stop watcher and what it generated so far."""

    request: _Request
    budget: int
    watcher: StopWatcher
    version: int = 0
    """The weights version its keys and values were first computed under (prefix cache)."""
    cached: int = 0
    """Prompt tokens whose keys and values came from the prefix cache."""
    tokens: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    entropies: list[float] = field(default_factory=list)
    finish: tuple[FinishReason, str | None] = ("length", None)

    def push(self, token: int, logprob: float, entropy: float, eos: bool) -> bool:
        """Record a sampled token; return whether the row is finished (why: :attr:`finish`).

        ``eos``: the token ends the row (an end-of-sequence token, or one of the extras'
        ``stop_token_ids``). Stop strings are not checked while at most ``min_tokens`` tokens
        are out (a match must end in the text of a later token, as in vLLM)."""
        self.tokens.append(token)
        self.logprobs.append(logprob)
        self.entropies.append(entropy)
        stop = self.watcher.push(token) if self.watcher.stops else None
        if len(self.tokens) <= self.request.sampling.extras.min_tokens:
            stop = None
        if eos:
            self.finish = ("eos", None)
        elif stop is not None:
            self.finish = ("stop", stop)
        elif len(self.tokens) < self.budget:
            return False
        return True


@dataclass
class _Group:
    """Rows decoded together over one left-padded KV cache, with their per-row state.

    Row ``j`` of every cache layer holds ``pads[j]`` padding columns, then the row's own keys
    and values. ``tokens[j]`` is the row's last sampled token, fed at the next decode step at
    position ``positions[j]``; ``generated[j]`` counts its sampled tokens (its uniforms' key).
    ``processor`` applies the rows' :class:`~agentenv.policies.base.SamplingExtras`; it is None
    while every row's extras are neutral (plain sampling, at no extra cost).
    """

    rows: list[_Row]
    cache: Cache
    pads: np.ndarray
    tokens: torch.Tensor
    positions: torch.Tensor
    temperature: torch.Tensor
    top_p: torch.Tensor
    top_k: torch.Tensor
    seeds: np.ndarray
    generated: np.ndarray
    processor: LogitsProcessor | None = None

    @property
    def width(self) -> int:
        """Columns of the cache (padding included)."""
        return self.cache.get_seq_length()

    def select(self, keep: Sequence[int]) -> None:
        """Keep rows ``keep``, in that order (cache rows, settings and state)."""
        index = torch.tensor(keep, dtype=torch.long, device=self.tokens.device)
        self.cache.batch_select_indices(index)
        self.rows = [self.rows[j] for j in keep]
        self.pads, self.seeds, self.generated = (
            self.pads[keep],
            self.seeds[keep],
            self.generated[keep],
        )
        self.tokens, self.positions = self.tokens[index], self.positions[index]
        self.temperature, self.top_p, self.top_k = (
            self.temperature[index],
            self.top_p[index],
            self.top_k[index],
        )
        if self.processor is not None:
            self.processor.select(index)
            if all(row.request.sampling.extras.neutral for row in self.rows):
                self.processor = None

    def trim(self) -> None:
        """Drop the cache columns that are padding in every row."""
        drop = int(self.pads.min())
        if drop:
            for layer in _kv_layers(self.cache):
                layer.trim_left(drop)
            self.pads = self.pads - drop

    def join(self, other: _Group) -> None:
        """Append ``other``'s rows; the narrower cache's rows get left padding up to the
        wider's width (one copy of each cache)."""
        mine_width, their_width = self.width, other.width
        width = max(mine_width, their_width)
        for mine, theirs in zip(_kv_layers(self.cache), _kv_layers(other.cache), strict=True):
            mine.join(theirs)
        self.processor = _join_processors(
            self.processor, len(self.rows), other.processor, len(other.rows)
        )
        self.rows = self.rows + other.rows
        self.pads = np.concatenate(
            [self.pads + (width - mine_width), other.pads + (width - their_width)]
        )
        self.seeds = np.concatenate([self.seeds, other.seeds])
        self.generated = np.concatenate([self.generated, other.generated])
        self.tokens = torch.cat([self.tokens, other.tokens])
        self.positions = torch.cat([self.positions, other.positions])
        self.temperature = torch.cat([self.temperature, other.temperature])
        self.top_p = torch.cat([self.top_p, other.top_p])
        self.top_k = torch.cat([self.top_k, other.top_k])


def _join_processors(
    mine: LogitsProcessor | None, rows: int, theirs: LogitsProcessor | None, their_rows: int
) -> LogitsProcessor | None:
    """One processor for ``rows`` rows followed by ``their_rows`` rows (None if neither side
    has one); a side without one holds neutral rows only and gets a neutral processor."""
    if mine is None:
        if theirs is None:
            return None
        mine = theirs.neutral(rows)
    mine.extend(theirs if theirs is not None else mine.neutral(their_rows))
    return mine


def _kv_layers(cache: Cache) -> list[PaddedKVLayer]:
    """The cache's layers that hold keys and values (KV-sharing layers hold none)."""
    return [layer for layer in cache.layers if layer.is_initialized]


def merge_groups(running: _Group | None, joining: _Group | None) -> _Group | None:
    """``running``'s rows followed by ``joining``'s, in one cache: the columns that are padding
    in every running row are dropped, then the narrower cache is left-padded to the other's
    width. Every row keeps its own keys and values, only its left padding changes."""
    if running is None or joining is None:
        return joining if running is None else running
    running.trim()
    running.join(joining)
    return running


def _without_cancelled(group: _Group | None) -> _Group | None:
    """``group`` less the rows whose caller cancelled its request (None if none is left)."""
    if group is None:
        return None
    keep = [j for j, row in enumerate(group.rows) if not row.request.future.cancelled()]
    if not keep:
        return None
    if len(keep) < len(group.rows):
        group.select(keep)
    return group


def _settle(
    request: _Request, completion: Completion | None = None, error: BaseException | None = None
) -> None:
    """Give ``request``'s caller its completion or error, unless it was cancelled meanwhile."""
    future = request.future
    if future.done() or not future.set_running_or_notify_cancel():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(completion)


def left_padding_mask(pads: np.ndarray, width: int, device: torch.device) -> torch.Tensor:
    """The 0/1 attention mask of rows left-padded by ``pads`` to ``width`` columns."""
    columns = torch.arange(width, device=device)
    return (columns[None, :] >= torch.as_tensor(pads, device=device)[:, None]).long()


Scheduling = Literal["continuous", "static"]
"""How :class:`HFPolicy` forms batches (see its docstring)."""


MAX_INDEX = 2**31 - 1
"""Largest ``top_k`` / ``max_tokens`` accepted: what a 32-bit index holds."""


def check_sampling(sampling: SamplingParams, vocab_size: int = MAX_INDEX) -> None:
    """Raise ValueError naming the first out-of-range field of ``sampling`` (negative, NaN or
    infinite numbers, ``top_k`` beyond a 32-bit index, stops that are not strings; in the
    extras, a repetition penalty that is not positive, ``min_p`` outside [0, 1], ``min_tokens``
    above ``max_tokens`` as vLLM refuses it, token ids outside ``[0, vocab_size)``)."""
    extras = sampling.extras
    problems = {
        "max_tokens": not 0 <= sampling.max_tokens <= MAX_INDEX,
        "temperature": not (math.isfinite(sampling.temperature) and sampling.temperature >= 0),
        "top_p": not (math.isfinite(sampling.top_p) and 0 < sampling.top_p <= 1),
        "top_k": not 0 <= sampling.top_k <= MAX_INDEX,
        "stop": not all(isinstance(stop, str) for stop in sampling.stop),
        "extras.presence_penalty": not math.isfinite(extras.presence_penalty),
        "extras.frequency_penalty": not math.isfinite(extras.frequency_penalty),
        "extras.repetition_penalty": not (
            math.isfinite(extras.repetition_penalty) and extras.repetition_penalty > 0
        ),
        "extras.logit_bias": not all(
            _is_token(token, vocab_size) and math.isfinite(bias)
            for token, bias in extras.logit_bias
        ),
        "extras.min_p": not 0 <= extras.min_p <= 1,
        "extras.min_tokens": not 0 <= extras.min_tokens <= sampling.max_tokens,
        "extras.stop_token_ids": not all(
            _is_token(token, vocab_size) for token in extras.stop_token_ids
        ),
    }
    for name, bad in problems.items():
        if bad:
            value = attrgetter(name)(sampling)
            raise ValueError(f"SamplingParams.{name}={value!r} is out of range")


def _is_token(value: Any, vocab_size: int) -> bool:
    return isinstance(value, int) and 0 <= value < vocab_size


class HFPolicy:
    """A transformers causal LM as a :class:`~agentenv.policies.Policy`.

    Args:
        model: a loaded ``AutoModelForCausalLM`` (or peft-wrapped) module; read at every batch.
        tokenizer: its Hugging Face tokenizer (with a chat template).
        device: where inputs go; defaults to the model's device.
        max_batch_size: most rows in the running batch.
        max_wait_ms: when the worker is idle, how long the first request waits for others to
            be prefilled with it (a running batch takes new requests at its next step).
        name: reported name (default: the model's ``name_or_path``).
        seed: seeds the random row seeds of requests that give no ``seed``.
        batch_invariant: compute every generated row exactly as it would be computed alone
            (see the module docstring); None: wherever it holds (CPU with strict MKL, an SDPA
            model with full attention). It switches the model to :data:`ROWWISE_ATTENTION`,
            which is plain SDPA for every other forward pass.
        scheduling: ``"continuous"`` (iteration-level: a finished row is handed back at once,
            waiting requests join the running batch between decode steps) or ``"static"``
            (lock-step: a batch is formed while the worker is idle, runs until its last row
            finishes, and hands back all its completions then; the baseline of
            ``benchmarks/bench_rollout.py``). None: continuous wherever the model has full
            attention only (merging sliding-window caches is not supported), else static.
        max_prefill_tokens: continuous scheduling: most padded prompt tokens (rows x longest
            prompt) prefilled in one iteration, so a burst of long prompts does not stall the
            running rows for long; a longer prompt is prefilled alone.
        prefix_cache_mib: memory for the keys and values of finished rows (0: off, the
            default), so that a prompt extending a finished row's tokens (the next turn of
            a multi-turn episode) prefills only its new tokens (:mod:`agentenv.policies.
            prefix_cache`). A row that reuses them matches a fresh prefill up to
            floating-point rounding, not bit for bit. Models with full attention only.
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        device: str | torch.device | None = None,
        max_batch_size: int = 32,
        max_wait_ms: float = 5.0,
        name: str | None = None,
        seed: int | None = None,
        batch_invariant: bool | None = None,
        scheduling: Scheduling | None = None,
        max_prefill_tokens: int = 8192,
        prefix_cache_mib: float = 0.0,
    ) -> None:
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be >= 1, got {max_batch_size}")
        if max_prefill_tokens < 1:
            raise ValueError(f"max_prefill_tokens must be >= 1, got {max_prefill_tokens}")
        if prefix_cache_mib < 0:
            raise ValueError(f"prefix_cache_mib must be >= 0, got {prefix_cache_mib}")
        if prefix_cache_mib and not _full_attention_only(model.config):
            raise ValueError("prefix_cache_mib needs a model with full attention layers only")
        self.model = model
        self.tokenizer = tokenizer
        self.device = torch.device(device) if device is not None else _module_device(model)
        self.batch_invariant = _resolve_batch_invariance(model, self.device, batch_invariant)
        if self.batch_invariant:
            model.config._attn_implementation = ROWWISE_ATTENTION
        self.scheduling: Scheduling = _resolve_scheduling(model, scheduling)
        self.max_batch_size = max_batch_size
        self.max_prefill_tokens = max_prefill_tokens
        self.prefix_cache = (
            PrefixCache(int(prefix_cache_mib * 2**20)) if prefix_cache_mib > 0 else None
        )
        self.max_wait_s = max_wait_ms / 1000.0
        self.name = name or str(getattr(model, "name_or_path", "") or "hf")
        self.weights_lock = threading.RLock()
        self.stats = GenerationStats()
        self._rng = np.random.default_rng(seed)
        self._queue: queue.Queue[_Request | None] = queue.Queue()
        self._worker: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self._base_weights: dict[str, torch.Tensor] = {}
        self.lora_name: str | None = None
        self.pad_token_id = _first_int(tokenizer.pad_token_id, tokenizer.eos_token_id, 0)
        self.eos_token_ids = _eos_ids(model, tokenizer)
        model.eval()

    @classmethod
    def from_pretrained(
        cls,
        path: str | os.PathLike[str],
        *,
        device: str = "auto",
        dtype: str | torch.dtype = "auto",
        **kwargs: Any,
    ) -> HFPolicy:
        """Load a Hugging Face folder on ``device`` in ``dtype``; ``"auto"`` as
        :mod:`agentenv.devices` resolves it (CUDA with bf16 where native, else CPU float32)."""
        folder = Path(path)
        if not (folder / "config.json").is_file():
            raise FileNotFoundError(f"{folder} is not a Hugging Face model folder (no config.json)")
        target = resolve_device(device)
        torch_dtype = resolve_dtype(dtype, target)
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch_dtype).to(target)
        tokenizer = AutoTokenizer.from_pretrained(folder)
        kwargs.setdefault("name", folder.name)
        return cls(model, tokenizer, device=target, **kwargs)

    @property
    def max_positions(self) -> int:
        return int(getattr(self.model.config, "max_position_embeddings", 1 << 30))

    def reset_stats(self) -> None:
        self.stats = GenerationStats()

    # -- Policy protocol -----------------------------------------------------------------------
    async def generate(
        self,
        prompts: Sequence[Sequence[int]],
        sampling: SamplingParams,
        *,
        contexts: Sequence[EpisodeContext] | None = None,
    ) -> list[Completion]:
        """One completion per prompt; concurrent calls share batches.

        With ``sampling.seed`` set, row ``i`` of this call samples from seed hash(seed, i), so the
        same call returns the same completions whatever runs beside it.
        """
        requests = self.submit(prompts, sampling)
        return list(await asyncio.gather(*(asyncio.wrap_future(r.future) for r in requests)))

    def submit(self, prompts: Sequence[Sequence[int]], sampling: SamplingParams) -> list[_Request]:
        """Queue prompts for the worker thread; each request's ``future`` gets its Completion."""
        requests = self.make_requests(prompts, sampling)
        self._ensure_worker()
        for request in requests:
            self._queue.put(request)
        return requests

    def make_requests(
        self, prompts: Sequence[Sequence[int]], sampling: SamplingParams
    ) -> list[_Request]:
        """Checked requests with their row seeds, for :meth:`submit` or :meth:`generate_batch`."""
        check_sampling(sampling, int(self.model.config.vocab_size))
        prompts = [self._check_prompt(p, i) for i, p in enumerate(prompts)]
        seeds = request_seeds(sampling.seed, len(prompts), self._rng)
        return [_Request(p, sampling, s) for p, s in zip(prompts, seeds, strict=True)]

    async def score(
        self, prompts: Sequence[Sequence[int]], continuations: Sequence[Sequence[int]]
    ) -> list[np.ndarray]:
        """Teacher-forced log π(continuation[j] | prompt, continuation[:j]), batched."""
        pairs = [
            (self._check_prompt(p, i), c)
            for i, (p, c) in enumerate(score_pairs(prompts, continuations))
        ]
        return await asyncio.to_thread(self.score_sync, pairs)

    async def aclose(self) -> None:
        await asyncio.to_thread(self.close)

    def close(self) -> None:
        """Stop the worker thread (queued and running requests are served first). Idempotent."""
        with self._start_lock:
            worker, self._worker = self._worker, None
        if worker is not None:
            self._queue.put(None)
            worker.join()

    # -- LoRA adapters -------------------------------------------------------------------------
    def load_lora_adapter(self, name: str, path: str | os.PathLike[str]) -> None:
        """Merge the peft LoRA adapter saved at ``path`` into the served weights.

        Only one adapter is active at a time: loading replaces the previous one (its deltas are
        computed against base weights kept aside for the touched modules). Runs under
        :attr:`weights_lock`, so no batch sees half-merged weights.
        """
        deltas = lora_deltas(self.model, path)
        with self.weights_lock, torch.no_grad():
            self._restore_base()
            for module_path, delta in deltas.items():
                weight = self.model.get_submodule(module_path).weight
                self._base_weights[module_path] = weight.detach().clone()
                weight.add_(delta.to(device=weight.device, dtype=weight.dtype))
            self.lora_name = name

    def unload_lora_adapter(self, name: str | None = None) -> None:
        """Restore the base weights. ``name``, when given, must be the active adapter."""
        if name is not None and name != self.lora_name:
            raise KeyError(f"LoRA adapter {name!r} is not loaded (active: {self.lora_name!r})")
        with self.weights_lock, torch.no_grad():
            self._restore_base()
            self.lora_name = None

    def _restore_base(self) -> None:
        for module_path, weight in self._base_weights.items():
            self.model.get_submodule(module_path).weight.copy_(weight)
        self._base_weights.clear()

    # -- validation ----------------------------------------------------------------------------
    def _check_prompt(self, prompt: Sequence[int], index: int) -> list[int]:
        ids = [int(t) for t in prompt]
        if not ids:
            raise ValueError(f"prompt {index} is empty; give at least one token id")
        vocab = int(self.model.config.vocab_size)
        bad = [t for t in ids if not 0 <= t < vocab]
        if bad:
            raise ValueError(f"prompt {index} has token ids outside [0, {vocab}): {bad[:5]}")
        if len(ids) >= self.max_positions:
            raise ValueError(
                f"prompt {index} has {len(ids)} tokens; the model takes at most "
                f"{self.max_positions - 1} before generating"
            )
        return ids

    # -- worker thread -------------------------------------------------------------------------
    def _ensure_worker(self) -> None:
        with self._start_lock:
            if self._worker is None or not self._worker.is_alive():
                self._worker = threading.Thread(
                    target=self._serve, name=f"HFPolicy-{self.name}", daemon=True
                )
                self._worker.start()

    def _serve(self) -> None:
        """The scheduler loop: admit waiting requests, run one iteration, hand back the rows
        that finished; until :meth:`close` (queued and running requests are served first)."""
        waiting: deque[_Request] = deque()
        running: _Group | None = None
        held: list[_Row] = []
        closing = False
        while True:
            if not closing:
                closing = self._receive(waiting, idle=running is None and not waiting)
            admitted = self._admit(waiting, running)
            if running is None and not admitted:
                if closing:
                    return
                continue
            running, finished = self._iterate(running, admitted)
            held += finished
            if running is None or self.scheduling == "continuous":
                self._hand_back(held)
                held = []

    def _receive(self, waiting: deque[_Request], idle: bool) -> bool:
        """Move queued requests to ``waiting``; return True once :meth:`close` asked to stop.

        When ``idle`` (nothing running or waiting), block for the next request, then give
        others up to ``max_wait_ms`` to arrive (at most ``max_batch_size``), so that a burst
        is prefilled together. Otherwise take what is queued, without waiting.
        """
        deadline = None
        if idle:
            item = self._queue.get()
            if item is None:
                return True
            waiting.append(item)
            deadline = time.monotonic() + self.max_wait_s
        while True:
            filling = deadline is not None and len(waiting) < self.max_batch_size
            remaining = deadline - time.monotonic() if filling else 0.0
            try:
                item = (
                    self._queue.get(timeout=remaining)
                    if remaining > 0
                    else self._queue.get_nowait()
                )
            except queue.Empty:
                return False
            if item is None:
                return True
            waiting.append(item)

    def _admit(self, waiting: deque[_Request], running: _Group | None) -> list[_Request]:
        """The waiting requests that join at this iteration, in arrival order: as many as there
        are free rows (static scheduling: only into an empty batch) and, past the first, as long
        as their padded prefill (rows x longest prompt) stays within ``max_prefill_tokens``
        (continuous scheduling). Cancelled requests are dropped."""
        if running is None:
            free = self.max_batch_size
        elif self.scheduling == "continuous":
            free = self.max_batch_size - len(running.rows)
        else:
            free = 0
        budget = self.max_prefill_tokens if self.scheduling == "continuous" else math.inf
        admitted: list[_Request] = []
        longest = 0
        while waiting and len(admitted) < free:
            if waiting[0].future.cancelled():
                waiting.popleft()
                continue
            widest = max(longest, len(waiting[0].prompt))
            if admitted and widest * (len(admitted) + 1) > budget:
                break
            admitted.append(waiting.popleft())
            longest = widest
        return admitted

    @torch.inference_mode()
    def _iterate(
        self, running: _Group | None, admitted: list[_Request]
    ) -> tuple[_Group | None, list[_Row]]:
        """One scheduler iteration: drop cancelled rows, prefill ``admitted`` and join them to
        ``running``, then one decode step. Returns the running group and the finished rows.

        Failures stay local: a joining group whose prefill fails is prefilled again one request
        at a time, so a bad request fails only its own caller; any other failure fails the rows
        it ran. The worker lives on either way.
        """
        running = _without_cancelled(running)
        rows, finished = self._rows(admitted)
        joined: _Group | None = None
        try:
            with self.weights_lock:
                if rows:
                    self._count_batch(running, len(rows))
                    joined, done = self._prefill_isolated(rows)
                    finished += done
                    running = merge_groups(running, joined)
                if running is not None:
                    running, done = self._decode(running)
                    finished += done
        except BaseException as exc:
            failed = {id(r): r for g in (running, joined) if g is not None for r in g.rows}
            for row in failed.values():
                _settle(row.request, error=exc)
            return None, finished
        return running, finished

    def _prefill_isolated(self, rows: list[_Row]) -> tuple[_Group | None, list[_Row]]:
        """:meth:`_prefill`, or, if it fails, each row's prefill alone (failing rows get the
        error and leave)."""
        try:
            return self._prefill(rows)
        except Exception as exc:
            if len(rows) == 1:
                _settle(rows[0].request, error=exc)
                return None, []
        joined: _Group | None = None
        finished: list[_Row] = []
        for row in rows:
            group, done = self._prefill_isolated([self._new_row(row.request)])
            joined = merge_groups(joined, group)
            finished += done
        return joined, finished

    def _hand_back(self, rows: list[_Row]) -> None:
        """Resolve the futures of finished ``rows`` with their completions."""
        for row in rows:
            self.stats.rows += 1
            _settle(row.request, self._completion(row))

    def _count_batch(self, running: _Group | None, joining: int) -> None:
        """Count a new busy period (rows entering an empty batch) and the rows in flight."""
        if running is None:
            self.stats.batches += 1
        busy = 0 if running is None else len(running.rows)
        self.stats.max_batch_rows = max(self.stats.max_batch_rows, busy + joining)

    # -- generation ----------------------------------------------------------------------------
    @torch.inference_mode()
    def generate_batch(self, batch: Sequence[_Request]) -> list[Completion]:
        """Generate every request of ``batch`` together, in this thread, to completion: one
        prefill, then decode steps until every row has finished (futures are left alone)."""
        rows, finished = self._rows(batch)
        with self.weights_lock:
            running = None
            if rows:
                self._count_batch(None, len(rows))
                running, finished_first = self._prefill(rows)
                finished += finished_first
            while running is not None:
                running, done = self._decode(running)
                finished += done
        by_request = {id(row.request): row for row in finished}
        self.stats.rows += len(batch)
        return [self._completion(by_request[id(request)]) for request in batch]

    def _rows(self, requests: Sequence[_Request]) -> tuple[list[_Row], list[_Row]]:
        """Rows for ``requests``: those with tokens to generate, and those finished before
        their first token (``max_tokens=0``, or no room left in the context)."""
        rows = [self._new_row(r) for r in requests]
        return [r for r in rows if r.budget > 0], [r for r in rows if r.budget == 0]

    def _new_row(self, request: _Request) -> _Row:
        """A fresh row for ``request``: its budget is capped by the room left in the context."""
        room = self.max_positions - len(request.prompt)
        budget = max(0, min(request.sampling.max_tokens, room))
        return _Row(request, budget, StopWatcher(self.tokenizer, request.sampling.stop))

    def _version(self) -> int:
        """The weights version the prefix cache keys its entries by (0 without a cache)."""
        return 0 if self.prefix_cache is None else weights_version(self.model)

    def _prefill(self, rows: list[_Row]) -> tuple[_Group | None, list[_Row]]:
        """Run the prompts of ``rows`` through the model as one left-padded group (longest
        first, so equally padded rows are adjacent) and sample every row's first token. A row
        whose prompt extends a prefix-cache entry starts from the entry's keys and values and
        runs only its remaining tokens: the pass covers the last ``max(remaining)`` columns.
        Returns the group of unfinished rows and the finished ones."""
        device = self.device
        rows = sorted(rows, key=lambda row: -len(row.request.prompt))
        lengths = np.array([len(row.request.prompt) for row in rows], dtype=np.int64)
        matches = self._cached_prefixes(rows)
        cached = np.array([0 if m is None else m[1] for m in matches], dtype=np.int64)
        for row, reused in zip(rows, cached.tolist(), strict=True):
            row.cached = reused
        width = int(lengths.max())
        pads = width - lengths
        fresh = lengths - cached
        chunk = int(fresh.max())
        query_pads = chunk - fresh
        input_ids = torch.nn.utils.rnn.pad_sequence(
            [torch.tensor(row.request.prompt[c:]) for row, c in zip(rows, cached, strict=True)],
            batch_first=True,
            padding_value=self.pad_token_id,
            padding_side="left",
        ).to(device)
        positions = torch.from_numpy(lengths - chunk)[:, None] + torch.arange(chunk)[None]
        cache = (
            self._cache_of(matches, pads, width, query_pads) if cached.any() else self._new_cache()
        )
        logits = self.model(
            input_ids=input_ids,
            attention_mask=None if self.batch_invariant else left_padding_mask(pads, width, device),
            position_ids=positions.clamp(min=0).to(device),
            cache=cache,
            use_cache=True,
            logits_to_keep=1,
            **self._attention_kwargs(pads, query_pads),
        ).logits[:, -1]
        for layer in cache.layers:
            layer.keep = None
        self.stats.prefilled_tokens += int(fresh.sum())
        return self._first_tokens(rows, cache, pads, logits)

    def _cached_prefixes(self, rows: list[_Row]) -> list[tuple[Entry, int] | None]:
        """Each row's prefix-cache match and how many of its first tokens it covers (None: no
        match, or no cache); stamps the rows with the weights version their keys and values
        are computed under."""
        if self.prefix_cache is None:
            return [None] * len(rows)
        version = self._version()
        for row in rows:
            row.version = version
        return [self.prefix_cache.match(row.request.prompt, version) for row in rows]

    def _cache_of(
        self,
        matches: list[tuple[Entry, int] | None],
        pads: np.ndarray,
        width: int,
        query_pads: np.ndarray,
    ) -> Cache:
        """A cache of ``width`` columns (the widest prompt's) whose row ``j`` holds the keys
        and values of its match's first tokens after ``pads[j]`` padding columns, filled up to
        the pass's columns (the last ``chunk``, the longest run of new tokens): the pass writes
        those, except the first ``query_pads[j]`` of row ``j``, which its padding or cached
        prefix holds (:attr:`PaddedKVLayer.keep`)."""
        rows = len(matches)
        chunk = width - int((pads + [0 if m is None else m[1] for m in matches]).min())
        template = next(m[0] for m in matches if m is not None)
        keep = torch.arange(chunk)[None] < torch.from_numpy(query_pads)[:, None]
        keep = keep[:, None, :, None].to(self.device)
        cache = self._new_cache()
        for index, kv in enumerate(template.layers):
            if kv is None:
                cache.layers.append(PaddedKVLayer())
                continue
            heads, _, dim = kv[0].shape
            keys, values = (t.new_zeros(rows, heads, width, dim) for t in kv)
            for j, match in enumerate(matches):
                if match is not None:
                    entry, reuse = match
                    start = int(pads[j])
                    for buffer, cached in zip((keys, values), entry.layers[index], strict=True):
                        buffer[j, :, start : start + reuse] = cached[:, :reuse]
            layer = PaddedKVLayer.holding(keys, values, width - chunk)
            layer.keep = keep
            cache.layers.append(layer)
        return cache

    def _first_tokens(
        self, rows: list[_Row], cache: Cache, pads: np.ndarray, logits: torch.Tensor
    ) -> tuple[_Group | None, list[_Row]]:
        """The group of freshly prefilled ``rows`` (``logits``: each one's last prompt
        position), with every row's first token sampled."""
        device = self.device
        self.stats.prefills += 1
        self.stats.forward_passes += 1
        lengths = np.array([len(row.request.prompt) for row in rows], dtype=np.int64)
        sampling = [row.request.sampling for row in rows]
        group = _Group(
            rows=rows,
            cache=cache,
            pads=pads,
            tokens=torch.zeros(len(rows), dtype=torch.long, device=device),
            positions=torch.from_numpy(lengths).to(device),
            temperature=torch.tensor([s.temperature for s in sampling], device=device),
            top_p=torch.tensor([s.top_p for s in sampling], device=device),
            top_k=torch.tensor([s.top_k for s in sampling], device=device),
            seeds=np.array([row.request.seed for row in rows], dtype=np.uint64),
            generated=np.zeros(len(rows), dtype=np.int64),
            processor=self._processor(rows, int(logits.shape[-1])),
        )
        return self._advance(group, logits)

    def _processor(self, rows: list[_Row], vocab_size: int) -> LogitsProcessor | None:
        """The logits processor of fresh ``rows``' extras; None if every row's are neutral."""
        extras = [row.request.sampling.extras for row in rows]
        if all(e.neutral for e in extras):
            return None
        return LogitsProcessor(
            extras,
            [row.request.prompt for row in rows],
            vocab_size=vocab_size,
            eos_token_ids=sorted(self.eos_token_ids),
            device=self.device,
        )

    def _new_cache(self) -> Cache:
        """An empty cache: :class:`PaddedKVLayer` layers, or the model's own dynamic layers for
        models with sliding-window layers (static scheduling only)."""
        if _full_attention_only(self.model.config):
            return Cache(layer_class_to_replicate=PaddedKVLayer)
        return DynamicCache(config=self.model.config)

    def _decode(self, group: _Group) -> tuple[_Group | None, list[_Row]]:
        """One decode step: feed every row its last token and sample the next (batch-invariant
        attention reads the padding from ``left_padding`` and needs no mask)."""
        mask = None
        if not self.batch_invariant:
            mask = left_padding_mask(group.pads, group.width + 1, self.device)
        logits = self.model(
            input_ids=group.tokens[:, None],
            attention_mask=mask,
            position_ids=group.positions[:, None],
            cache=group.cache,
            use_cache=True,
            **self._attention_kwargs(group.pads),
        ).logits[:, -1]
        self.stats.decode_steps += 1
        self.stats.forward_passes += 1
        group.positions = group.positions + 1
        return self._advance(group, logits)

    def _advance(self, group: _Group, logits: torch.Tensor) -> tuple[_Group | None, list[_Row]]:
        """Sample every row's next token from ``logits`` (one row each), processed by the
        group's extras if any; its logprob and entropy are those of the raw distribution. Rows
        that finish (eos or a stop token id, a stop string, their budget) leave the group and
        are returned."""
        uniforms = torch.from_numpy(row_uniforms(group.seeds, group.generated)).to(self.device)
        processor = group.processor
        processed = logits if processor is None else processor(logits, group.temperature)
        chosen = sample_tokens(processed, group.temperature, group.top_p, group.top_k, uniforms)
        chosen_lp, entropy = token_logprobs_and_entropy(logits, chosen)
        if processor is None:
            eos = torch.tensor(sorted(self.eos_token_ids), device=self.device)
            ends = torch.isin(chosen, eos).tolist()
        else:
            processor.push(chosen)
            ends = processor.finished(chosen).tolist()
        group.tokens, group.generated = chosen, group.generated + 1
        self.stats.generated_tokens += len(group.rows)
        lps, hs = torch.stack([chosen_lp, entropy]).tolist()
        steps = zip(group.rows, chosen.tolist(), lps, hs, ends, strict=True)
        done = [row.push(token, lp, h, end) for row, token, lp, h, end in steps]
        finished = [row for row, d in zip(group.rows, done, strict=True) if d]
        if not finished:
            return group, []
        if self.prefix_cache is not None:
            self._remember(group, [j for j, d in enumerate(done) if d])
        keep = [j for j, d in enumerate(done) if not d]
        if not keep:
            return None, finished
        group.select(keep)
        return group, finished

    def _remember(self, group: _Group, finished: list[int]) -> None:
        """Keep the keys and values of ``group``'s finished rows in the prefix cache: each
        row's prompt and generated tokens but the last (never fed), unless the weights changed
        while it ran."""
        version = self._version()
        width = group.width
        for j in finished:
            row = group.rows[j]
            if row.version != version:
                continue
            start = int(group.pads[j])
            tokens = (row.request.prompt + row.tokens)[: width - start]
            layers = [
                (layer.keys[j, :, start:].clone(), layer.values[j, :, start:].clone())
                if layer.is_initialized
                else None
                for layer in group.cache.layers
            ]
            self.prefix_cache.put(tokens, layers, version)

    def _attention_kwargs(
        self, pads: np.ndarray, query_pads: np.ndarray | None = None
    ) -> dict[str, Any]:
        """Forward kwargs telling :func:`rowwise_attention` each row's padding (batch-invariant)."""
        return {"left_padding": pad_runs(pads, query_pads)} if self.batch_invariant else {}

    def _completion(self, row: _Row) -> Completion:
        text = self.tokenizer.decode(row.tokens, skip_special_tokens=True)
        return Completion(
            row.tokens,
            text,
            row.logprobs,
            *row.finish,
            entropies=row.entropies,
            cached_tokens=row.cached,
        )

    # -- scoring -------------------------------------------------------------------------------
    @torch.inference_mode()
    def score_sync(self, pairs: Sequence[tuple[list[int], list[int]]]) -> list[np.ndarray]:
        """Teacher-forced logprobs of each ``(prompt, continuation)`` pair, in memory-bounded chunks.

        Each chunk is laid out as [left pad | prompt | continuation | right pad], so all
        continuations start at the same column and one ``logits_to_keep`` slice covers them.
        """
        out: list[np.ndarray] = [np.zeros(0, dtype=np.float32)] * len(pairs)
        order = sorted(
            (i for i in range(len(pairs)) if pairs[i][1]), key=lambda i: -len(pairs[i][1])
        )
        vocab = int(self.model.config.vocab_size)
        with self.weights_lock:
            start = 0
            while start < len(order):
                longest = len(pairs[order[start]][1])
                rows = max(1, min(self.max_batch_size, SCORE_LOGITS_BUDGET // (longest * vocab)))
                chunk = order[start : start + rows]
                for i, values in zip(
                    chunk, self._score_chunk([pairs[i] for i in chunk]), strict=True
                ):
                    out[i] = values
                start += rows
        return out

    def _score_chunk(self, pairs: Sequence[tuple[list[int], list[int]]]) -> list[np.ndarray]:
        device = self.device
        prompt_width = max(len(p) for p, _ in pairs)
        cont_width = max(len(c) for _, c in pairs)
        ids = torch.full((len(pairs), prompt_width + cont_width), self.pad_token_id)
        mask = torch.zeros_like(ids)
        for row, (prompt, cont) in enumerate(pairs):
            left = prompt_width - len(prompt)
            ids[row, left : prompt_width + len(cont)] = torch.tensor(prompt + cont)
            mask[row, left : prompt_width + len(cont)] = 1
        ids, mask = ids.to(device), mask.to(device)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        logits = self.model(
            input_ids=ids,
            attention_mask=mask,
            position_ids=positions,
            logits_to_keep=cont_width + 1,
        ).logits[:, :-1]
        self.stats.score_forward_passes += 1
        targets = ids[:, prompt_width:]
        values = torch.log_softmax(logits.float(), dim=-1).gather(-1, targets[..., None])[..., 0]
        values = values.cpu().numpy()
        return [values[row, : len(cont)] for row, (_, cont) in enumerate(pairs)]


def _resolve_batch_invariance(model: Any, device: torch.device, wanted: bool | None) -> bool:
    """``wanted``, checked: True needs an SDPA model with full attention and row-independent
    matrix products on ``device``; None gives whether all of that holds on CPU."""
    config = model.config
    supported = config._attn_implementation in ("sdpa", ROWWISE_ATTENTION) and (
        _full_attention_only(config)
    )
    if wanted is False or (wanted is None and (device.type != "cpu" or not supported)):
        return False
    if not supported:
        raise ValueError(
            "batch_invariant: needs an SDPA model without sliding-window layers, got attention "
            f"{config._attn_implementation!r}"
        )
    if _rows_independent_in_matmul(device):
        return True
    advice = (
        "set MKL_CBWR=AUTO,STRICT in the environment, or import agentenv.policies.hf before "
        "torch runs its first matrix product"
        if device.type == "cpu"
        else f"{device.type} matrix products depend on the batch size"
    )
    if wanted:
        raise ValueError(
            f"batch_invariant: rows of a matrix product depend on their batch; {advice}"
        )
    warnings.warn(f"HFPolicy: generated rows depend on their batch-mates ({advice})", stacklevel=3)
    return False


def _resolve_scheduling(model: Any, wanted: str | None) -> Scheduling:
    """``wanted``, checked; None gives continuous scheduling wherever the model has full
    attention only (a sliding-window layer's cache cannot be merged with another's)."""
    if wanted not in (None, "continuous", "static"):
        raise ValueError(f"scheduling must be 'continuous' or 'static', got {wanted!r}")
    mergeable = _full_attention_only(model.config)
    if wanted == "continuous" and not mergeable:
        raise ValueError(
            "scheduling='continuous' merges KV caches of full-attention layers only; this model "
            "has sliding-window layers: use scheduling='static'"
        )
    if wanted is not None:
        return wanted
    return "continuous" if mergeable else "static"


def _module_device(model: Any) -> torch.device:
    try:
        return next(model.parameters()).device
    except StopIteration:
        return torch.device("cpu")


def _first_int(*values: Any) -> int:
    for value in values:
        if isinstance(value, int):
            return value
    raise ValueError("no integer token id found")


def _eos_ids(model: Any, tokenizer: Any) -> set[int]:
    """End-of-sequence ids: the tokenizer's plus the model's generation config's (int or list)."""
    ids: set[int] = set()
    config = getattr(model, "generation_config", None)
    for value in (tokenizer.eos_token_id, getattr(config, "eos_token_id", None)):
        if isinstance(value, int):
            ids.add(value)
        elif isinstance(value, list | tuple):
            ids.update(int(v) for v in value)
    if not ids:
        raise ValueError("the tokenizer and model define no eos token id")
    return ids


_LORA_SUFFIXES = (".lora_A.weight", ".lora_B.weight")


def lora_deltas(model: Any, path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Per-module weight deltas ``scale * B @ A`` of a peft LoRA adapter folder.

    ``scale`` is ``alpha / r`` (``alpha / sqrt(r)`` with rsLoRA; Hu et al. 2021, Kalajdzievski
    2023), with peft's per-module ``alpha_pattern``. Plain LoRA on linear layers only: DoRA,
    LoRA biases, embedding adapters and ``modules_to_save`` are refused with a clear error.
    """
    folder = Path(path)
    if not (folder / "adapter_config.json").is_file():
        raise FileNotFoundError(f"{folder} is not a peft adapter folder (no adapter_config.json)")
    config = PeftConfig.from_pretrained(str(folder))
    if str(config.peft_type) not in ("LORA", "PeftType.LORA"):
        raise ValueError(f"{folder}: only LoRA adapters can be loaded, got {config.peft_type}")
    for feature in ("use_dora", "lora_bias", "modules_to_save"):
        if getattr(config, feature, None):
            raise ValueError(f"{folder}: LoRA adapters with {feature} are not supported")
    if getattr(config, "bias", "none") != "none":
        raise ValueError(f"{folder}: LoRA adapters with bias={config.bias!r} are not supported")
    state = load_peft_weights(str(folder), device="cpu")
    pairs: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in state.items():
        suffix = next((s for s in _LORA_SUFFIXES if key.endswith(s)), None)
        if suffix is None:
            raise ValueError(f"{folder}: unsupported adapter tensor {key!r}")
        module_path = key[: -len(suffix)].removeprefix("base_model.model.")
        pairs.setdefault(module_path, {})[suffix[1:7]] = value.float()
    deltas: dict[str, torch.Tensor] = {}
    for module_path, ab in sorted(pairs.items()):
        try:
            weight = model.get_submodule(module_path).weight
        except AttributeError as exc:
            raise ValueError(
                f"{folder}: adapter targets {module_path!r}, not in the model"
            ) from exc
        rank = ab["lora_A"].shape[0]
        alpha = _pattern_value(config.alpha_pattern, module_path, config.lora_alpha)
        scale = alpha / math.sqrt(rank) if config.use_rslora else alpha / rank
        delta = (ab["lora_B"] @ ab["lora_A"]) * scale
        deltas[module_path] = delta.T if config.fan_in_fan_out else delta
        if deltas[module_path].shape != weight.shape:
            raise ValueError(
                f"{folder}: adapter for {module_path} has shape {tuple(delta.shape)}, "
                f"the model's weight {tuple(weight.shape)}"
            )
    return deltas


def _pattern_value(patterns: dict[str, Any] | None, module_path: str, default: Any) -> Any:
    """peft's per-module override: a key matches a module whose path ends with it."""
    for key, value in (patterns or {}).items():
        if re.match(rf"(.*\.)?{key}$", module_path):
            return value
    return default
