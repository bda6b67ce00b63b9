"""Keys and values of finished rows, kept so that a later prompt extending them skips their prefill.

A multi-turn episode sends its whole context every turn: the previous turn's prompt, the tokens
it generated, the observation. Without a cache each turn prefills that whole context again, so
an episode costs O(turns x context) prefill tokens. :class:`PrefixCache` keeps, for each row that
finished, its tokens (prompt + generated, less the last generated token, whose keys were never
computed) and their keys and values per layer; a new prompt reuses the keys and values of its
longest common prefix with a kept sequence and prefills only the rest (at least its last token).
A partial match counts: a chat client that sends the reply back as text may re-tokenize it
differently from the generated tokens, and then the tokens up to the first difference are
reused.

Entries live within a byte budget, least recently used first out. Keys and values depend on the
weights: each entry records the model's weights version (the sum of its parameters' in-place
version counters, which an optimizer step, a LoRA merge or any ``copy_`` bumps) and is dropped
when the weights have changed since, so a trainer updating the served module in place never
reads stale entries.

The reused keys and values are those the row computed in its own prefill and decode steps, so a
row with a hit matches a fresh prefill of the same prompt up to floating-point rounding, not bit
for bit: the cache is off by default (``HFPolicy(prefix_cache_mib=0)``).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

LayerKV = tuple[torch.Tensor, torch.Tensor] | None
"""One cache layer's keys and values, ``(kv_heads, tokens, head_dim)`` each; None for a layer
that holds none (a KV-sharing layer)."""


def weights_version(model: torch.nn.Module) -> int:
    """The sum of the model's parameters' version counters: it grows with every in-place change."""
    return sum(p._version for p in model.parameters())


@dataclass
class Entry:
    """The tokens of a finished row and their keys and values, under one weights version."""

    tokens: tuple[int, ...]
    layers: list[LayerKV]
    version: int
    ids: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.ids = np.asarray(self.tokens, dtype=np.int64)

    def common_prefix(self, prompt: np.ndarray) -> int:
        """How many first tokens of ``prompt`` this entry holds."""
        n = min(len(self.ids), len(prompt))
        differ = np.flatnonzero(self.ids[:n] != prompt[:n])
        return int(differ[0]) if len(differ) else n

    @property
    def nbytes(self) -> int:
        return sum(k.nbytes + v.nbytes for k, v in filter(None, self.layers))


class PrefixCache:
    """Finished rows' keys and values within ``max_bytes``, looked up by the longest common
    prefix."""

    def __init__(self, max_bytes: int) -> None:
        if max_bytes < 0:
            raise ValueError(f"max_bytes must be >= 0, got {max_bytes}")
        self.max_bytes = max_bytes
        self.nbytes = 0
        self.hits = 0
        self.misses = 0
        self.reused_tokens = 0
        self._entries: OrderedDict[tuple[int, ...], Entry] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def put(self, tokens: Sequence[int], layers: list[LayerKV], version: int) -> None:
        """Keep ``tokens``' keys and values (replacing an entry of the same tokens); the least
        recently used entries leave until the cache fits. An entry larger than the whole
        budget is not kept."""
        entry = Entry(tuple(tokens), layers, version)
        if not entry.tokens or entry.nbytes > self.max_bytes:
            return
        self._drop(entry.tokens)
        self._entries[entry.tokens] = entry
        self.nbytes += entry.nbytes
        while self.nbytes > self.max_bytes:
            self._drop(next(iter(self._entries)))

    def match(self, prompt: Sequence[int], version: int) -> tuple[Entry, int] | None:
        """The entry sharing the longest first tokens with ``prompt`` under weights ``version``,
        and how many of them to reuse (at most all but the prompt's last token, which must run
        to give logits); entries of other versions are dropped on the way. Counts a hit or a
        miss."""
        ids = np.asarray(prompt, dtype=np.int64)
        best, reuse = None, 0
        for tokens, entry in list(self._entries.items()):
            if entry.version != version:
                self._drop(tokens)
                continue
            shared = min(entry.common_prefix(ids), len(ids) - 1)
            if shared > reuse:
                best, reuse = entry, shared
        if best is None:
            self.misses += 1
            return None
        self._entries.move_to_end(best.tokens)
        self.hits += 1
        self.reused_tokens += reuse
        return best, reuse

    def clear(self) -> None:
        self._entries.clear()
        self.nbytes = 0

    def _drop(self, tokens: tuple[int, ...]) -> None:
        entry = self._entries.pop(tokens, None)
        if entry is not None:
            self.nbytes -= entry.nbytes
