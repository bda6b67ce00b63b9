"""Which episodes a run plays: an env's task source, probed once, turned into episode requests.

Evaluation and training pick tasks through the env contract — :meth:`TextEnv.splits`,
:meth:`TextEnv.task_ids` and the reset options ``{"split": …}`` / ``{"task": …}`` — never through
constructor kwargs, so an env without a ``split`` argument is planned like any other.

- :func:`probe` builds each env once before anything is planned, resolves its split, resets it
  once (a bad kwarg, an unknown split or a dead service fails here, naming the env, before any
  episode or training stage runs) and lists a finite split's tasks.
- :func:`eval_episodes`: a finite split plays each of its first ``n`` tasks exactly once per
  sample (``n`` defaults to all of them; asking for more is an error); an unlimited split draws
  ``n`` tasks with consecutive seeds.
- :func:`train_episodes`: training walks a finite split in epochs, each a seeded permutation of
  its tasks (deterministic cycling); an unlimited split uses consecutive seeds.
- :func:`demo_episodes`: the episodes SFT collects demonstrations on, one per task.

Every episode's reset seed, task and sample seed (which seeds its generation) are computed here
and nowhere else: :func:`eval_sample_seed` and :func:`train_sample_seed` say how.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from agentenv.env import SPLIT_OPTION
from agentenv.registry import make
from agentenv.rollout import EpisodeRequest

DEFAULT_SPLITS: dict[str, str] = {"eval": "test", "train": "train"}
"""The split a role uses when none is named, if the env declares it."""
DEFAULT_EVAL_TASKS = 50
"""Tasks per env of an evaluation over an unlimited split when ``n`` is not given."""

Role = Literal["eval", "train"]


class PlanError(ValueError):
    """An env of a run cannot be planned: not buildable, no such split, reset failed, or more
    tasks asked of a finite split than it has. The message names the env."""


@dataclass(frozen=True)
class TaskSource:
    """Where one env's episodes come from: ``split`` (``None``: the env declares no splits) of
    ``size`` tasks (``None``: unlimited), and a finite split's ``task_ids`` in order."""

    env_id: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    split: str | None = None
    size: int | None = None
    task_ids: tuple[str, ...] = ()
    reward_components: tuple[str, ...] = ()
    """The component names the env declares (:attr:`TextEnv.reward_components`; empty: none)."""

    @property
    def finite(self) -> bool:
        return self.size is not None

    def describe(self) -> str:
        split = "no splits" if self.split is None else f"split {self.split!r}"
        size = "unlimited" if self.size is None else f"{self.size} tasks"
        return f"{self.env_id} ({split}, {size})"


def resolve_split(splits: dict[str, int | None], requested: str | None, role: Role) -> str | None:
    """The split to play: ``requested`` if declared; else the role's default (``test`` for
    evaluation, ``train`` for training) if declared; ``None`` for an env without splits."""
    if requested is not None:
        if requested not in splits:
            declared = ", ".join(map(repr, splits)) or "none"
            raise ValueError(f"no split {requested!r}; the env's splits: {declared}")
        return requested
    if not splits:
        return None
    default = DEFAULT_SPLITS[role]
    if default not in splits:
        raise ValueError(
            f"no {default!r} split to {role} on; name one of {', '.join(map(repr, splits))}"
        )
    return default


async def probe(
    env_id: str, kwargs: dict[str, Any] | None = None, split: str | None = None, *, role: Role
) -> TaskSource:
    """Build ``env_id`` with ``kwargs``, resolve its split for ``role``, reset it once, close it.

    Any failure is a :class:`PlanError` naming the env and the cause.
    """
    kwargs = dict(kwargs or {})
    env = None
    try:
        env = make(env_id, **kwargs)
        splits = env.splits()
        chosen = resolve_split(splits, split, role)
        size = None if chosen is None else splits[chosen]
        ids = tuple(env.task_ids(chosen)) if size is not None else ()
        if size is not None and len(ids) != size:
            raise ValueError(f"split {chosen!r} declares {size} tasks but lists {len(ids)}")
        options = {"task": ids[0]} if ids else {SPLIT_OPTION: chosen}
        await env.areset(seed=0, options=options)
    except Exception as exc:
        raise PlanError(f"env {env_id} (kwargs {kwargs}): {type(exc).__name__}: {exc}") from exc
    finally:
        if env is not None:
            await env.aclose()
    return TaskSource(env_id, kwargs, chosen, size, ids, tuple(env.reward_components))


async def probe_all(
    entries: Sequence[tuple[str, dict[str, Any], str | None]], *, role: Role
) -> list[TaskSource]:
    """:func:`probe` each ``(env_id, kwargs, split)``; every failure is reported together."""
    sources, errors = [], []
    for env_id, kwargs, split in entries:
        try:
            sources.append(await probe(env_id, kwargs, split, role=role))
        except PlanError as exc:
            errors.append(str(exc))
    if errors:
        raise PlanError("\n".join(errors))
    return sources


def request_for(
    source: TaskSource, seed: int, index: int, *, sample_seed: int | None, traj_id: str
) -> EpisodeRequest:
    """An episode of ``source`` with reset ``seed``: on a finite split its task number ``index``
    (modulo the size), on an unlimited one the task the seed draws."""
    task = source.task_ids[index % source.size] if source.finite else None
    return EpisodeRequest(
        source.env_id,
        seed,
        task=task,
        split=source.split,
        env_kwargs=dict(source.kwargs),
        sample_seed=sample_seed,
        traj_id=traj_id,
    )


def eval_tasks(source: TaskSource, n: int | None) -> int:
    """How many tasks an evaluation of ``source`` plays: ``n``, else all of a finite split, else
    :data:`DEFAULT_EVAL_TASKS`. More than a finite split holds is a :class:`PlanError`."""
    if n is None:
        return source.size if source.finite else DEFAULT_EVAL_TASKS
    if n < 1:
        raise PlanError(f"{source.describe()}: the number of tasks must be >= 1, got {n}")
    if source.finite and n > source.size:
        raise PlanError(
            f"{source.describe()}: asked for {n} tasks; each task of a finite split is played "
            f"once per sample, so ask for at most {source.size} (or leave n unset for all)"
        )
    return n


def eval_sample_seed(seed: int, sample: int) -> int:
    """The sample seed of sample ``sample`` of the evaluation task with reset seed ``seed``:
    ``131 · seed + sample``, the same in every evaluation of that task."""
    return seed * 131 + sample


def train_sample_seed(run_seed: int, env: int, task: int, member: int, group_size: int) -> int:
    """The sample seed of group member ``member`` on training task number ``task`` (counted
    from 0 over the run) of the run's env number ``env``:
    ``(1 000 003 · run_seed + 7 919 · env + task) · group_size + member``. It depends on the
    task's position alone, not on the step that plays it, so a resumed run replays the same."""
    return (run_seed * 1_000_003 + env * 7_919 + task) * group_size + member


def eval_episodes(
    source: TaskSource, n: int | None, k: int, seed_offset: int
) -> list[tuple[EpisodeRequest, int]]:
    """``(request, sample)`` for ``n`` tasks × ``k`` samples: task ``i`` has seed
    ``seed_offset + i`` (a finite split's ``i``-th task, an unlimited split's seeded draw) and
    sample ``s`` of it the sample seed :func:`eval_sample_seed`."""
    plan = []
    for i in range(eval_tasks(source, n)):
        seed = seed_offset + i
        for sample in range(k):
            traj_id = f"{source.env_id}/{seed}/{sample}"
            sample_seed = eval_sample_seed(seed, sample)
            request = request_for(source, seed, i, sample_seed=sample_seed, traj_id=traj_id)
            plan.append((request, sample))
    return plan


def epoch_order(size: int, epoch: int, seed: int) -> np.ndarray:
    """The order a finite split's tasks are trained on in ``epoch``: a seeded permutation."""
    return np.random.default_rng([seed, epoch]).permutation(size)


def train_episodes(
    source: TaskSource,
    start: int,
    n: int,
    group_size: int,
    *,
    seed_start: int,
    run_seed: int,
    env: int,
) -> list[EpisodeRequest]:
    """``group_size`` episodes for each of training tasks ``start … start + n − 1`` of
    ``source``, the run's env number ``env``.

    Task ``j`` has seed ``seed_start + j``; on a finite split it is task
    ``epoch_order(size, j // size, run_seed)[j % size]``, so training cycles through the split
    epoch by epoch, deterministically. Member ``g`` of its group has the sample seed
    :func:`train_sample_seed` ``(run_seed, env, j, g, group_size)``.
    """
    requests = []
    for j in range(start, start + n):
        index = j
        if source.finite:
            index = int(epoch_order(source.size, j // source.size, run_seed)[j % source.size])
        seed = seed_start + j
        for g in range(group_size):
            traj_id = f"{source.env_id}/{seed}/{g}"
            sample = train_sample_seed(run_seed, env, j, g, group_size)
            requests.append(request_for(source, seed, index, sample_seed=sample, traj_id=traj_id))
    return requests


def demo_episodes(source: TaskSource, n: int, seed_start: int) -> list[EpisodeRequest]:
    """One episode on each of ``n`` tasks of ``source`` for demonstrations: task ``i`` has seed
    ``seed_start + i`` (a finite split's ``i``-th task, modulo its size); no sample seed (a
    demonstrator is scripted)."""
    return [
        request_for(source, seed, i, sample_seed=None, traj_id=f"{source.env_id}/{seed}/demo")
        for i, seed in enumerate(range(seed_start, seed_start + n))
    ]


def split_counts(weights: Sequence[float], total: int) -> list[int]:
    """Largest-remainder split of ``total`` tasks by ``weights``."""
    w = np.asarray(weights, dtype=np.float64)
    exact = total * w / w.sum()
    counts = np.floor(exact).astype(int)
    for i in np.argsort(-(exact - counts), kind="stable")[: total - counts.sum()]:
        counts[i] += 1
    return counts.tolist()
