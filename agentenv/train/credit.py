"""From trajectories to per-turn advantages, as the ``algorithm`` config section says.

Order of operations on the batch's :class:`~agentenv.trajectory.TurnTable`:

1. process rewards: ``r_t += Σ_c w_c · component_c,t`` (``algorithm.process_rewards``), among
   them the components ``judge``, ``prm`` and ``spa`` that ``algorithm.judge``/``prm``/``spa``
   add with their ``weight`` (:mod:`agentenv.train.process_rewards`);
2. information gain (IGPO, arXiv 2510.14967): teacher-forced ``info_gain`` per turn, added as a
   reward component that ``igpo`` / ``a2tgpo`` read;
3. G-RA gating (arXiv 2508.10548): step rewards count only when the outcome reaches δ —
   per turn r̃_t = 1[o ≥ δ]·r^step_t (+ o on the last turn), per trajectory
   R = o + 1[o ≥ δ]·Σ_t r^step_t;
4. the estimator (:func:`agentenv.rewards.compute_advantages_with_clip`), which also returns
   A²TGPO's per-turn clip scales (1 for every other method). PPO's ``ppo`` reads the value
   head's per-turn values (the ``value`` component) and, on truncated trajectories, the value
   after the last turn (``end_value``, 0 on terminated ones); its value targets R_t = A_t + V_t
   are :attr:`TurnCredit.returns`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from agentenv.rewards import compute_advantages_with_clip
from agentenv.rewards.estimators import END_VALUE, VALUE, value_targets
from agentenv.rewards.gating import gated_accumulation, gated_turn_rewards
from agentenv.rewards.info_gain import info_gain_rewards
from agentenv.train.config import AlgorithmConfig, ConfigError, TrainConfig
from agentenv.train.process_rewards import JUDGE, PRM, RUBRIC, SPA, ProcessRewards
from agentenv.train.value import TurnValues
from agentenv.trajectory import Trajectory, TurnTable, finite_list

INFO_GAIN = "info_gain"


@dataclass
class TurnCredit:
    """Per-turn-row advantages (TurnTable order), optional clip scales, step metrics, and the
    value targets when the estimator reads values (PPO)."""

    advantages: np.ndarray
    clip_scale: np.ndarray | None
    table: TurnTable
    metrics: dict[str, float] = field(default_factory=dict)
    returns: np.ndarray | None = None

    def per_trajectory(self, estimator: str) -> list[dict[str, Any]]:
        """What each trajectory of the batch received, in batch order: the ``estimator``, the
        per-turn ``reward`` it was fed (after process rewards and gating) and the trajectory's
        ``outcome``, the per-turn ``advantage`` (and ``clip_scale`` when the estimator sets
        one), and the reward components credit added (``info_gain``, ``judge``, ``prm``,
        ``spa``, ``rubric``, PPO's ``value`` and ``end_value``) — what a viewer needs to show a
        turn's credit and recompute it under other estimators. A value that is not
        finite (the information gain of a last turn) is None."""
        table = self.table
        added = [
            c
            for c in (INFO_GAIN, JUDGE, PRM, SPA, RUBRIC, VALUE, END_VALUE)
            if c in table.components
        ]
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
        step = np.where(table.last_turn, 0.0, table.reward)
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
    gains = await info_gain_rewards(policy, trajectories, **options)
    ig = np.asarray(gains, dtype=np.float64)
    if ig.shape != table.reward.shape:
        raise ValueError(f"info gain: expected {table.reward.shape[0]} rows, got {ig.shape}")
    return replace(table, components={**table.components, INFO_GAIN: ig})


def add_values(table: TurnTable, trajectories: list[Trajectory], values: TurnValues) -> TurnTable:
    """Attach the ``value`` component (V per turn) and ``end_value`` (V after the last turn on a
    truncated trajectory, 0 on a terminated one: the bootstrap ``ppo`` reads)."""
    if values.values.shape != table.reward.shape:
        raise ValueError(
            f"values: expected {table.reward.shape[0]} rows, got {values.values.shape}"
        )
    truncated = np.array([t.status == "truncated" for t in trajectories], dtype=bool)
    end = np.where(truncated, values.end_values, 0.0)[table.traj]
    return replace(table, components={**table.components, VALUE: values.values, END_VALUE: end})


def gae_options(algorithm: AlgorithmConfig) -> dict[str, Any]:
    """The options of the ``ppo`` estimator ``algorithm`` runs (itself, or empg's base)."""
    if algorithm.estimator == "ppo":
        return dict(algorithm.options)
    return dict(algorithm.options.get("base_options") or {})


async def compute_credit(
    algorithm: AlgorithmConfig,
    trajectories: list[Trajectory],
    policy: Any,
    *,
    process: ProcessRewards | None = None,
    values: TurnValues | None = None,
) -> TurnCredit:
    """Per-turn advantages for ``trajectories`` (all trainable) under ``algorithm``; ``process``
    adds its components, each with its section's weight (which replaces a ``process_rewards``
    weight of the same name); ``values`` are the value head's, for PPO."""
    table = TurnTable.from_trajectories(trajectories)
    metrics: dict[str, float] = {}
    weights = dict(algorithm.process_rewards)
    if process is not None and process.sources:
        added, process_metrics = await process(trajectories, table)
        table = replace(table, components={**table.components, **added})
        weights.update(process.weights)
        metrics.update(process_metrics)
    table = add_process_rewards(table, weights)
    if algorithm.info_gain.enabled:
        table = await add_info_gain(table, trajectories, policy, algorithm.info_gain.options)
        ig = table.components[INFO_GAIN]
        finite = ig[np.isfinite(ig) & ~table.last_turn]
        if finite.size:
            metrics["info_gain_mean"] = float(finite.mean())
    if algorithm.gating.enabled:
        gating = algorithm.gating
        table = gate_rewards(table, gating.threshold, gating.step_components, weights)
        metrics["gated_return"] = float(table.outcome.mean()) if table.outcome.size else 0.0
    if values is not None:
        table = add_values(table, trajectories, values)
    try:
        advantages, clip = compute_advantages_with_clip(
            algorithm.estimator, table, **algorithm.options
        )
        returns = None if values is None else value_targets(table, **gae_options(algorithm))
    except ValueError as exc:
        raise ConfigError(f"algorithm.estimator={algorithm.estimator}: {exc}") from exc
    has_scale = bool(np.any(clip != 1.0))
    return TurnCredit(
        advantages=np.asarray(advantages, dtype=np.float64),
        clip_scale=np.asarray(clip, dtype=np.float64) if has_scale else None,
        table=table,
        metrics=metrics,
        returns=returns,
    )


class CreditAssigner:
    """A run's credit assignment, built once: ``algorithm`` and the judged and learned process
    rewards it enables, whose state (:meth:`state_dict`) goes into the run's checkpoints."""

    def __init__(self, algorithm: AlgorithmConfig, process: ProcessRewards | None = None) -> None:
        self.algorithm = algorithm
        self.process = process or ProcessRewards()

    @classmethod
    def for_run(
        cls, config: TrainConfig, start: Path, model: torch.nn.Module, *, pad_id: int
    ) -> CreditAssigner:
        """The run's assigner: a PRM starts from ``start``, SPA reads ``model``'s hidden states."""
        return cls(config.algorithm, ProcessRewards.for_run(config, start, model, pad_id=pad_id))

    async def __call__(
        self, trajectories: list[Trajectory], policy: Any, values: TurnValues | None = None
    ) -> TurnCredit:
        return await compute_credit(
            self.algorithm, trajectories, policy, process=self.process, values=values
        )

    def state_dict(self) -> dict[str, Any]:
        return self.process.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.process.load_state_dict(state)

    async def aclose(self) -> None:
        await self.process.aclose()
