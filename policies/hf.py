"""HFPolicy: a transformers causal LM behind the Policy protocol, with request coalescing.

Concurrent ``generate`` calls (from many episodes' coroutines, or many HTTP requests) are queued
to one worker thread, which groups them into left-padded batches of up to ``max_batch_size``
rows, waiting at most ``max_wait_ms`` for a batch to fill. Each batch runs our own sampling loop
over a KV cache, so every row has its own stop strings, max tokens, temperature, top-p, top-k
and seed; rows that finish leave the batch (their cache rows are dropped) and never grow.

Weights are read from :attr:`HFPolicy.model` at every batch (no copies), so a trainer that
updates the module in place is seen by the next batch. Hold :attr:`HFPolicy.weights_lock` while
changing weights: every generation batch and scoring chunk runs under it.

Batch invariance (``batch_invariant``, on by default on CPU): which requests share a batch depends
on when they arrive, so a row's tokens and logprobs must not depend on its batch-mates, or two runs
with the same seeds differ. Two things made them depend on it, measured on the tiny model:

- matrix products: MKL picks its kernel by the number of rows, so a row of ``x @ W`` changes in
  the last bits with the batch size (and with the padded width, which multiplies the rows of a
  prefill). MKL's strict conditional numerical reproducibility (``MKL_CBWR=AUTO,STRICT``, set
  below unless the environment sets it; MKL reads it at its first call) computes every row alike;
- attention over left padding: the kernels' reductions over keys group a row's keys differently
  when its padding changes. :func:`rowwise_attention` runs each run of equally padded rows as
  one unpadded SDPA call, so a row attends exactly as it would alone.

Sampling is per row: a row's uniform at its k-th token is hash(row seed, k), and top-p/top-k
truncation applies to the rows that ask for it only.
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
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import AttentionInterface, AutoModelForCausalLM, AutoTokenizer, DynamicCache
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask

from agentenv.policies.base import (
    Completion,
    EpisodeContext,
    FinishReason,
    SamplingParams,
    score_pairs,
)

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
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample one token per row; return ``(tokens, log π(token))`` under the raw distribution.

    Rows with ``temperature == 0`` take the argmax. Others sample by inverse CDF from
    softmax(logits / T) in vocabulary order; rows that truncate sample by inverse CDF over the
    distribution sorted by probability, restricted to the ``top_k`` most likely tokens (0 = all)
    and to the smallest prefix whose mass reaches ``top_p``. Every step is row-wise, so a row's
    token depends on its own logits, settings and uniform only.
    """
    logits = logits.float()
    raw_logprobs = torch.log_softmax(logits, dim=-1)
    greedy = logits.argmax(dim=-1)
    if bool((temperature == 0).all()):
        return greedy, raw_logprobs.gather(-1, greedy[:, None])[:, 0]
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
    tokens = torch.where(temperature == 0, greedy, sampled)
    return tokens, raw_logprobs.gather(-1, tokens[:, None])[:, 0]


def _inverse_cdf(probs: torch.Tensor, uniforms: torch.Tensor) -> torch.Tensor:
    """Per row, the first index whose cumulative mass exceeds ``u`` times the row's total."""
    cdf = probs.cumsum(-1)
    target = uniforms.to(cdf.dtype)[:, None] * cdf[:, -1:]
    return torch.searchsorted(cdf, target, right=True).clamp(max=cdf.shape[-1] - 1)[:, 0]


PadRuns = tuple[tuple[int, int, int], ...]
"""Runs ``(start, stop, pad)`` of consecutive batch rows with the same left padding."""


def pad_runs(pads: Sequence[int]) -> PadRuns:
    """Split rows into runs of equal left padding (rows sorted by padding give one per length)."""
    values = np.asarray(pads, dtype=np.int64)
    cuts = [0, *(np.flatnonzero(np.diff(values)) + 1).tolist(), len(values)]
    return tuple((a, b, int(values[a])) for a, b in zip(cuts[:-1], cuts[1:], strict=True))


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
    ``start:stop`` (padded by ``pad``) attend with keys ``pad:`` and their queries at or after
    ``pad``, in one unpadded, causal SDPA call per run: the same shapes and values the rows
    would have alone, so the output does not depend on how the batch was padded. Outputs of
    padding queries are zero.
    """
    if left_padding is None:
        return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)
    rows, heads, q_len, _ = query.shape
    cached = key.shape[2] - q_len
    if q_len > 1 and cached:
        raise ValueError("rowwise attention: a multi-token query must start an empty cache")
    if len(left_padding) == 1 and left_padding[0][2] == 0:  # no row is padded
        return sdpa_attention_forward(module, query, key, value, None, **kwargs)
    out = query.new_zeros(rows, q_len, heads, value.shape[-1])
    for start, stop, pad in left_padding:
        first = max(0, pad - cached)
        part, _ = sdpa_attention_forward(
            module,
            query[start:stop, :, first:],
            key[start:stop, :, pad:],
            value[start:stop, :, pad:],
            None,
            **kwargs,
        )
        out[start:stop, first:] = part
    return out, None


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


class StopWatcher:
    """Decodes a growing token sequence incrementally and reports the first stop string.

    Only the newly completed text is decoded each step (a two-token window), and only the tail
    that could hold a match ending in it is searched, so a step costs O(stop length).
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
        start = max(0, len(self.text) - self.longest + 1)
        self.text += after[len(before) :]
        self._prefix, self._read = self._read, len(self.ids)
        tail = self.text[start:]
        found = [(tail.find(s) + len(s), s) for s in self.stops if s in tail]
        return min(found)[1] if found else None


@dataclass
class GenerationStats:
    """Counters since construction (or :meth:`HFPolicy.reset_stats`)."""

    batches: int = 0
    """Batched generation runs (each serves up to ``max_batch_size`` coalesced rows)."""
    forward_passes: int = 0
    """Model forward calls made by generation (prefill + one per decoding step)."""
    rows: int = 0
    """Completions produced."""
    generated_tokens: int = 0
    score_forward_passes: int = 0
    max_batch_rows: int = 0


@dataclass
class _Request:
    prompt: list[int]
    sampling: SamplingParams
    seed: np.uint64
    future: concurrent.futures.Future[Completion] = field(default_factory=concurrent.futures.Future)


MAX_INDEX = 2**31 - 1
"""Largest ``top_k`` / ``max_tokens`` accepted: what a 32-bit index holds."""


def check_sampling(sampling: SamplingParams) -> None:
    """Raise ValueError naming the first out-of-range field of ``sampling`` (negative, NaN or
    infinite numbers, ``top_k`` beyond a 32-bit index, stops that are not strings)."""
    problems = {
        "max_tokens": not 0 <= sampling.max_tokens <= MAX_INDEX,
        "temperature": not (math.isfinite(sampling.temperature) and sampling.temperature >= 0),
        "top_p": not (math.isfinite(sampling.top_p) and 0 < sampling.top_p <= 1),
        "top_k": not 0 <= sampling.top_k <= MAX_INDEX,
        "stop": not all(isinstance(stop, str) for stop in sampling.stop),
    }
    for name, bad in problems.items():
        if bad:
            raise ValueError(f"SamplingParams.{name}={getattr(sampling, name)!r} is out of range")


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def default_dtype(device: str | torch.device) -> torch.dtype:
    """bf16 on a CUDA device that supports it, float32 otherwise."""
    if torch.device(device).type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float32


class HFPolicy:
    """A transformers causal LM as a :class:`~agentenv.policies.Policy`.

    Args:
        model: a loaded ``AutoModelForCausalLM`` (or peft-wrapped) module; read at every batch.
        tokenizer: its Hugging Face tokenizer (with a chat template).
        device: where inputs go; defaults to the model's device.
        max_batch_size: most rows per generation batch.
        max_wait_ms: how long the first queued request waits for others to join its batch.
        name: reported name (default: the model's ``name_or_path``).
        seed: seeds the random row seeds of requests that give no ``seed``.
        batch_invariant: compute every generated row exactly as it would be computed alone
            (see the module docstring); None: wherever it holds (CPU with strict MKL, an SDPA
            model with full attention). It switches the model to :data:`ROWWISE_ATTENTION`,
            which is plain SDPA for every other forward pass.
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
    ) -> None:
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be >= 1, got {max_batch_size}")
        self.model = model
        self.tokenizer = tokenizer
        self.device = torch.device(device) if device is not None else _module_device(model)
        self.batch_invariant = _resolve_batch_invariance(model, self.device, batch_invariant)
        if self.batch_invariant:
            model.config._attn_implementation = ROWWISE_ATTENTION
        self.max_batch_size = max_batch_size
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
        """Load a Hugging Face folder: CUDA when available (bf16 where supported), else CPU fp32."""
        folder = Path(path)
        if not (folder / "config.json").is_file():
            raise FileNotFoundError(f"{folder} is not a Hugging Face model folder (no config.json)")
        target = default_device() if device == "auto" else device
        torch_dtype = default_dtype(target) if dtype == "auto" else _as_dtype(dtype)
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
        check_sampling(sampling)
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
        """Stop the worker thread (queued requests are still served first). Idempotent."""
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
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch, stop = self._collect(first)
            batch = [r for r in batch if r.future.set_running_or_notify_cancel()]
            if batch:
                self._run(batch)
            if stop:
                return

    def _collect(self, first: _Request) -> tuple[list[_Request], bool]:
        """The first request plus whatever arrives within ``max_wait`` (up to the batch size)."""
        batch = [first]
        deadline = time.monotonic() + self.max_wait_s
        while len(batch) < self.max_batch_size:
            remaining = deadline - time.monotonic()
            try:
                item = (
                    self._queue.get(timeout=remaining)
                    if remaining > 0
                    else self._queue.get_nowait()
                )
            except queue.Empty:
                break
            if item is None:
                return batch, True
            batch.append(item)
        return batch, False

    def _run(self, batch: list[_Request]) -> None:
        """Generate ``batch``; if it fails, each request again alone, so one bad row fails only
        its own caller. The worker lives on either way."""
        try:
            with self.weights_lock:
                completions = self.generate_batch(batch)
        except BaseException as exc:
            if len(batch) > 1 and isinstance(exc, Exception):
                for request in batch:
                    self._run([request])
            else:
                for request in batch:
                    request.future.set_exception(exc)
            return
        for request, completion in zip(batch, completions, strict=True):
            request.future.set_result(completion)

    # -- generation ----------------------------------------------------------------------------
    @torch.inference_mode()
    def generate_batch(self, batch: Sequence[_Request]) -> list[Completion]:
        """Generate every request of ``batch`` together (left-padded, KV-cached; rows ordered by
        prompt length, so equally padded rows are adjacent)."""
        model, device = self.model, self.device
        n = len(batch)
        self.stats.batches += 1
        self.stats.rows += n
        self.stats.max_batch_rows = max(self.stats.max_batch_rows, n)
        budget = [
            max(0, min(r.sampling.max_tokens, self.max_positions - len(r.prompt))) for r in batch
        ]
        tokens: list[list[int]] = [[] for _ in batch]
        logprobs: list[list[float]] = [[] for _ in batch]
        finish: list[tuple[FinishReason, str | None]] = [("length", None)] * n
        watchers = [StopWatcher(self.tokenizer, r.sampling.stop) for r in batch]
        active = sorted((i for i in range(n) if budget[i] > 0), key=lambda i: -len(batch[i].prompt))
        if not active:
            return [self._completion([], [], "length", None) for _ in batch]

        input_ids = torch.nn.utils.rnn.pad_sequence(
            [torch.tensor(batch[i].prompt) for i in active],
            batch_first=True,
            padding_value=self.pad_token_id,
            padding_side="left",
        ).to(device)
        lengths = torch.tensor([len(batch[i].prompt) for i in active], device=device)
        width = input_ids.shape[1]
        mask = (torch.arange(width, device=device)[None, :] >= (width - lengths)[:, None]).long()
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        temperature = torch.tensor([batch[i].sampling.temperature for i in active], device=device)
        top_p = torch.tensor([batch[i].sampling.top_p for i in active], device=device)
        top_k = torch.tensor([batch[i].sampling.top_k for i in active], device=device)
        seeds = np.array([batch[i].seed for i in active], dtype=np.uint64)
        eos = torch.tensor(sorted(self.eos_token_ids), device=device)
        pads = (width - lengths).tolist()
        rowwise = self._attention_kwargs(pads)

        cache = DynamicCache(config=model.config)
        logits = model(
            input_ids=input_ids,
            attention_mask=mask,
            position_ids=positions,
            past_key_values=cache,
            use_cache=True,
            logits_to_keep=1,
            **rowwise,
        ).logits[:, -1]
        self.stats.forward_passes += 1
        next_position = positions[:, -1] + 1
        while True:
            generated = np.array([len(tokens[row]) for row in active])
            uniforms = torch.from_numpy(row_uniforms(seeds, generated)).to(device)
            chosen, chosen_lp = sample_tokens(logits, temperature, top_p, top_k, uniforms)
            is_eos = torch.isin(chosen, eos).tolist()
            keep: list[int] = []
            for j, (row, token, lp) in enumerate(
                zip(active, chosen.tolist(), chosen_lp.tolist(), strict=True)
            ):
                tokens[row].append(token)
                logprobs[row].append(lp)
                stop = watchers[row].push(token) if watchers[row].stops else None
                if is_eos[j]:
                    finish[row] = ("eos", None)
                elif stop is not None:
                    finish[row] = ("stop", stop)
                elif len(tokens[row]) < budget[row]:
                    keep.append(j)
            self.stats.generated_tokens += len(active)
            if not keep:
                break
            if len(keep) < len(active):
                index = torch.tensor(keep, device=device)
                cache.batch_select_indices(index)
                mask, next_position, chosen = mask[index], next_position[index], chosen[index]
                temperature, top_p, top_k = temperature[index], top_p[index], top_k[index]
                seeds = seeds[keep]
                active = [active[j] for j in keep]
                pads = [pads[j] for j in keep]
                rowwise = self._attention_kwargs(pads)
            mask = torch.cat([mask, mask.new_ones(len(active), 1)], dim=1)
            logits = model(
                input_ids=chosen[:, None],
                attention_mask=mask,
                position_ids=next_position[:, None],
                past_key_values=cache,
                use_cache=True,
                **rowwise,
            ).logits[:, -1]
            self.stats.forward_passes += 1
            next_position = next_position + 1
        return [self._completion(tokens[i], logprobs[i], *finish[i]) for i in range(n)]

    def _attention_kwargs(self, pads: list[int]) -> dict[str, Any]:
        """Forward kwargs telling :func:`rowwise_attention` each row's padding (batch-invariant)."""
        return {"left_padding": pad_runs(pads)} if self.batch_invariant else {}

    def _completion(
        self, ids: list[int], lps: list[float], reason: FinishReason, stop: str | None
    ) -> Completion:
        text = self.tokenizer.decode(ids, skip_special_tokens=True)
        return Completion(ids, text, lps, reason, stop)

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


def _as_dtype(dtype: str | torch.dtype) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    value = getattr(torch, dtype, None)
    if not isinstance(value, torch.dtype):
        raise ValueError(f"unknown dtype {dtype!r}; use e.g. 'float32', 'bfloat16', 'auto'")
    return value


_LORA_SUFFIXES = (".lora_A.weight", ".lora_B.weight")


def lora_deltas(model: Any, path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Per-module weight deltas ``scale * B @ A`` of a peft LoRA adapter folder.

    ``scale`` is ``alpha / r`` (``alpha / sqrt(r)`` with rsLoRA; Hu et al. 2021, Kalajdzievski
    2023), with peft's per-module ``alpha_pattern``. Plain LoRA on linear layers only: DoRA,
    LoRA biases, embedding adapters and ``modules_to_save`` are refused with a clear error.
    """
    from peft import PeftConfig
    from peft.utils import load_peft_weights

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
