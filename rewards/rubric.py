"""A rubric: a weighted set of named reward functions (as in ``verifiers``' rubrics).

    R = Σ_k w_k · f_k(**context)

The trainer scores each finished episode with the context :func:`episode_context` builds
(``algorithm.rubric``); its functions are named by import path (:func:`load_function`).

Every component is reported as a metric, including those of weight 0 (metric only). A component
that raises, or returns something that is not a finite number, scores 0 for that call and is
counted in :attr:`Rubric.errors`; it never brings the episode down. Components may be plain or
``async`` callables; they receive the keyword arguments they declare out of the context.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import logging
import math
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from agentenv.env import GROUND_TRUTH
from agentenv.trajectory import Trajectory

__all__ = ["RewardComponent", "Rubric", "RubricResult", "episode_context", "load_function"]

log = logging.getLogger(__name__)

RewardFn = Callable[..., float | Awaitable[float]]


@dataclass(frozen=True)
class RewardComponent:
    """A named reward function and its weight (0 = logged as a metric, not rewarded)."""

    name: str
    fn: RewardFn
    weight: float = 1.0


@dataclass
class RubricResult:
    """The weighted total, every component's raw score, and which components failed."""

    total: float
    components: dict[str, float]
    failed: list[str] = field(default_factory=list)


def _accepted(fn: RewardFn) -> tuple[set[str], bool]:
    params = inspect.signature(fn).parameters.values()
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params)
    names = {p.name for p in params if p.kind is not inspect.Parameter.VAR_POSITIONAL}
    return names, takes_any


class Rubric:
    """Weighted named reward functions; see the module docstring."""

    def __init__(self, components: Sequence[RewardComponent | tuple[str, RewardFn, float]]):
        self.components = [
            c if isinstance(c, RewardComponent) else RewardComponent(*c) for c in components
        ]
        names = [c.name for c in self.components]
        dupes = sorted(n for n, k in Counter(names).items() if k > 1)
        if dupes:
            raise ValueError(f"components: duplicate name(s) {', '.join(dupes)}")
        self._signatures = {c.name: _accepted(c.fn) for c in self.components}
        self.errors: Counter[str] = Counter()

    def _kwargs(self, name: str, context: Mapping[str, Any]) -> dict[str, Any]:
        names, takes_any = self._signatures[name]
        return dict(context) if takes_any else {k: v for k, v in context.items() if k in names}

    async def _run(self, comp: RewardComponent, context: Mapping[str, Any]) -> float | None:
        try:
            value = comp.fn(**self._kwargs(comp.name, context))
            if inspect.isawaitable(value):
                value = await value
            value = float(value)
            if not math.isfinite(value):
                raise ValueError(f"non-finite score {value}")
            return value
        except Exception as exc:  # a broken component must never crash an episode
            self.errors[comp.name] += 1
            log.warning("reward component %r failed: %s: %s", comp.name, type(exc).__name__, exc)
            return None

    async def ascore(self, **context: Any) -> RubricResult:
        """Score one context; async components run concurrently."""
        values = await asyncio.gather(*(self._run(c, context) for c in self.components))
        comps, failed, total = {}, [], 0.0
        for comp, value in zip(self.components, values, strict=True):
            if value is None:
                failed.append(comp.name)
                value = 0.0
            comps[comp.name] = value
            total += comp.weight * value
        return RubricResult(total, comps, failed)

    def score(self, **context: Any) -> RubricResult:
        """Synchronous :meth:`ascore` (not from inside a running event loop)."""
        return asyncio.run(self.ascore(**context))

    async def ascore_batch(self, contexts: Sequence[Mapping[str, Any]]) -> list[RubricResult]:
        """Score many contexts concurrently."""
        return list(await asyncio.gather(*(self.ascore(**c) for c in contexts)))

    @property
    def weights(self) -> dict[str, float]:
        return {c.name: c.weight for c in self.components}


def load_function(path: str) -> RewardFn:
    """The callable ``module:name`` (or ``package.module:name``) names; a ValueError says what
    is missing."""
    module_name, _, name = path.partition(":")
    if not module_name or not name:
        raise ValueError(f"{path!r}: expected MODULE:FUNCTION (e.g. mypkg.rewards:brevity)")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        raise ValueError(f"{path!r}: no module named {exc.name!r}") from None
    fn = getattr(module, name, None)
    if not callable(fn):
        raise ValueError(f"{path!r}: module {module_name!r} has no function {name!r}")
    return fn


def episode_context(trajectory: Trajectory) -> dict[str, Any]:
    """What a rubric function may ask for about one episode, by keyword: ``completion`` (the
    last action), ``actions`` (every action), ``ground_truth`` (the task's reference, None when
    the env gives none), ``reward`` (the env's return), ``success``, ``num_turns``,
    ``components`` (the env's reward components summed over turns), ``env_id``, ``task_id``
    and ``trajectory`` itself."""
    components: dict[str, float] = {}
    for turn in trajectory.turns:
        for key, value in turn.reward_components.items():
            components[key] = components.get(key, 0.0) + float(value)
    actions = [turn.action for turn in trajectory.turns]
    return {
        "completion": actions[-1] if actions else "",
        "actions": actions,
        "ground_truth": trajectory.metadata.get(GROUND_TRUTH),
        "reward": trajectory.reward,
        "success": trajectory.success,
        "num_turns": trajectory.num_turns,
        "components": components,
        "env_id": trajectory.env_id,
        "task_id": trajectory.task_id,
        "trajectory": trajectory,
    }
