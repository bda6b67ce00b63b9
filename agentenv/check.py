"""``agentenv check``: does an env keep the :class:`~agentenv.env.TextEnv` contract?

:func:`check_env` runs one row of checks per rule and returns a :class:`CheckReport`:

- ``gymnasium``: Gymnasium's own ``check_env`` on the unwrapped env (spaces, reset and step
  return types, seed determinism, render, close);
- ``info keys``: reset and step info of a few random episodes carry the documented keys with
  their documented types (:data:`~agentenv.env.INFO_KEYS`);
- ``splits``: every declared split resets; a finite split lists as many task ids as it declares
  and its ids reset to themselves; an unlimited split draws more than one task;
- ``bad actions``: hundreds of malformed actions (empty, huge, binary and Unicode junk, lone
  surrogates, unclosed tags, the system prompt's tags around junk) never raise and always get a
  text observation;
- ``random episode``: a random policy's episode ends (terminated or truncated) within a bound;
- ``episode end``: stepping a finished episode raises :class:`~agentenv.env.EpisodeOverError`;
- ``pickle/deepcopy``: an env copied mid-episode (pickle and ``copy.deepcopy``) steps on;
- ``close`` (an env built from an id): it closes.

Everything is seeded: the same env, seed and settings give the same report.
"""

from __future__ import annotations

import copy
import math
import numbers
import pickle
import re
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import gymnasium
import numpy as np
from gymnasium.utils.env_checker import check_env as gymnasium_check_env
from rich.table import Table

from agentenv.env import (
    ACTION_VALID,
    ANCHOR,
    MAX_TEXT_LENGTH,
    REWARD_COMPONENTS,
    SPLIT_OPTION,
    SUCCESS,
    SYSTEM_PROMPT,
    TASK_ID,
    TASK_OPTION,
    EpisodeOverError,
    TextEnv,
)
from agentenv.policies.scripted import RandomAction, protocol_tags, random_actor
from agentenv.registry import gymnasium_id, make

BAD_ACTIONS = 300
"""Malformed actions tried by the ``bad actions`` check."""
MAX_STEPS = 200
"""Steps a random episode may take before the ``random episode`` check gives up on its end."""
INFO_EPISODES = 3
"""Random episodes whose every info the ``info keys`` check reads."""
UNLIMITED_SEEDS = 8
"""Seeds the ``splits`` check draws from an unlimited split: they must not all give one task."""
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_BAD_ACTIONS_STREAM, _COPY_STREAM = 2**32, 2**32 + 1
"""Random streams of the checks that play no episode (episodes use their reset seed)."""


class CheckFailed(Exception):
    """A check found the env breaking a rule; the message says how."""


@dataclass(frozen=True)
class CheckResult:
    """One row of the report: the check, whether it passed, and what it saw or why it failed."""

    name: str
    passed: bool
    detail: str


@dataclass
class CheckReport:
    """Every check's result on one env."""

    env: str
    results: list[CheckResult] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(r.passed for r in self.results)

    @property
    def failures(self) -> list[CheckResult]:
        return [r for r in self.results if not r.passed]

    def result(self, name: str) -> CheckResult:
        """The row of check ``name``."""
        return next(r for r in self.results if r.name == name)

    def table(self) -> Table:
        """The report as a rich table: one row per check, the reason of each failure."""
        table = Table(title=f"agentenv check {self.env}")
        table.add_column("check")
        table.add_column("result")
        table.add_column("details", overflow="fold")
        for r in self.results:
            table.add_row(
                r.name, "[green]pass[/green]" if r.passed else "[red]FAIL[/red]", r.detail
            )
        return table

    def summary(self) -> str:
        failed = len(self.failures)
        if failed:
            return f"{failed} of {len(self.results)} checks failed"
        return f"all {len(self.results)} checks passed"


@dataclass
class _Subject:
    """The env under check and the settings every check shares."""

    env: TextEnv
    env_id: str | None
    env_kwargs: dict[str, Any]
    seed: int
    bad_actions: int
    max_steps: int
    actor: RandomAction

    def rng(self, stream: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, stream])


def check_env(
    env: str | TextEnv,
    *,
    env_kwargs: dict[str, Any] | None = None,
    seed: int = 0,
    bad_actions: int = BAD_ACTIONS,
    max_steps: int = MAX_STEPS,
) -> CheckReport:
    """Check ``env`` (a registered id, a ``module:Class`` id, or an env object) against the
    :class:`~agentenv.env.TextEnv` contract.

    An id is built with ``env_kwargs`` and closed at the end (a last ``close`` row); its random
    episodes use the env's registered ``random_action`` when it has one, else the generic random
    action. An env object is checked as it is, with the generic random action, and left open.
    Whatever the env does wrong is a failed row; only building it from an id (an unknown id, a
    bad keyword argument) raises.
    """
    env_id = env if isinstance(env, str) else None
    kwargs = dict(env_kwargs or {})
    instance = make(env_id, **kwargs) if env_id is not None else env
    subject = _Subject(instance, env_id, kwargs, seed, bad_actions, max_steps, random_actor(env_id))
    report = CheckReport(env_id or type(instance).__name__)
    for name, check in CHECKS:
        report.results.append(_run(name, check, subject))
    if env_id is not None:
        report.results.append(_run("close", _close, subject))
    return report


def _close(subject: _Subject) -> str:
    subject.env.close()
    return "closed"


def _run(name: str, check: Callable[[_Subject], str], subject: _Subject) -> CheckResult:
    try:
        return CheckResult(name, True, check(subject))
    except CheckFailed as exc:
        return CheckResult(name, False, str(exc))
    except Exception as exc:  # whatever the env raises is the finding
        return CheckResult(name, False, f"{type(exc).__name__}: {_one_line(str(exc))}")


# ---------------------------------------------------------------------------------------------
# Episodes
# ---------------------------------------------------------------------------------------------
@dataclass
class _Episode:
    reset_info: dict[str, Any]
    steps: list[tuple[str, float, bool, bool, dict[str, Any]]] = field(default_factory=list)

    @property
    def ended(self) -> bool:
        return bool(self.steps) and (self.steps[-1][2] or self.steps[-1][3])


def _play_random(subject: _Subject, seed: int) -> _Episode:
    """A random-policy episode from ``reset(seed=seed)``, at most ``max_steps`` steps."""
    env, rng = subject.env, subject.rng(seed)
    observation, info = env.reset(seed=seed)
    messages = [
        {"role": "system", "content": str(info.get(SYSTEM_PROMPT, ""))},
        {"role": env.observation_role, "content": observation},
    ]
    episode = _Episode(info)
    while len(episode.steps) < subject.max_steps and not episode.ended:
        action = str(subject.actor(env.task, messages, rng))
        episode.steps.append(env.step(action))
        messages += [
            {"role": "assistant", "content": action},
            {"role": env.observation_role, "content": str(episode.steps[-1][0])},
        ]
    return episode


def _ended_episode(subject: _Subject) -> _Episode:
    episode = _play_random(subject, subject.seed)
    if not episode.ended:
        raise CheckFailed(
            f"the random episode (seed {subject.seed}) did not end within {subject.max_steps} "
            "steps: every episode must terminate or truncate (e.g. give the env a turn limit)"
        )
    return episode


# ---------------------------------------------------------------------------------------------
# The checks
# ---------------------------------------------------------------------------------------------
def check_gymnasium(subject: _Subject) -> str:
    """Gymnasium's ``check_env`` on the unwrapped env, built through ``gymnasium.make`` when the
    env has an id (so the render-mode and close checks run too). Warnings are reported."""
    env = subject.env
    if subject.env_id is not None:
        env = gymnasium.make(gymnasium_id(subject.env_id), **subject.env_kwargs).unwrapped
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            gymnasium_check_env(env)
    finally:
        if env is not subject.env:
            env.close()
    if not caught:
        return "passed"
    first = _one_line(_ANSI.sub("", str(caught[0].message)))
    return f"passed with {len(caught)} warning(s); first: {first}"


def _info_problems(
    info: dict[str, Any], *, reset: bool, declared: tuple[str, ...] = ()
) -> Iterator[str]:
    if info.get(TASK_ID) in (None, ""):
        yield f"no {TASK_ID}"
    if SYSTEM_PROMPT in info and not isinstance(info[SYSTEM_PROMPT], str):
        yield f"{SYSTEM_PROMPT} is a {type(info[SYSTEM_PROMPT]).__name__}, not a str"
    if ANCHOR not in info:
        yield f"no {ANCHOR}"
    else:
        try:
            hash(info[ANCHOR])
        except TypeError:
            yield f"{ANCHOR} {_short(info[ANCHOR])} is not hashable"
    if reset:
        return
    components = info.get(REWARD_COMPONENTS)
    if not isinstance(components, dict):
        yield f"{REWARD_COMPONENTS} is a {type(components).__name__}, not a dict"
    else:
        for key, value in components.items():
            if not isinstance(key, str):
                yield f"{REWARD_COMPONENTS} key {key!r} is not a str"
            if not isinstance(value, numbers.Real) or not math.isfinite(value):
                yield f"{REWARD_COMPONENTS}[{key!r}] = {_short(value)} is not a finite number"
            if declared and key not in declared:
                yield f"{REWARD_COMPONENTS} key {key!r} is not in the env's reward_components"
    for key in (ACTION_VALID, SUCCESS):
        if not isinstance(info.get(key), bool | np.bool_):
            yield f"{key} is {_short(info.get(key))}, not a bool"


def check_info_keys(subject: _Subject) -> str:
    """Reset and step infos of :data:`INFO_EPISODES` random episodes keep the documented keys."""
    problems: list[str] = []
    steps = 0
    for seed in range(subject.seed, subject.seed + INFO_EPISODES):
        episode = _play_random(subject, seed)
        task_id = episode.reset_info.get(TASK_ID)
        problems += [
            f"reset (seed {seed}): {p}" for p in _info_problems(episode.reset_info, reset=True)
        ]
        for turn, (_, reward, *_, info) in enumerate(episode.steps):
            where = f"step {turn} (seed {seed})"
            declared = tuple(subject.env.reward_components)
            problems += [
                f"{where}: {p}" for p in _info_problems(info, reset=False, declared=declared)
            ]
            if info.get(TASK_ID) != task_id:
                problems.append(f"{where}: {TASK_ID} {info.get(TASK_ID)!r} is not {task_id!r}")
            if not math.isfinite(reward):
                problems.append(f"{where}: reward {reward} is not finite")
        steps += len(episode.steps)
    if problems:
        raise CheckFailed(_listing(problems))
    return (
        f"{INFO_EPISODES} episodes, {steps} steps: task_id, anchor, reward_components, "
        "action_valid, success as documented"
    )


def check_splits(subject: _Subject) -> str:
    """Each declared split resets; finite splits list their ids; unlimited ones vary."""
    env = subject.env
    splits = env.splits()
    if not isinstance(splits, dict):
        raise CheckFailed(f"splits() returned a {type(splits).__name__}, not a dict")
    if not splits:
        return "none declared: the seed alone picks the task"
    notes = []
    for name, size in splits.items():
        if size is not None and (not isinstance(size, int) or size < 1):
            raise CheckFailed(f"split {name!r}: size {size!r} is neither None nor a positive int")
        finite = size is not None
        notes.append(
            _check_finite(subject, name, size) if finite else _check_unlimited(subject, name)
        )
    return "; ".join(notes)


def _check_unlimited(subject: _Subject, split: str) -> str:
    ids = [
        subject.env.reset(seed=seed, options={SPLIT_OPTION: split})[1][TASK_ID]
        for seed in range(subject.seed, subject.seed + UNLIMITED_SEEDS)
    ]
    again = subject.env.reset(seed=subject.seed, options={SPLIT_OPTION: split})[1][TASK_ID]
    if again != ids[0]:
        raise CheckFailed(f"split {split!r}: seed {subject.seed} drew {ids[0]!r}, then {again!r}")
    if len(set(ids)) == 1:
        raise CheckFailed(
            f"split {split!r} is declared unlimited, but {UNLIMITED_SEEDS} seeds all drew task "
            f"{ids[0]!r}"
        )
    return f"{split!r} unlimited ({len(set(ids))} tasks in {UNLIMITED_SEEDS} seeds)"


def _check_finite(subject: _Subject, split: str, size: int) -> str:
    env = subject.env
    ids = list(env.task_ids(split))
    if len(ids) != size:
        raise CheckFailed(f"split {split!r} declares {size} tasks, task_ids lists {len(ids)}")
    if len(set(ids)) != len(ids):
        raise CheckFailed(f"split {split!r}: task_ids repeats ids")
    drawn = env.reset(seed=subject.seed, options={SPLIT_OPTION: split})[1][TASK_ID]
    if str(drawn) not in map(str, ids):
        raise CheckFailed(f"split {split!r}: seed {subject.seed} drew {drawn!r}, not in task_ids")
    for task_id in dict.fromkeys(ids[i] for i in (0, size // 2, size - 1)):
        got = env.reset(seed=subject.seed, options={TASK_OPTION: task_id})[1][TASK_ID]
        if str(got) != str(task_id):
            raise CheckFailed(f"split {split!r}: reset on task {task_id!r} played {got!r}")
    return f"{split!r} {size} tasks (ids listed and reset)"


def bad_actions(
    system_prompt: str, tools: list[dict[str, Any]] | None, count: int, rng: np.random.Generator
) -> list[str]:
    """``count`` malformed actions for an env whose protocol ``system_prompt`` describes: fixed
    edge cases first, then random junk around the prompt's tags and the env's tool names."""
    tags = protocol_tags(system_prompt) or ["answer"]
    tool_names = [str(t.get("function", t).get("name", "tool")) for t in tools or []]
    fixed = [
        "", " ", "\n" * 50, "\x00", "\ud800", "text \udfff text", "\ufeff", "<", ">", "<>", "</>",
        "<<>>", "x" * MAX_TEXT_LENGTH, "\u202e\u0301\U0001f600" * 1000,
    ]  # fmt: skip
    for i, tag in enumerate(tags):
        other = tags[(i + 1) % len(tags)]
        fixed += [
            f"<{tag}>", f"</{tag}>", f"<{tag}></{tag}>", f"<{tag}>   </{tag}>",
            f"<{tag}>\ud800</{tag}>", f"<{tag}><{tag}>x</{tag}>", f"<{tag}>x</{other}>",
            f"<{tag}>" + "y" * 100_000 + f"</{tag}>",
            f"<{tag}>" + "9" * 5000 + f"</{tag}>", f"<{tag}>" * 1000, f"<{tag}", f"{tag}>",
        ]  # fmt: skip
    for name in tool_names:
        fixed += [
            f'{{"name": "{name}", "arguments": {{"\ud800": [}}}}',
            f'<tool_call>{{"name": "{name}", "arguments": "not an object"}}</tool_call>',
            "<tool_call>{not json</tool_call>",
        ]
    makers = (_binary_junk, _unicode_junk, _tag_around_junk, _unclosed_tag, _tag_soup)
    fixed = fixed[:count]
    randoms = [makers[int(rng.integers(len(makers)))](rng, tags) for _ in range(count - len(fixed))]
    return fixed + randoms


def _binary_junk(rng: np.random.Generator, tags: list[str]) -> str:
    return rng.bytes(int(rng.integers(1, 400))).decode("latin-1")


def _unicode_junk(rng: np.random.Generator, tags: list[str]) -> str:
    # Any code point, surrogates included: an LLM's detokenizer can produce all of them.
    return "".join(map(chr, rng.integers(1, 0x110000, size=int(rng.integers(1, 200)))))


def _tag_around_junk(rng: np.random.Generator, tags: list[str]) -> str:
    tag = tags[int(rng.integers(len(tags)))]
    inner = _unicode_junk(rng, tags) if rng.random() < 0.5 else _binary_junk(rng, tags)
    return f"<{tag}>{inner}</{tag}>"


def _unclosed_tag(rng: np.random.Generator, tags: list[str]) -> str:
    tag = tags[int(rng.integers(len(tags)))]
    return f"<{tag}>{_unicode_junk(rng, tags)}"


def _tag_soup(rng: np.random.Generator, tags: list[str]) -> str:
    pieces = [f"<{t}>" for t in tags] + [f"</{t}>" for t in tags] + ["<", ">", "/", " ", "x"]
    return "".join(pieces[int(i)] for i in rng.integers(len(pieces), size=int(rng.integers(1, 60))))


def check_bad_actions(subject: _Subject) -> str:
    """Malformed actions never raise and always get a text observation."""
    env = subject.env
    _, info = env.reset(seed=subject.seed)
    actions = bad_actions(
        str(info.get(SYSTEM_PROMPT, "")),
        env.tools,
        subject.bad_actions,
        subject.rng(_BAD_ACTIONS_STREAM),
    )
    raised: list[str] = []
    not_text: list[str] = []
    invalid = ended = 0
    for i, action in enumerate(actions):
        try:
            observation, _, terminated, truncated, info = env.step(action)
        except Exception as exc:  # the rule under check: a bad action never raises
            raised.append(
                f"step({_short(action)}) raised {type(exc).__name__}: {_one_line(str(exc))}"
            )
            env.reset(seed=subject.seed + i + 1)
            continue
        if not isinstance(observation, str):
            not_text.append(f"step({_short(action)}) observed a {type(observation).__name__}")
        invalid += not info.get(ACTION_VALID, True)
        if terminated or truncated:
            ended += 1
            env.reset(seed=subject.seed + i + 1)
    counts = [f"{len(raised)} of {len(actions)} actions raised"] if raised else []
    counts += [f"{len(not_text)} got no str observation"] if not_text else []
    if counts:
        raise CheckFailed(f"{', '.join(counts)}: {_listing(raised + not_text)}")
    return (
        f"{len(actions)} actions, none raised; {invalid} marked invalid, {ended} ended the episode"
    )


def check_random_episode(subject: _Subject) -> str:
    """A random-policy episode ends within ``max_steps``."""
    episode = _ended_episode(subject)
    *_, terminated, _, info = episode.steps[-1]
    total = sum(step[1] for step in episode.steps)
    how = "terminated" if terminated else "truncated"
    return f"{how} after {len(episode.steps)} steps, return {total:g}, success {info.get(SUCCESS)}"


def check_episode_end(subject: _Subject) -> str:
    """Stepping a finished episode raises :class:`EpisodeOverError`."""
    _ended_episode(subject)
    try:
        result = subject.env.step("one step too many")
    except EpisodeOverError:
        return "a step after the end raised EpisodeOverError"
    raise CheckFailed(
        f"a step after the end returned {_short(result)} instead of raising EpisodeOverError"
    )


def check_copies(subject: _Subject) -> str:
    """An env pickled or deep-copied after reset steps on, on the same task."""
    env = subject.env
    observation, info = env.reset(seed=subject.seed)
    messages = [
        {"role": "system", "content": str(info.get(SYSTEM_PROMPT, ""))},
        {"role": env.observation_role, "content": observation},
    ]
    action = str(subject.actor(env.task, messages, subject.rng(_COPY_STREAM)))
    copies: dict[str, Callable[[TextEnv], TextEnv]] = {
        "pickle": lambda e: pickle.loads(pickle.dumps(e)),
        "deepcopy": copy.deepcopy,
    }
    for how, clone in copies.items():
        try:
            twin = clone(env)
        except Exception as exc:
            raise CheckFailed(
                f"{how} after reset failed: {type(exc).__name__}: {_one_line(str(exc))}"
            ) from exc
        try:
            step = twin.step(action)
        finally:
            twin.close()
        if step[-1].get(TASK_ID) != info[TASK_ID]:
            raise CheckFailed(
                f"the {how} copy stepped task {step[-1].get(TASK_ID)!r}, not {info[TASK_ID]!r}"
            )
    return "pickled and deep-copied after reset; both copies step on the same task"


CHECKS: tuple[tuple[str, Callable[[_Subject], str]], ...] = (
    ("gymnasium", check_gymnasium),
    ("info keys", check_info_keys),
    ("splits", check_splits),
    ("bad actions", check_bad_actions),
    ("random episode", check_random_episode),
    ("episode end", check_episode_end),
    ("pickle/deepcopy", check_copies),
)
"""The checks, in the order they run and are reported."""


# ---------------------------------------------------------------------------------------------
# Formatting
# ---------------------------------------------------------------------------------------------
def _one_line(text: str, limit: int = 300) -> str:
    line = " ".join(text.split())
    return line if len(line) <= limit else f"{line[: limit - 1]}…"


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else f"{text[: limit - 1]}…"


def _listing(problems: list[str], shown: int = 3) -> str:
    more = f" (+{len(problems) - shown} more)" if len(problems) > shown else ""
    return "; ".join(problems[:shown]) + more
