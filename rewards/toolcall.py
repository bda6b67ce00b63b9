"""Tool-call rewards: ToolRL's per-call credit, format validity, and τ-bench's final-state and
answer checks. Pure functions of calls, strings and table rows.

A call is anything with ``name`` and ``arguments`` attributes (:class:`agentenv.ToolCall`) or a
mapping ``{"name", "arguments"}`` (ToolRL's ``"parameters"`` is read too).

**ToolRL correctness** (Qian et al., "ToolRL: Reward is All Tool Learning Needs", arXiv
2504.13958, §3.3; ``verl/utils/reward_score/rlla.py``). With ground-truth calls G and predicted
calls P:

- ``M(a, b)``: multiset overlap of two lists, ``|a ∩ b| / (|a| + |b| − |a ∩ b|)``; 1 if
  ``a == b`` (two empty lists included), 0 if exactly one is empty.
- ``score = M(names(G), names(P)) + Σ_{g ∈ G} best(g)``, where ``best(g)`` is the highest
  ``M(keys(g), keys(p)) + #{k ∈ keys(g): p[k] == g[k]}`` over predicted calls ``p`` with
  ``g``'s name not used by an earlier ``g`` (only a score above 0 takes ``p``);
- ``S_max = 1 + Σ_{g ∈ G} (1 + |keys(g)|)``;
- ``R = 6 · score / S_max − 3 ∈ [−3, 3]``; ``P == G`` gives 3; unparsable output (``None``)
  gives −3. :func:`toolrl_score` is the normalized ``score / S_max ∈ [0, 1]``.

ToolRL leaves correctness at 0 when G is empty; applied as written, the formula gives 3 when P
is empty too (``P == G``) and −3 otherwise, which is what an irrelevance task (no call needed)
wants, and what these functions do.

**τ-bench outcome** (Yao et al., "τ-bench", arXiv 2406.12045): reward 1 iff the final database
equals the one of the gold actions' replay (:func:`canonical_state_hash` of both) and every
required output string appears in the answer (:func:`facts_in_answer`).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = [
    "call_credit",
    "canonical_state_hash",
    "facts_in_answer",
    "format_validity",
    "multiset_match",
    "state_match",
    "toolrl_correctness",
    "toolrl_score",
]

TOOLRL_MAX = 3.0
TOOLRL_MIN = -3.0


def _parts(call: Any) -> tuple[str, dict[str, Any]]:
    if isinstance(call, Mapping):
        arguments = call.get("arguments", call.get("parameters")) or {}
        return str(call.get("name", "")), dict(arguments)
    return str(call.name), dict(call.arguments or {})


def multiset_match(a: Sequence[Any], b: Sequence[Any]) -> float:
    """ToolRL's ``M(a, b)``: 1 if ``a == b``; 0 if one is empty; else the multiset overlap
    ``|a ∩ b| / (|a| + |b| − |a ∩ b|)``."""
    if list(a) == list(b):
        return 1.0
    if not a or not b:
        return 0.0
    ca, cb = Counter(a), Counter(b)
    common = sum(min(ca[k], cb[k]) for k in ca.keys() & cb.keys())
    return common / (len(a) + len(b) - common)


def _raw_score(gold: Sequence[Any], predicted: Sequence[Any]) -> tuple[float, float]:
    """``(score, S_max)`` of the ToolRL correctness formula (module docstring)."""
    g_calls, p_calls = [_parts(c) for c in gold], [_parts(c) for c in predicted]
    score = multiset_match([n for n, _ in g_calls], [n for n, _ in p_calls])
    s_max = 1.0
    used: set[int] = set()
    for name, g_args in g_calls:
        s_max += 1.0 + len(g_args)
        best, best_index = 0.0, -1
        for i, (p_name, p_args) in enumerate(p_calls):
            if i in used or p_name != name:
                continue
            keys = multiset_match(list(g_args), list(p_args))
            values = sum(1.0 for k, v in g_args.items() if k in p_args and _same(p_args[k], v))
            if keys + values > best:
                best, best_index = keys + values, i
        if best_index >= 0:
            used.add(best_index)
            score += best
    return score, s_max


def _same(a: Any, b: Any) -> bool:
    """Exact JSON equality (``True`` is not ``1``; ``1`` equals ``1.0`` as JSON numbers do)."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    return a == b


def _exact(gold: Sequence[Any], predicted: Sequence[Any]) -> bool:
    g, p = [_parts(c) for c in gold], [_parts(c) for c in predicted]
    return len(g) == len(p) and all(
        gn == pn and ga.keys() == pa.keys() and all(_same(pa[k], v) for k, v in ga.items())
        for (gn, ga), (pn, pa) in zip(g, p, strict=True)
    )


def toolrl_score(gold: Sequence[Any], predicted: Sequence[Any] | None) -> float:
    """The normalized ToolRL correctness ``score / S_max`` in [0, 1] (1 for an exact match,
    0 for unparsable output, ``predicted=None``)."""
    if predicted is None:
        return 0.0
    if _exact(gold, predicted):
        return 1.0
    score, s_max = _raw_score(gold, predicted)
    return score / s_max


def toolrl_correctness(gold: Sequence[Any], predicted: Sequence[Any] | None) -> float:
    """ToolRL's correctness reward ``6 · score / S_max − 3`` in [−3, 3] (arXiv 2504.13958)."""
    return (TOOLRL_MAX - TOOLRL_MIN) * toolrl_score(gold, predicted) + TOOLRL_MIN


def call_credit(gold: Sequence[Any], before: Sequence[Any], now: Sequence[Any]) -> float:
    """A turn's share of the episode's ToolRL score: ``toolrl_score(G, before + now) −
    toolrl_score(G, before)``.

    ``before`` are the calls of earlier turns, ``now`` this turn's. The credits of an episode's
    turns add up to its final :func:`toolrl_score` (a telescoping sum), each gold call pays at
    most once, and a call the gold does not make lowers the name overlap ``M``: repeating or
    padding calls earns nothing (a potential-based process reward).
    """
    return toolrl_score(gold, [*before, *now]) - toolrl_score(gold, before)


def format_validity(parse_error: str, calls: int, checked: int) -> float:
    """1.0 when a message parsed (``parse_error`` empty) and all of its ``calls`` passed the
    schema check (``checked`` of them did: known tool, required keys, types, size), else 0.0."""
    return float(not parse_error and checked == calls)


_FACT_SPACE = re.compile(r"\s+")


def _normalize(text: str) -> str:
    return _FACT_SPACE.sub(" ", text.lower().replace(",", "")).strip()


def facts_in_answer(answer: str | None, facts: Sequence[str], *, whole_words: bool = True) -> float:
    """The share of ``facts`` stated in ``answer`` (1.0 when there are none).

    τ-bench's check (arXiv 2406.12045): case-insensitive, commas removed, a fact must occur in
    the answer. With ``whole_words`` (the default) it must also not touch a letter or digit on
    either side, so the fact ``"7"`` is not found in ``"O5007"``; ``False`` is τ-bench's plain
    substring test.
    """
    if not facts:
        return 1.0
    if answer is None:
        return 0.0
    text = _normalize(answer)
    found = 0
    for fact in facts:
        needle = _normalize(fact)
        if whole_words:
            found += bool(re.search(rf"(?<![^\W_]){re.escape(needle)}(?![^\W_])", text))
        else:
            found += needle in text
    return found / len(facts)


def _sorted_rows(rows: Sequence[Sequence[Any]]) -> list[tuple[Any, ...]]:
    """Rows in a canonical order: natural tuple order, or by ``repr`` for rows of mixed types."""
    tuples = [tuple(row) for row in rows]
    try:
        return sorted(tuples)
    except TypeError:
        return sorted(tuples, key=repr)


def canonical_state_hash(tables: Mapping[str, Sequence[Sequence[Any]]]) -> str:
    """sha256 of a database's content: table name → rows, each table's rows sorted (so the
    order of writes does not matter), as canonical JSON."""
    canonical = {name: _sorted_rows(rows) for name, rows in tables.items()}
    blob = json.dumps(canonical, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def state_match(final_state: str, gold_state: str) -> float:
    """1.0 iff the episode's final state digest equals the gold replay's (τ-bench)."""
    return float(bool(final_state) and final_state == gold_state)
