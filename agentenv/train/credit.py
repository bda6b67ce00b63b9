"""From trajectories to per-turn advantages, as the ``algorithm`` config section says.

Order of operations on the batch's :class:`~agentenv.trajectory.TurnTable`:

1. process rewards: ``r_t += Σ_c w_c · component_c,t`` (``algorithm.process_rewards``);
2. information gain (IGPO, arXiv 2510.14967): teacher-forced ``info_gain`` per turn, added as a
   reward component that ``igpo`` / ``a2tgpo`` read;
3. G-RA gating (arXiv 2508.10548): step rewards count only when the outcome reaches δ —
   per turn r̃_t = 1[o ≥ δ]·r^step_t (+ o on the last turn), per trajectory
   R = o + 1[o ≥ δ]·Σ_t r^step_t;
4. the estimator (:func:`agentenv.rewards.compute_advantages_with_clip`), which also returns
   A²TGPO's per-turn clip scales (1 for every other method).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from agentenv.rewards import compute_advantages_with_clip
from agentenv.rewards.gating import gated_accumulation, gated_turn_rewards
from agentenv.train.config import AlgorithmConfig, ConfigError
from agentenv.trajectory import Trajectory, TurnTable, finite_list

INFO_GAIN = "info_gain"


@dataclass
class TurnCredit:
    """Per-turn-row advantages (TurnTable order), optional clip scales, and step metrics."""

    advantages: np.ndarray
    clip_scale: np.ndarray | None
    table: TurnTable
    metrics: dict[str, float] = field(default_factory=dict)

    def per_trajectory(self, estimator: str) -> list[dict[str, Any]]:
        """What each trajectory of the batch received, in batch order: the ``estimator``, the
        per-turn ``reward`` it was fed (after process rewards and gating) and the trajectory's
        ``outcome``, the per-turn ``advantage`` (and ``clip_scale`` when the estimator sets
        one), and the reward components credit added (``info_gain``) — what a viewer needs to
        show a turn's credit and recompute it under other estimators. A value that is not
        finite (the information gain of a last turn) is None."""
        table = self.table
        added = [c for c in (INFO_GAIN,) if c in table.components]
        out = []
        for i, outcome in enumerate(table.outcome):
            rows = table.traj == i
            record: dict[str, Any] = {
                "estimator": estimator,
                "reward": finite_list(table.reward[rows]),
                "outcome": float(outcome),
                "advantage": finite_list(self.advantages[rows]),
            }
            if self.clip_scale is not None:
                record["clip_scale"] = finite_list(self.clip_scale[rows])
            if added:
                record["components"] = {c: finite_list(table.components[c][rows]) for c in added}
            out.append(record)
        return out


def _last_turn(table: TurnTable) -> np.ndarray:
    last = np.full(table.outcome.shape[0], -1)
    np.maximum.at(last, table.traj, table.turn)
    return table.turn == last[table.traj]


def with_rewards(
    table: TurnTable, reward: np.ndarray, outcome: np.ndarray | None = None
) -> TurnTable:
    """``table`` with new per-turn rewards; the per-trajectory outcome is their sum unless given."""
    if outcome is None:
        outcome = np.bincount(table.traj, weights=reward, minlength=table.outcome.shape[0])
    return replace(table, reward=reward, outcome=outcome)


def add_process_rewards(table: TurnTable, weights: dict[str, float]) -> TurnTable:
    """r_t + Σ_c w_c·component_c,t (a component absent from the batch counts as 0)."""
    if not weights:
        return table
    extra = sum(
        (
            w * table.components.get(name, np.zeros_like(table.reward))
            for name, w in weights.items()
        ),
        np.zeros_like(table.reward),
    )
    return with_rewards(table, table.reward + extra)


def gate_rewards(
    table: TurnTable,
    threshold: float,
    step_components: list[str] | None,
    weights: dict[str, float] | None = None,
) -> TurnTable:
    """G-RA: split each turn's reward into step rewards and the outcome, then gate.

    Step rewards are the named components, each times the weight it entered the reward with
    (``weights``: the ``process_rewards`` weights; 1 for a component of the env's own reward),
    or by default the whole reward of every non-final turn; the outcome o is what remains of the
    trajectory's return once step rewards are taken out.
    """
    weights = weights or {}
    if step_components is None:
        step = np.where(_last_turn(table), 0.0, table.reward)
    else:
        missing = [c for c in step_components if c not in table.components]
        if missing and table.traj.size:
            known = ", ".join(sorted(table.components)) or "none"
            raise ConfigError(
                f"algorithm.gating.step_components: no reward component {missing} (have: {known})"
            )
        step = sum(
            (
                weights.get(c, 1.0) * table.components[c]
                for c in step_components
                if c in table.components
            ),
            np.zeros_like(table.reward),
        )
    n_traj = table.outcome.shape[0]
    outcome = table.outcome - np.bincount(table.traj, weights=step, minlength=n_traj)
    turn_rewards = gated_turn_rewards(outcome, step, table.traj, table.turn, threshold=threshold)
    totals = gated_accumulation(outcome, step, table.traj, threshold=threshold)
    return with_rewards(table, turn_rewards, totals)


async def add_info_gain(
    table: TurnTable, trajectories: list[Trajectory], policy: Any, options: dict[str, Any]
) -> TurnTable:
    """Attach the ``info_gain`` component: teacher-forced gain in p(ground truth) per turn."""
    from agentenv.rewards.info_gain import info_gain_rewards

    gains = await info_gain_rewards(policy, trajectories, **options)
    ig = np.asarray(gains, dtype=np.float64)
    if ig.shape != table.reward.shape:
        raise ValueError(f"info gain: expected {table.reward.shape[0]} rows, got {ig.shape}")
    return replace(table, components={**table.components, INFO_GAIN: ig})


async def compute_credit(
    algorithm: AlgorithmConfig, trajectories: list[Trajectory], policy: Any
) -> TurnCredit:
    """Per-turn advantages for ``trajectories`` (all trainable) under ``algorithm``."""
    table = TurnTable.from_trajectories(trajectories)
    table = add_process_rewards(table, algorithm.process_rewards)
    metrics: dict[str, float] = {}
    if algorithm.info_gain.enabled:
        table = await add_info_gain(table, trajectories, policy, algorithm.info_gain.options)
        ig = table.components[INFO_GAIN]
        finite = ig[np.isfinite(ig) & ~_last_turn(table)]
        if finite.size:
            metrics["info_gain_mean"] = float(finite.mean())
    if algorithm.gating.enabled:
        gating = algorithm.gating
        table = gate_rewards(
            table, gating.threshold, gating.step_components, algorithm.process_rewards
        )
        metrics["gated_return"] = float(table.outcome.mean()) if table.outcome.size else 0.0
    try:
        advantages, clip = compute_advantages_with_clip(
            algorithm.estimator, table, **algorithm.options
        )
    except ValueError as exc:
        raise ConfigError(f"algorithm.estimator={algorithm.estimator}: {exc}") from exc
    has_scale = bool(np.any(clip != 1.0))
    return TurnCredit(
        advantages=np.asarray(advantages, dtype=np.float64),
        clip_scale=np.asarray(clip, dtype=np.float64) if has_scale else None,
        table=table,
        metrics=metrics,
    )
