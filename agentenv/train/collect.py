"""Collection: the episodes of one RL step (with dynamic sampling) and the held-out
evaluation, with the metrics the run logs about them."""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from agentenv.evaluate import EngineFactory, success_count
from agentenv.planner import TaskSource
from agentenv.rollout import RolloutEngine, check_not_all_failed
from agentenv.train.config import TrainConfig
from agentenv.train.episodes import DataCursor, eval_requests, rollout_config
from agentenv.trajectory import Trajectory


def group_returns_vary(trajectories: list[Trajectory]) -> dict[str, bool]:
    """Per group id: whether its trainable trajectories' returns differ (dynamic sampling)."""
    returns: dict[str, list[float]] = {}
    for t in trajectories:
        if t.trainable:
            returns.setdefault(t.group_id, []).append(t.reward)
    return {g: len(r) > 1 and float(np.ptp(r)) > 0 for g, r in returns.items()}


async def collect(
    engine: RolloutEngine, config: TrainConfig, cursor: DataCursor, sources: list[TaskSource]
) -> tuple[list[Trajectory], dict[str, Any]]:
    """One step's trajectories (with dynamic sampling: only groups whose returns vary)."""
    want = config.rollout.tasks_per_step
    played = await engine.run(cursor.take(config, sources, want))
    stats = {"groups_played": want, "groups_dropped": 0}
    if not config.dynamic_sampling.enabled:
        return played, stats
    kept: list[Trajectory] = []
    for round_ in range(config.dynamic_sampling.max_rounds + 1):
        varying = group_returns_vary(played)
        groups = [g for g in dict.fromkeys(t.group_id for t in played) if varying.get(g)]
        stats["groups_dropped"] += len(set(varying)) - len(groups)
        have = len({t.group_id for t in kept})
        take = set(groups[: max(0, want - have)])
        kept += [t for t in played if t.group_id in take]
        have = len({t.group_id for t in kept})
        if have >= want or round_ == config.dynamic_sampling.max_rounds:
            break
        played = await engine.run(cursor.take(config, sources, want - have))
        stats["groups_played"] += want - have
    return kept, stats


async def evaluate_policy(
    policy: Any,
    config: TrainConfig,
    sources: list[TaskSource],
    *,
    make_engine: EngineFactory = RolloutEngine,
) -> tuple[dict[str, Any], list[Trajectory]]:
    """Success and mean return on the held-out tasks, played by ``make_engine(policy, ...)``."""
    engine = make_engine(policy, rollout_config(config, config.eval.temperature))
    t0 = time.perf_counter()
    trajectories = await engine.run(eval_requests(config, sources))
    check_not_all_failed(trajectories, "the held-out evaluation")
    count = success_count(trajectories)
    ok = [t for t in trajectories if t.trainable]
    row: dict[str, Any] = {
        "episodes": count.episodes,
        "errors": count.errors,
        "success": count.rate,
        "reward": float(np.mean([t.reward for t in ok])) if ok else 0.0,
        "turns": float(np.mean([t.num_turns for t in ok])) if ok else 0.0,
        "eval_s": time.perf_counter() - t0,
    }
    for env in config.envs:
        mine = [t for t in ok if t.env_id == env.id]
        if len(config.envs) > 1 and mine:
            row[f"success/{env.id}"] = success_count(mine).rate
    return row, trajectories


def trajectory_metrics(trajectories: list[Trajectory]) -> dict[str, Any]:
    """Reward, success, per-component rewards, lengths and statuses of a batch of episodes."""
    count = success_count(trajectories)
    ok = [t for t in trajectories if t.trainable]
    row: dict[str, Any] = {
        "episodes": count.episodes,
        "errors": count.errors,
        "truncated": sum(t.status == "truncated" for t in ok),
    }
    if not ok:
        return row
    row["reward"] = float(np.mean([t.reward for t in ok]))
    row["success"] = count.rate
    row["turns"] = float(np.mean([t.num_turns for t in ok]))
    row["response_tokens"] = float(np.mean([sum(t.loss_mask) for t in ok]))
    components: dict[str, list[float]] = {}
    for i, t in enumerate(ok):
        for turn in t.turns:
            for name, value in turn.reward_components.items():
                components.setdefault(name, [0.0] * len(ok))[i] += float(value)
    for name, values in components.items():
        row[f"reward/{name}"] = float(np.mean(values))
    return row
