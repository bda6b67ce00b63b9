"""Credit for display: the per-turn advantages of a group's episodes under every estimator of
:data:`agentenv.rewards.estimators.ESTIMATORS`, and which turns share an anchor.

Advantages are computed over one group (the episodes of one task in one step: what GRPO,
RLOO and GiGPO normalise over) by :func:`agentenv.rewards.compute_advantages` on the group's
:class:`~agentenv.trajectory.TurnTable`. For a training run, the turn rewards are those the
trainer fed its estimator (after process rewards and gating, with the information gain it
computed: ``metadata.credit`` of each saved trajectory), and the run's own estimator shows the
advantages the trainer used. Errored episodes are left out, as the trainer leaves them out.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from agentenv.rewards import compute_advantages
from agentenv.rewards.estimators import ESTIMATORS
from agentenv.trajectory import Trajectory, Turn, TurnTable, finite_list
from agentenv.view.runs import Episode


@dataclass
class GroupCredit:
    """Per member episode id: per turn, the advantage under each estimator that could run, and
    the anchor's peers (turns, and episodes, of the group with the same anchor); ``errors`` has
    the reason of each estimator that could not."""

    advantages: dict[int, dict[str, list[float]]] = field(default_factory=dict)
    anchor_peers: dict[int, list[tuple[int, int]]] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    saved: bool = False


def group_credit(
    members: list[Episode], estimator: str | None, options: dict[str, Any] | None = None
) -> GroupCredit:
    """The credit of the episodes ``members`` (one group). ``estimator``/``options``: the run's
    estimator and its options (None for an evaluation)."""
    members = [m for m in members if m.summary["status"] != "error" and m.turns]
    out = GroupCredit()
    if not members:
        return out
    table = TurnTable.from_trajectories([_trajectory(m) for m in members])
    out.saved = all(m.credit is not None for m in members)
    if out.saved:
        table = _as_trained(table, members)
    values: dict[str, np.ndarray] = {}
    for name in ESTIMATORS:
        if out.saved and name == estimator:
            values[name] = _floats([v for m in members for v in m.credit["advantage"]])
            continue
        try:
            opts = (options or {}) if name == estimator else {}
            values[name] = np.asarray(compute_advantages(name, table, **opts), dtype=np.float64)
        except ValueError as exc:  # an input the group lacks (IGPO's info_gain, EMPG's entropy)
            out.errors[name] = str(exc)
    peers = _anchor_peers(table)
    for i, member in enumerate(members):
        rows = table.traj == i
        out.advantages[member.id] = {name: finite_list(v[rows]) for name, v in values.items()}
        out.anchor_peers[member.id] = [peers[r] for r in np.flatnonzero(rows)]
    return out


def _trajectory(ep: Episode) -> Trajectory:
    """The turns of ``ep`` as a trajectory (what :class:`TurnTable` reads)."""
    turns = [
        Turn(
            index=i,
            action="",
            observation="",
            reward=float(t.get("reward", 0.0)),
            reward_components=dict(t.get("components") or {}),
            action_valid=bool(t.get("valid", True)),
            anchor=t.get("anchor"),
            entropy=t.get("entropy"),
        )
        for i, t in enumerate(ep.turns)
    ]
    summary = ep.summary
    return Trajectory(str(ep.id), ep.group, summary["env"], summary["task"], turns=turns)


def _as_trained(table: TurnTable, members: list[Episode]) -> TurnTable:
    """``table`` with the rewards, outcomes and added components the trainer used."""
    credits = [m.credit for m in members]
    added = sorted({c for credit in credits for c in credit.get("components", {})})
    components = dict(table.components)
    for c in added:
        components[c] = _floats([v for cr in credits for v in cr.get("components", {})[c]])
    return replace(
        table,
        reward=_floats([v for cr in credits for v in cr["reward"]]),
        outcome=_floats([cr["outcome"] for cr in credits]),
        components=components,
    )


def _anchor_peers(table: TurnTable) -> list[tuple[int, int]]:
    """Per row: how many rows of the table share its anchor, and in how many trajectories."""
    turns = Counter(table.anchor)
    pairs = set(zip(table.anchor, table.traj.tolist(), strict=True))
    trajectories = Counter(key for key, _ in pairs)
    return [(turns[k], trajectories[k]) for k in table.anchor]


def _floats(values: list[Any]) -> np.ndarray:
    """Saved values (None where not finite) as a float array (NaN for None)."""
    return np.array([np.nan if v is None else v for v in values], dtype=np.float64)
