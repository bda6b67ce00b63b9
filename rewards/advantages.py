"""Advantage estimators: outcome-level (GRPO, Dr.GRPO, RLOO) and turn-level (MT-GRPO, IGPO,
GiGPO, HGPO, A²TGPO, EMPG, PPO's GAE over turns).

Conventions (see ``docs/credit-assignment.md``):

- Outcome estimators take one row per trajectory: ``scores`` and ``group`` (task group id).
- Turn-level estimators take flat per-turn arrays of equal length — ``group``, ``traj`` (trajectory
  id), ``turn`` (turn index; only its order inside a trajectory matters) plus their own inputs —
  in any row order, and return float64 arrays aligned with the input rows.
- Ids may be any integers (or, for ``anchor``, any hashable values); boundaries always come from
  ids, never from reward values.
- Normalisation is explicit: ``std`` is ``"unbiased"`` (N−1), ``"population"`` (N) or ``None``
  (centre only); the scale is ``std + eps``. The singleton rule (a normalisation pool with one
  member) is ``"raw"`` — mean 0, std 1, so the value passes through scaled by 1/(1+eps) (verl) —
  or ``"zero"`` — advantage 0.
- Everything is vectorized: group-bys are ``np.unique`` + ``np.bincount``; per-trajectory discounted
  sums are a Hillis–Steele scan, ⌈log2(max turns)⌉ vectorized passes. The only Python loops run
  over hierarchy levels (HGPO, bounded by ``history``) or over unique anchors when similarity
  clustering is asked for.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from difflib import SequenceMatcher
from typing import Any, Literal

import numpy as np

Std = Literal["unbiased", "population"] | None
Singleton = Literal["raw", "zero"]

__all__ = [
    "a2tgpo",
    "discounted_returns",
    "drgrpo",
    "empg",
    "gae",
    "gigpo",
    "grpo",
    "hgpo",
    "igpo",
    "mt_grpo",
    "rloo",
]


# ---------------------------------------------------------------------------------------------
# validation and group-by machinery
# ---------------------------------------------------------------------------------------------
_DENSE_FACTOR = 4  # integer keys spanning <= 4x their count are bucketed instead of sorted


def _array(name: str, values: Any, n: int | None = None, *, dtype: Any = np.float64) -> np.ndarray:
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise ValueError(f"{name}: expected a 1-D array, got shape {arr.shape}")
    if n is not None and arr.shape[0] != n:
        raise ValueError(f"{name}: expected {n} rows, got {arr.shape[0]}")
    if dtype is np.float64:
        arr = arr.astype(np.float64, copy=False)
        bad = ~np.isfinite(arr)
        if bad.any():
            raise ValueError(f"{name}: non-finite value at row {int(np.flatnonzero(bad)[0])}")
    elif dtype is np.int64:
        if arr.size and not np.issubdtype(arr.dtype, np.integer):
            raise ValueError(f"{name}: expected integer ids, got dtype {arr.dtype}")
        arr = arr.astype(np.int64, copy=False)
    elif dtype is bool:
        arr = arr.astype(bool, copy=False)
    return arr


def _factorize(values: Any) -> tuple[np.ndarray, int]:
    """Dense codes 0..k-1 (in sorted order of the values) for any 1-D values.

    Integer ids spanning a range of at most a few times their count are mapped through a lookup
    table (no sort); other numeric and string arrays go through ``np.unique``; other Python
    objects (tuples, ...) are interned through one dict pass, the only way to hash them.
    """
    arr = values if isinstance(values, np.ndarray) else np.asarray(values)
    if arr.ndim == 1 and arr.dtype.kind in "biu" and arr.size:
        lo, hi = int(arr.min()), int(arr.max())
        if hi - lo <= _DENSE_FACTOR * arr.size:
            shifted = arr.astype(np.int64, copy=False) - lo
            present = np.zeros(hi - lo + 1, dtype=bool)
            present[shifted] = True
            remap = np.cumsum(present) - 1
            return remap[shifted], int(remap[-1]) + 1
    if arr.ndim == 1 and arr.dtype.kind in "biufUS":
        uniq, codes = np.unique(arr, return_inverse=True)
        return codes.astype(np.int64, copy=False).reshape(-1), len(uniq)
    table: dict[Any, int] = {}
    codes = np.fromiter(
        (table.setdefault(v, len(table)) for v in values), dtype=np.int64, count=len(values)
    )
    return codes, len(table)


def _combine(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, int]:
    """Dense codes for the pairs (a[i], b[i]) of two non-negative code arrays."""
    if a.size == 0:
        return a.copy(), 0
    width = int(b.max()) + 1
    return _factorize(a * width + b)


@dataclass(frozen=True)
class _Stats:
    mean: np.ndarray
    scale: np.ndarray
    count: np.ndarray


def _group_stats(
    x: np.ndarray, codes: np.ndarray, k: int, *, std: Std, eps: float, var_eps: float = 0.0
) -> _Stats:
    """Per-code mean and scale: ``std + eps`` (a pool of one: ``1 + eps``), or 1 without std."""
    count = np.bincount(codes, minlength=k).astype(np.float64)
    safe = np.maximum(count, 1.0)
    mean = np.bincount(codes, weights=x, minlength=k) / safe
    if std is None:
        return _Stats(mean, np.ones(k), count)
    if std not in ("unbiased", "population"):
        raise ValueError(f"std: expected 'unbiased', 'population' or None, got {std!r}")
    dev = x - mean[codes]
    ss = np.bincount(codes, weights=dev * dev, minlength=k)
    denom = np.maximum(count - (1.0 if std == "unbiased" else 0.0), 1.0)
    scale = np.where(count > 1, np.sqrt(ss / denom + var_eps), 1.0) + eps
    return _Stats(mean, scale, count)


def _normalize(x: np.ndarray, codes: np.ndarray, stats: _Stats, singleton: Singleton) -> np.ndarray:
    """(x − mean) / scale per row, with the singleton rule for pools of one."""
    out = (x - stats.mean[codes]) / stats.scale[codes]
    lonely = stats.count[codes] <= 1
    if lonely.any():
        if singleton == "raw":
            out[lonely] = x[lonely] / stats.scale[codes[lonely]]
        elif singleton == "zero":
            out[lonely] = 0.0
        else:
            raise ValueError(f"singleton: expected 'raw' or 'zero', got {singleton!r}")
    return out


def _group_norm(
    x: np.ndarray,
    keys: np.ndarray,
    *,
    std: Std,
    eps: float,
    singleton: Singleton,
    var_eps: float = 0.0,
    n_keys: int | None = None,
) -> np.ndarray:
    """Normalise ``x`` within pools of equal ``keys`` (``n_keys``: keys are already 0..k-1)."""
    codes, k = (keys, n_keys) if n_keys is not None else _factorize(keys)
    stats = _group_stats(x, codes, k, std=std, eps=eps, var_eps=var_eps)
    return _normalize(x, codes, stats, singleton)


@dataclass(frozen=True)
class _Layout:
    """Rows sorted by (traj, turn) and the segment structure of that order."""

    order: np.ndarray  # sorted position -> input row
    traj_code: np.ndarray  # per sorted row: dense trajectory code (increasing)
    start: np.ndarray  # per sorted row: sorted index of its trajectory's first row
    end: np.ndarray  # per sorted row: sorted index of its trajectory's last row
    pos: np.ndarray  # per sorted row: 0-based position inside its trajectory
    n_traj: int

    @property
    def max_len(self) -> int:
        return int(self.pos.max()) + 1 if self.pos.size else 0

    def unsort(self, sorted_values: np.ndarray) -> np.ndarray:
        out = np.empty_like(sorted_values)
        out[self.order] = sorted_values
        return out


def _sort_rows(traj_code: np.ndarray, n_traj: int, turn: np.ndarray) -> np.ndarray:
    """Row order by (trajectory, turn): a bucket placement when the (traj, turn) grid is small,
    otherwise ``np.lexsort``. Duplicate pairs are left adjacent for the caller to report."""
    n = traj_code.shape[0]
    lo = int(turn.min())
    width = int(turn.max()) - lo + 1
    if n_traj * width <= _DENSE_FACTOR * n + 1024:
        key = traj_code * width + (turn - lo)
        slot = np.full(n_traj * width, -1, dtype=np.int64)
        slot[key] = np.arange(n)
        order = slot[slot >= 0]
        if order.shape[0] == n:
            return order
    return np.lexsort((turn, traj_code))


def _layout(traj: Any, turn: Any, group: Any | None = None) -> _Layout:
    traj = _array("traj", traj, dtype=np.int64)
    n = traj.shape[0]
    turn = _array("turn", turn, n, dtype=np.int64)
    if n == 0:
        empty = np.zeros(0, dtype=np.int64)
        return _Layout(empty, empty, empty, empty, empty, 0)
    codes, n_traj = _factorize(traj)
    order = _sort_rows(codes, n_traj, turn)
    t, u = codes[order], turn[order]
    same = t[1:] == t[:-1]
    dup = same & (u[1:] == u[:-1])
    if dup.any():
        i = int(order[np.flatnonzero(dup)[0] + 1])
        raise ValueError(f"turn: duplicate (traj, turn) = ({traj[i]}, {turn[i]}) at row {i}")
    if group is not None:
        g = _array("group", group, n, dtype=np.int64)[order]
        mixed = same & (g[1:] != g[:-1])
        if mixed.any():
            i = int(order[np.flatnonzero(mixed)[0] + 1])
            raise ValueError(f"group: trajectory {traj[i]} spans several groups (row {i})")
    new = np.concatenate(([True], ~same))
    starts = np.flatnonzero(new)
    ends = np.concatenate((starts[1:] - 1, [n - 1]))
    start, end = starts[t], ends[t]
    return _Layout(order, t, start, end, np.arange(n) - start, n_traj)


def _sorted_returns(r: np.ndarray, lay: _Layout, gamma: float) -> np.ndarray:
    """Σ_{k≥t} γ^{k−t} r_k per sorted row: a Hillis–Steele scan in ⌈log2(max turns)⌉ passes."""
    out = r.copy()
    n = out.shape[0]
    idx = np.arange(n)
    step = 1
    while step < lay.max_len:
        shifted = np.zeros(n)
        shifted[: n - step] = out[step:]
        out += np.where(idx + step <= lay.end, gamma**step * shifted, 0.0)
        step *= 2
    return out


# ---------------------------------------------------------------------------------------------
# outcome estimators (one row per trajectory)
# ---------------------------------------------------------------------------------------------
def grpo(
    scores: Any,
    group: Any,
    *,
    std: Std = "unbiased",
    eps: float = 1e-6,
    singleton: Singleton = "raw",
) -> np.ndarray:
    """GRPO group-normalised advantage (Shao et al., arXiv 2402.03300; verl ``core_algos``).

    A_i = (r_i − mean_{g(i)} r) / (std_{g(i)} r + eps), std unbiased by default. A group of one
    follows ``singleton`` (default ``"raw"``: mean 0, std 1, as verl).
    """
    x = _array("scores", scores)
    g = _array("group", group, x.shape[0], dtype=np.int64)
    return _group_norm(x, g, std=std, eps=eps, singleton=singleton)


def drgrpo(scores: Any, group: Any, *, singleton: Singleton = "raw") -> np.ndarray:
    """Dr.GRPO advantage (Liu et al., arXiv 2503.20783): A_i = r_i − mean_{g(i)} r, no std."""
    return grpo(scores, group, std=None, eps=0.0, singleton=singleton)


def rloo(scores: Any, group: Any, *, singleton: Singleton = "raw") -> np.ndarray:
    """REINFORCE leave-one-out (Ahmadian et al., arXiv 2402.14740; verl ``compute_rloo_*``).

    A_i = r_i − mean_{j≠i, g(j)=g(i)} r_j = (r_i − mean_g r)·n/(n−1). A group of one has no
    baseline: ``"raw"`` passes r_i through (verl), ``"zero"`` gives 0.
    """
    x = _array("scores", scores)
    g = _array("group", group, x.shape[0], dtype=np.int64)
    codes, k = _factorize(g)
    stats = _group_stats(x, codes, k, std=None, eps=0.0)
    n = stats.count[codes]
    out = (x - stats.mean[codes]) * n / np.maximum(n - 1.0, 1.0)
    lonely = n <= 1
    out[lonely] = x[lonely] if singleton == "raw" else 0.0
    return out


def discounted_returns(rewards: Any, traj: Any, turn: Any, *, gamma: float) -> np.ndarray:
    """Turn-level return-to-go R_t = Σ_{k≥t} γ^{k−t} r_k within each trajectory.

    GiGPO Eq. 5 (arXiv 2505.10978); IGPO's turn-level accumulation (arXiv 2510.14967). γ applies
    per turn, ordered by ``turn`` inside each ``traj``.
    """
    lay = _layout(traj, turn)
    r = _array("rewards", rewards, lay.order.shape[0])
    return lay.unsort(_sorted_returns(r[lay.order], lay, gamma))


# ---------------------------------------------------------------------------------------------
# turn-level estimators
# ---------------------------------------------------------------------------------------------
def mt_grpo(
    turn_reward: Any,
    outcome: Any,
    group: Any,
    has_tool_call: Any,
    *,
    lam: float = 1.0,
    eps: float = 1e-4,
    singleton: Singleton = "zero",
) -> tuple[np.ndarray, np.ndarray]:
    """MT-GRPO turn-level advantages (Zeng et al., arXiv 2505.11821), one row per trajectory.

    Â^T = z(turn_reward), Â^O = z(outcome), z(x) = (x − mean_g)/(std_unbiased,g + eps). Returns
    (first-turn advantage, later-turn advantage): (Â^O + λ·Â^T, Â^O) for trajectories with a tool
    call and z(turn_reward + outcome) for both otherwise.
    """
    tr = _array("turn_reward", turn_reward)
    n = tr.shape[0]
    out = _array("outcome", outcome, n)
    g = _array("group", group, n, dtype=np.int64)
    tool = _array("has_tool_call", has_tool_call, n, dtype=bool)
    norm = {"std": "unbiased", "eps": eps, "singleton": singleton}
    a_t, a_o, a_c = (_group_norm(x, g, **norm) for x in (tr, out, tr + out))
    first = np.where(tool, a_o + lam * a_t, a_c)
    later = np.where(tool, a_o, a_c)
    return first, later


_IGPO_VAR_EPS = 1e-8  # IGPO/A²TGPO: std_pop = sqrt(mean sq-dev + 1e-8), then + eps


def igpo(
    rewards: Any,
    is_outcome: Any,
    group: Any,
    traj: Any,
    turn: Any,
    *,
    gamma: float = 1.0,
    norm: Literal["joint", "separate"] = "joint",
    eps: float = 1e-6,
    ig_weight: float = 1.0,
    outcome_weight: float = 1.0,
) -> np.ndarray:
    """IGPO advantages (Wang et al., arXiv 2510.14967).

    ``rewards`` holds the information gain on tool turns and the outcome (F1, or −2 on a format
    failure) on the answer turn (``is_outcome``). Rewards are weighted (curriculum: ``ig_weight``,
    ``outcome_weight``), z-normalised per prompt group — ``"joint"`` pools all turn rewards of
    the group, ``"separate"`` pools IG and outcome rewards apart — with
    r̃ = (r − mean)/(sqrt(var_pop + 1e-8) + eps) (a pool of one gives 0), then accumulated per
    turn: Â_t = Σ_{k≥t} γ^{k−t} r̃_k.
    """
    lay = _layout(traj, turn, group)
    n = lay.order.shape[0]
    r = _array("rewards", rewards, n)
    out_mask = _array("is_outcome", is_outcome, n, dtype=bool)
    g = _array("group", group, n, dtype=np.int64)
    r = np.where(out_mask, outcome_weight * r, ig_weight * r)
    if norm == "joint":
        keys = g
    elif norm == "separate":
        keys = _combine(_factorize(g)[0], out_mask.astype(np.int64))[0]
    else:
        raise ValueError(f"norm: expected 'joint' or 'separate', got {norm!r}")
    z = _group_norm(r, keys, std="population", eps=eps, singleton="zero", var_eps=_IGPO_VAR_EPS)
    return lay.unsort(_sorted_returns(z[lay.order], lay, gamma))


def _episode_advantage(
    episode: np.ndarray,
    group: np.ndarray,
    lay: _Layout,
    *,
    std: Std,
    eps: float,
    episode_stat: Literal["trajectory", "steps"],
) -> np.ndarray:
    """GiGPO Eq. 3 per sorted row: (R(τ) − mean)/F_norm over the prompt group.

    ``episode`` and ``group`` are per sorted row (constant within a trajectory).
    """
    gcodes, k = _factorize(group)
    if episode_stat == "steps":
        pool_x, pool_g = episode, gcodes
    elif episode_stat == "trajectory":
        first = lay.start == np.arange(lay.start.shape[0])
        pool_x, pool_g = episode[first], gcodes[first]
    else:
        raise ValueError(f"episode_stat: expected 'trajectory' or 'steps', got {episode_stat!r}")
    stats = _group_stats(pool_x, pool_g, k, std=std, eps=eps)
    return _normalize(episode, gcodes, stats, "raw")


def _similarity_clusters(anchor: Sequence[Any], group: np.ndarray, threshold: float) -> np.ndarray:
    """Greedy clustering of text anchors per group: an anchor joins the first cluster whose
    representative has difflib ``SequenceMatcher`` ratio ≥ ``threshold`` (GiGPO's
    ``enable_similarity``). Pairwise string matching runs in Python over unique anchors."""
    a_codes, _ = _factorize(anchor)
    pair_codes, _ = _combine(_factorize(group)[0], a_codes)
    _, first_rows = np.unique(pair_codes, return_index=True)
    cluster_of_pair = np.empty(len(first_rows), dtype=np.int64)
    reps: dict[int, list[tuple[str, int]]] = {}
    next_id = 0
    for pair, row in sorted(enumerate(first_rows.tolist()), key=lambda p: p[1]):
        text, g = str(anchor[row]), int(group[row])
        for rep_text, cid in reps.setdefault(g, []):
            if SequenceMatcher(None, rep_text, text).ratio() >= threshold:
                cluster_of_pair[pair] = cid
                break
        else:
            cluster_of_pair[pair] = next_id
            reps[g].append((text, next_id))
            next_id += 1
    return cluster_of_pair[pair_codes]


def gigpo(
    step_rewards: Any,
    group: Any,
    traj: Any,
    turn: Any,
    anchor: Any,
    *,
    gamma: float = 0.95,
    omega: float = 1.0,
    std: Std = "unbiased",
    eps: float = 1e-6,
    episode_stat: Literal["trajectory", "steps"] = "trajectory",
    similarity: float | None = None,
) -> np.ndarray:
    """GiGPO advantages (Feng et al., arXiv 2505.10978): A = A^E(τ) + ω·A^S(s_t, a_t).

    - Episode (Eq. 3): A^E = (R(τ) − mean_g R)/F_norm with R(τ) = Σ_t r_t; statistics over the
      group's trajectories (``episode_stat="trajectory"``, the paper) or over its step rows
      (``"steps"``, verl-agent's ``compute_mean_std_cross_steps=True``). A group of one: mean 0,
      std 1.
    - Step (Eqs. 5–7): return-to-go R_t = Σ_{k≥t} γ^{k−t} r_k, normalised inside anchor-state
      groups — rows of the same prompt group with equal ``anchor`` (any hashable), or, with
      ``similarity`` set, text anchors greedily clustered at that difflib ratio. A singleton
      anchor group gives A^S = 0.
    - F_norm = std + eps (``std="unbiased"``: ``mean_std_norm``) or 1 (``std=None``:
      ``mean_norm``).
    """
    lay = _layout(traj, turn, group)
    n = lay.order.shape[0]
    r = _array("step_rewards", step_rewards, n)
    g = _array("group", group, n, dtype=np.int64)
    if len(anchor) != n:
        raise ValueError(f"anchor: expected {n} rows, got {len(anchor)}")
    o = lay.order
    g_codes = _factorize(g)[0]
    rs, gs = r[o], g_codes[o]
    episode = np.bincount(lay.traj_code, weights=rs, minlength=lay.n_traj)[lay.traj_code]
    a_ep = _episode_advantage(episode, gs, lay, std=std, eps=eps, episode_stat=episode_stat)
    if similarity is None:
        a_codes = _factorize(anchor)[0]
    else:
        a_codes = _similarity_clusters(anchor, g, similarity)
    keys, n_keys = _combine(g_codes, a_codes)
    returns = _sorted_returns(rs, lay, gamma)
    a_step = _group_norm(returns, keys[o], std=std, eps=eps, singleton="zero", n_keys=n_keys)
    return lay.unsort(a_ep + omega * a_step)


def hgpo(
    step_rewards: Any,
    group: Any,
    traj: Any,
    turn: Any,
    anchor: Any,
    *,
    history: int = 2,
    gamma: float = 0.95,
    alpha: float = 1.0,
    std: Std = "population",
    eps: float = 1e-6,
    episode_weight: float = 0.0,
) -> np.ndarray:
    """HGPO advantages (He et al., "Hierarchy-of-Groups Policy Optimization", arXiv 2602.22817).

    Level k ∈ {0..K} (K = ``history``) groups the steps of a prompt group whose current anchor and
    k previous anchors are identical (nested groups G_0 ⊇ G_1 ⊇ … ⊇ G_K; a step at position t
    belongs to levels k ≤ t only). In each group of two or more the return-to-go
    R_t = Σ γ^{j−t} r_j is normalised, a_k = (R_t − mean)/(std + eps) (population std, as
    verl-agent's recipe), and the levels are combined with weights w_k ∝ (k+1)^α over the levels
    where the step has company:

        A_t = Σ_k w_k a_k / Σ_k w_k          (0 if no level has two members)

    ``episode_weight`` > 0 adds GiGPO's per-step episode advantage (statistics over steps) as an
    extra item of that weight (verl-agent's ``base_group``). Choices and how they differ from the
    released recipe are listed in ``docs/credit-assignment.md``.
    """
    if history < 0:
        raise ValueError(f"history: expected >= 0, got {history}")
    lay = _layout(traj, turn, group)
    n = lay.order.shape[0]
    r = _array("step_rewards", step_rewards, n)
    g = _array("group", group, n, dtype=np.int64)
    if len(anchor) != n:
        raise ValueError(f"anchor: expected {n} rows, got {len(anchor)}")
    o = lay.order
    a_codes = _factorize(anchor)[0][o]
    returns = _sorted_returns(r[o], lay, gamma)
    num, den = np.zeros(n), np.zeros(n)
    if episode_weight > 0:
        rs = r[o]
        episode = np.bincount(lay.traj_code, weights=rs, minlength=lay.n_traj)[lay.traj_code]
        num += episode_weight * _episode_advantage(
            episode, g[o], lay, std=std, eps=eps, episode_stat="steps"
        )
        den += episode_weight
    keys = _combine(_factorize(g)[0][o], a_codes)[0]
    rows = np.arange(n)
    for k in range(min(history, max(lay.max_len - 1, 0)) + 1):
        if k > 0:
            member = lay.pos >= k
            prev = np.where(member, rows - k, rows)
            keys = _combine(keys, a_codes[prev])[0]
            keys = np.where(member, keys, -1)
        member = keys >= 0
        codes, m = _factorize(keys[member])
        stats = _group_stats(returns[member], codes, m, std=std, eps=eps)
        adv = _normalize(returns[member], codes, stats, "zero")
        company = stats.count[codes] > 1
        w = (k + 1.0) ** alpha
        sel = np.flatnonzero(member)[company]
        num[sel] += w * adv[company]
        den[sel] += w
    out = np.divide(num, den, out=np.zeros(n), where=den > 0)
    return lay.unsort(out)


def a2tgpo(
    info_gain: Any,
    outcome: Any,
    group: Any,
    traj: Any,
    turn: Any,
    *,
    alpha: float = 0.3,
    gamma: float = 1.0,
    eps: float = 1e-6,
    clip_coef: float = 0.3,
    has_ig: Any | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """A²TGPO advantages and turn clip scales (arXiv 2605.06200, ``turn-group-v1d``).

    ``info_gain`` per row is the turn's IG, ``has_ig`` marks the rows that carry one (default:
    rows where ``info_gain`` is finite, so NaN marks the answer turn). ``outcome`` per row is the
    trajectory's outcome (constant within a trajectory). With k the index of an IG turn among
    its trajectory's n_i IG turns (in turn order):

        z_{i,k} = (IG − mean_{(q,k)})/(std_pop,(q,k) + eps)     per (prompt group, k)
        ô_i     = (o_i − mean_q)/(std_pop,q + eps)              per prompt group
        A_{i,k} = α·Σ_{j≥k} γ^{j−k} z_{i,j} / √(n_i − k) + ô_i;  rows without IG get ô_i
        c_{i,k} = 1 + clip_coef·(2σ(z_{i,k}) − 1);               rows without IG get 1

    std_pop = sqrt(var + 1e-8) as in the reference code; a pool of one gives z = 0.
    """
    lay = _layout(traj, turn, group)
    n = lay.order.shape[0]
    ig = np.asarray(info_gain, dtype=np.float64)
    if ig.shape != (n,):
        raise ValueError(f"info_gain: expected {n} rows, got shape {ig.shape}")
    mask = np.isfinite(ig) if has_ig is None else _array("has_ig", has_ig, n, dtype=bool)
    if np.any(mask & ~np.isfinite(ig)):
        raise ValueError("info_gain: non-finite value on a row marked has_ig")
    out = _array("outcome", outcome, n)
    g = _array("group", group, n, dtype=np.int64)
    o = lay.order
    ms, gs, outs = mask[o], _factorize(g)[0][o], out[o]
    first = lay.start == np.arange(n)
    traj_out = outs[first]
    if np.any(outs != traj_out[lay.traj_code]):
        raise ValueError("outcome: must be constant within each trajectory")
    g_codes, k_g = gs[first], int(gs.max()) + 1 if n else 0
    o_stats = _group_stats(traj_out, g_codes, k_g, std="population", eps=eps, var_eps=_IGPO_VAR_EPS)
    o_hat = _normalize(traj_out, g_codes, o_stats, "zero")[lay.traj_code]

    cum = np.cumsum(ms)
    before = cum[lay.start] - ms[lay.start]
    k_idx = cum - before - 1  # IG index among the trajectory's IG turns (valid on IG rows)
    n_ig = (cum[lay.end] - before)[ms]
    sel = np.flatnonzero(ms)
    z = _group_norm(
        ig[o][sel],
        _combine(gs[sel], k_idx[sel])[0],
        std="population",
        eps=eps,
        singleton="zero",
        var_eps=_IGPO_VAR_EPS,
    )
    sub = _layout(lay.traj_code[sel], k_idx[sel])
    disc = sub.unsort(_sorted_returns(z[sub.order], sub, gamma))
    adv, clip = o_hat.copy(), np.ones(n)
    adv[sel] += alpha * disc / np.sqrt(n_ig - k_idx[sel])
    clip[sel] = 1.0 + clip_coef * (2.0 / (1.0 + np.exp(-z)) - 1.0)
    return lay.unsort(adv), lay.unsort(clip)


def empg(
    advantages: Any,
    step_entropy: Any,
    traj: Any,
    turn: Any,
    *,
    k: float = 1.0,
    k_future: float = 1.0,
    zeta: float = 0.1,
) -> np.ndarray:
    """EMPG entropy-modulated advantages (arXiv 2509.09265, ``compute_empg_advantage``).

    H̃ = (H − min H)/(max H − min H + 1e-8) over the batch's steps;
    g(H_t) = exp(−k·H̃_t)/mean_batch exp(−k·H̃); f(H_{t+1}) = exp(−k′·H̃_{t+1}) for the next step
    of the same trajectory (0 after the last);
    A_mod = g(H_t)·A + ζ·f(H_{t+1}); the result is A_mod − mean_batch(A_mod).
    """
    lay = _layout(traj, turn)
    n = lay.order.shape[0]
    a = _array("advantages", advantages, n)
    h = _array("step_entropy", step_entropy, n)
    if n == 0:
        return np.zeros(0)
    ht = (h - h.min()) / (h.max() - h.min() + 1e-8)
    scale = np.exp(-k * ht)
    g_mod = scale / scale.mean()
    o = lay.order
    clarity = np.exp(-k_future * ht[o])
    nxt = np.zeros(n)
    has_next = np.arange(n) < lay.end
    nxt[:-1] = np.where(has_next[:-1], clarity[1:], 0.0)
    a_mod = g_mod * a + zeta * lay.unsort(nxt)
    return a_mod - a_mod.mean()


def gae(
    rewards: Any,
    values: Any,
    traj: Any,
    turn: Any,
    *,
    gamma: float = 1.0,
    lam: float = 1.0,
    end_value: Any | None = None,
    whiten: bool = True,
    eps: float = 1e-8,
) -> tuple[np.ndarray, np.ndarray]:
    """Turn-level generalized advantage estimation (Schulman et al., arXiv 1506.02438), the
    turn as the MDP step (arXiv 2505.11821, 2510.01132); returns ``(advantages, returns)``.

    Per trajectory over its turns t = 0..T−1 (ordered by ``turn``), with r_t the turn's reward
    and V_t the value of the state the turn acts from:

        δ_t = r_t + γ·V_{t+1} − V_t,      V_T = ``end_value`` (0 when None: every end terminal)
        A_t = Σ_{l≥0} (γλ)^l δ_{t+l},     R_t = A_t + V_t

    ``end_value`` per row (constant within a trajectory) is the bootstrap of a truncated end,
    the value of the state after the last turn; 0 for a terminal one. R_t, the value target, is
    never whitened; with ``whiten`` the advantages are (A − mean)/(std_pop + eps) over all rows
    of the call (verl whitens GAE advantages over the batch's tokens; here every turn counts
    once).
    """
    lay = _layout(traj, turn)
    n = lay.order.shape[0]
    r = _array("rewards", rewards, n)
    v = _array("values", values, n)
    end = np.zeros(n) if end_value is None else _array("end_value", end_value, n)
    o = lay.order
    rs, vs, ends = r[o], v[o], end[o]
    if np.any(ends != ends[lay.start]):
        raise ValueError("end_value: must be constant within each trajectory")
    following = np.empty(n)
    following[:-1] = vs[1:]
    following = np.where(np.arange(n) < lay.end, following, ends)
    delta = rs + gamma * following - vs
    advantages = _sorted_returns(delta, lay, gamma * lam)
    returns = lay.unsort(advantages + vs)
    advantages = lay.unsort(advantages)
    if whiten and n:
        advantages = (advantages - advantages.mean()) / (advantages.std() + eps)
    return advantages, returns
