"""Which episodes training plays: the env probes, the resumable data cursor over the training
task sources, the held-out episodes and the rollout budgets of a config."""

from __future__ import annotations

from dataclasses import dataclass, field

from agentenv.evaluate import Suite, SuiteEntry
from agentenv.planner import TaskSource, eval_episodes, probe_all, split_counts, train_episodes
from agentenv.rollout import EpisodeRequest, RolloutConfig
from agentenv.train.config import ConfigError, TrainConfig
from agentenv.train.credit import INFO_GAIN
from agentenv.train.process_rewards import component_names


@dataclass
class DataCursor:
    """How many training tasks of each env have been consumed (the resumable data position)."""

    consumed: list[int] = field(default_factory=list)

    def take(
        self, config: TrainConfig, sources: list[TaskSource], n_tasks: int
    ) -> list[EpisodeRequest]:
        """Requests for the next ``n_tasks`` tasks (``group_size`` episodes each)."""
        requests: list[EpisodeRequest] = []
        counts = split_counts([e.weight for e in config.envs], n_tasks)
        group_size = config.rollout.group_size
        for i, (env, source, n) in enumerate(zip(config.envs, sources, counts, strict=True)):
            if n == 0:
                continue
            requests += train_episodes(
                source,
                self.consumed[i],
                n,
                group_size,
                seed_start=env.train_seed_start,
                run_seed=config.seed,
                env=i,
            )
            self.consumed[i] += n
        return requests


async def probe_envs(config: TrainConfig) -> tuple[list[TaskSource], list[TaskSource]]:
    """The training and held-out task sources of every env, each env built and reset once —
    before any warm-up stage runs, so a bad kwarg, a dead service or a reward component no env
    reports fails in seconds."""
    train = await probe_all([(e.id, e.kwargs, e.train_split) for e in config.envs], role="train")
    held_out = await probe_all([(e.id, e.kwargs, e.test_split) for e in config.envs], role="eval")
    check_component_names(config, train)
    return train, held_out


def check_component_names(config: TrainConfig, sources: list[TaskSource]) -> None:
    """:class:`ConfigError` for a reward component named in ``algorithm.process_rewards`` or
    ``algorithm.gating.step_components`` that none of the envs declares, nor credit assignment
    adds (unchecked when an env declares no components)."""
    if not sources or not all(s.reward_components for s in sources):
        return
    algorithm = config.algorithm
    known = {c for s in sources for c in s.reward_components}
    if algorithm.info_gain.enabled:
        known.add(INFO_GAIN)
    known.update(component_names(algorithm))
    named = [(f"algorithm.process_rewards.{c}", c) for c in algorithm.process_rewards]
    if algorithm.gating.enabled:
        named += [
            (f"algorithm.gating.step_components[{i}]", c)
            for i, c in enumerate(algorithm.gating.step_components or [])
        ]
    unknown = [
        f"{path}: no env reports a reward component {c!r}" for path, c in named if c not in known
    ]
    if unknown:
        raise ConfigError("; ".join(unknown) + f" (declared: {', '.join(sorted(known))})")


def eval_suite(config: TrainConfig) -> Suite:
    """The held-out suite: ``eval.tasks`` held-out tasks of every env."""
    entries = [
        SuiteEntry(e.id, dict(e.kwargs), e.test_split, config.eval.tasks) for e in config.envs
    ]
    return Suite(config.name, entries)


def eval_requests(config: TrainConfig, sources: list[TaskSource]) -> list[EpisodeRequest]:
    """The held-out episodes (``eval.samples`` each), seeded as ``agentenv eval`` seeds them."""
    requests = []
    for env, entry, source in zip(config.envs, eval_suite(config).entries, sources, strict=True):
        plan = eval_episodes(source, entry.n, config.eval.samples, env.test_seed_start)
        requests += [request for request, _ in plan]
    return requests


def rollout_config(config: TrainConfig, temperature: float | None = None) -> RolloutConfig:
    r = config.rollout
    return RolloutConfig(
        max_turns=r.max_turns,
        max_tokens_per_turn=r.max_tokens_per_turn,
        max_context_tokens=r.max_context_tokens,
        temperature=r.temperature if temperature is None else temperature,
        top_p=r.top_p,
        top_k=r.top_k,
        max_concurrent_episodes=r.max_concurrent_episodes,
        tool_parser=r.tool_parser,
    )
