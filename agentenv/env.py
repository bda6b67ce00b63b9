"""The environment contract: :class:`TextEnv`, a Gymnasium env whose observations and actions are text.

Every agentenv environment is async-first. ``await env.areset(seed=, options=)`` returns
``(observation, info)`` and ``await env.astep(action)`` returns
``(observation, reward, terminated, truncated, info)``. The sync :meth:`TextEnv.reset` and
:meth:`TextEnv.step` run those coroutines on the env's own event loop, so ``gymnasium.make`` and
``gymnasium.utils.env_checker.check_env`` work unchanged.

Subclasses implement :meth:`TextEnv._areset` and :meth:`TextEnv._astep`; the public methods add
the bookkeeping every env shares (the info keys below, the turn counter, the rule that a bad
action never raises, the rule that a finished episode is not stepped again).

**Task sources.** An env declares where its tasks come from with :meth:`TextEnv.splits`: split
name → number of tasks (``None`` for an unlimited, procedural source). ``options={"split": s}``
on reset draws a task of split ``s`` with the seed; a finite split also lists its tasks in a fixed
order with :meth:`TextEnv.task_ids`, so an evaluation can play each of them exactly once through
``options={"task": id}``. An env that declares no splits has one unnamed source the seed draws
from.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine, Sequence
from collections.abc import Sequence as SequenceABC
from typing import Any, ClassVar, TypeVar

import gymnasium
import numpy as np
from gymnasium.error import ResetNeeded
from gymnasium.spaces import Text
from gymnasium.spaces.utils import flatten, unflatten
from gymnasium.vector.utils.shared_memory import read_from_shared_memory

T = TypeVar("T")

# ---------------------------------------------------------------------------------------------
# Info keys: one meaning in every env.
# ---------------------------------------------------------------------------------------------
TASK_ID = "task_id"
"""(reset, step) Identifier of the task being played; groups of rollouts share it."""
GROUND_TRUTH = "ground_truth"
"""(reset) The task's reference answer(s): what a reward function or judge compares against."""
SYSTEM_PROMPT = "system_prompt"
"""(reset) The protocol the agent must follow, as a system message."""
REWARD_COMPONENTS = "reward_components"
"""(step) ``dict[str, float]`` of this turn's named reward parts; ``reward`` is their weighted sum."""
ACTION_VALID = "action_valid"
"""(step) ``bool``: the action parsed under the env's protocol."""
ANCHOR = "anchor"
"""(reset, step) A hashable, history-free canonical state; GiGPO groups turns on it."""
SUCCESS = "success"
"""(step, terminal) ``bool``: the episode solved its task."""
MESSAGES = "messages"
"""(step) The chat messages this step answers with, when not one message of
``observation_role``: one ``{"role": "tool", "tool_call_id", "name", "content"}`` per native tool
call, or a ``user`` message explaining a call that could not be read. ``observation`` is their
text, for display."""
TOOL_CALLS = "tool_calls"
"""(step) One ``{"name", "ok", "error"}`` per tool call this step made, in order."""

INFO_KEYS: dict[str, str] = {
    TASK_ID: "identifier of the task being played (reset and every step)",
    GROUND_TRUTH: "reference answer(s) of the task (reset)",
    SYSTEM_PROMPT: "the protocol the agent must follow, as a system message (reset)",
    REWARD_COMPONENTS: "dict of this turn's named reward parts (every step)",
    ACTION_VALID: "whether the action parsed under the env's protocol (every step)",
    ANCHOR: "hashable, history-free canonical state for anchor-state grouping (reset, every step)",
    SUCCESS: "whether the episode solved its task (terminal step; False before)",
    MESSAGES: "chat messages the step answers with, when not one observation message (tool envs)",
    TOOL_CALLS: "one {name, ok, error} per tool call the step made (tool envs)",
}

REQUIRED_RESET_KEYS: tuple[str, ...] = (TASK_ID,)
"""Info keys :meth:`TextEnv.areset` refuses to go without: groups and results are keyed on them."""

SPLIT_OPTION = "split"
"""Reset option: the split the seed draws a task from (one of :meth:`TextEnv.splits`)."""
TASK_OPTION = "task"
"""Reset option: the task to play (an id of :meth:`TextEnv.task_ids`, or the env's task object)."""

MAX_TEXT_LENGTH = 1 << 20


class EnvContractError(TypeError):
    """An env broke the :class:`TextEnv` contract (e.g. a reset without ``info["task_id"]``)."""


class EpisodeOverError(ResetNeeded):
    """``step`` was called on an episode that has ended (or never started): reset first.

    Gymnasium's convention: stepping a finished episode is an error, never a silent extra reward.
    """


class UnicodeText(Text):
    """A :class:`gymnasium.spaces.Text` that contains any Python string up to ``max_length``.

    Gymnasium's ``Text`` only admits characters from a fixed charset; an LLM emits and reads any
    Unicode. Sampling still draws from the (alphanumeric) charset, which is what ``check_env``
    and random baselines need.
    """

    def contains(self, x: Any) -> bool:
        return isinstance(x, str) and self.min_length <= len(x) <= self.max_length

    def __repr__(self) -> str:
        return f"UnicodeText({self.min_length}, {self.max_length})"


# Gymnasium flattens a Text into indices of its charset, which fails on any other character, and
# reads a Text's shared memory once into a tuple of strings that later steps never update. A
# UnicodeText flattens into code points + 1 (0 pads), and its shared memory reads as a live view
# (a deep copy of it, which AsyncVectorEnv returns by default, is a plain tuple of strings).
@flatten.register(UnicodeText)
def _flatten_unicode_text(space: UnicodeText, x: str) -> np.ndarray:
    out = np.zeros(space.max_length, dtype=np.int32)
    codes = np.frombuffer(x.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
    out[: len(codes)] = codes.astype(np.int32) + 1
    return out


def _decode_code_points(values: np.ndarray) -> str:
    codes = values[values > 0].astype(np.uint32) - 1
    return codes.tobytes().decode("utf-32-le", "surrogatepass")


@unflatten.register(UnicodeText)
def _unflatten_unicode_text(space: UnicodeText, x: np.ndarray) -> str:
    return _decode_code_points(np.asarray(x))


class SharedTexts(SequenceABC):
    """The strings in a vector env's shared observation buffer, decoded on every access."""

    def __init__(self, rows: np.ndarray) -> None:
        self._rows = rows

    def __len__(self) -> int:
        return len(self._rows)

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, slice):
            return tuple(self)[index]
        return _decode_code_points(self._rows[index])

    def __deepcopy__(self, memo: dict[int, Any]) -> tuple[str, ...]:
        return tuple(self)

    def __repr__(self) -> str:
        return repr(tuple(self))


@read_from_shared_memory.register(UnicodeText)
def _read_unicode_text(space: UnicodeText, shared_memory: Any, n: int = 1) -> SharedTexts:
    data = np.frombuffer(shared_memory.get_obj(), dtype=np.int32)
    return SharedTexts(data.reshape((n, space.max_length)))


async def _cancel_other_tasks() -> None:
    """Cancel every other task of the running loop (background work of clients and in-process
    services, such as a session reaper) and wait for them, so the loop closes clean."""
    others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    for task in others:
        task.cancel()
    await asyncio.gather(*others, return_exceptions=True)


class TextEnv(gymnasium.Env[str, str]):
    """Base class of every agentenv environment.

    Class attributes a subclass may set:

    - ``description``: one line for ``agentenv list``.
    - ``stop_strings``: strings after which generation of an action should stop.
    - ``turn_tokens`` and ``context_tokens``: the generation budget of one action and of a whole
      episode the env needs, used where a rollout's config leaves them unset (256 and 4096; an
      env whose actions are patches or whose observations are command outputs asks for more).
    - ``tools``: OpenAI-style tool schemas, for envs driven by native function calls (read after
      each reset: an episode may have its own tools). Such an env receives each assistant turn
      as an OpenAI assistant message in JSON (:mod:`agentenv.toolcalls`) and answers with
      ``info["messages"]``.
    - ``observation_role``: the chat role observations are sent as (``"user"`` or ``"tool"``).
    - ``reward_components``: the names ``info["reward_components"]`` may hold; declared, they let
      a training config's component names (process rewards, gating) be checked before training.
    - ``transient_attributes``: attributes that hold live resources (clients, sessions); a pickled
      or copied env leaves them out (set to ``None``) and reconnects on first use.

    After :meth:`areset`, ``self.task`` holds the task being played (its ``id`` is
    ``info["task_id"]``).

    Subclasses implement :meth:`_areset` (returning ``(observation, info)``) and :meth:`_astep`
    (returning ``(observation, reward, terminated, truncated, info)``). They must never raise on a
    bad action: they return an explanatory observation with ``info["action_valid"] = False``.
    A dead backing service raises :class:`agentenv.EnvServiceError`. ``_areset`` receives the
    options with ``"split"`` already checked against :meth:`splits`; an env with tasks overrides
    :meth:`splits` (and :meth:`task_ids` for finite splits).

    Once a step returns ``terminated`` or ``truncated``, stepping again raises
    :class:`EpisodeOverError` until the next reset.
    """

    metadata: ClassVar[dict[str, Any]] = {"render_modes": ["ansi"]}
    description: ClassVar[str] = ""
    stop_strings: ClassVar[tuple[str, ...]] = ()
    turn_tokens: ClassVar[int] = 256
    context_tokens: ClassVar[int] = 4096
    observation_role: ClassVar[str] = "user"
    tools: list[dict[str, Any]] | None = None
    reward_components: ClassVar[tuple[str, ...]] = ()
    transient_attributes: ClassVar[tuple[str, ...]] = ()

    observation_space = UnicodeText(min_length=0, max_length=MAX_TEXT_LENGTH)
    action_space = UnicodeText(min_length=0, max_length=MAX_TEXT_LENGTH)

    def __init__(self, render_mode: str | None = None) -> None:
        self.render_mode = render_mode
        self.turn = 0
        self.task: Any = None
        self._last_observation = ""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: threading.Thread | None = None
        self._episode_open = False
        self._task_id: str | None = None

    # -- task sources -----------------------------------------------------------------------
    def splits(self) -> dict[str, int | None]:
        """The task splits this env draws from: name → number of tasks (``None``: unlimited).

        Empty (the default): one unnamed source, the seed alone picks the task.
        """
        return {}

    def task_ids(self, split: str) -> Sequence[str]:
        """Ids of the tasks of finite ``split``, in a fixed order (``options={"task": id}``)."""
        size = self.check_split(split)
        raise ValueError(
            f"{type(self).__name__} cannot list the tasks of split {split!r}"
            + (" (it is unlimited: draw tasks with seeds)" if size is None else "")
        )

    def check_split(self, split: str) -> int | None:
        """The size of ``split``; a :class:`ValueError` naming the declared splits if unknown."""
        splits = self.splits()
        if split not in splits:
            declared = ", ".join(map(repr, splits)) or "none (the seed alone picks the task)"
            raise ValueError(
                f"{type(self).__name__} has no split {split!r}; its splits: {declared}"
            )
        return splits[split]

    def draw_index(self, split: str) -> int:
        """The seed's pick of a task of ``split``: an index into a finite split's tasks, or a
        draw in [0, 2^31) naming a task of an unlimited one (drawn from ``np_random``)."""
        size = self.check_split(split)
        return int(self.np_random.integers(size if size is not None else 2**31))

    # -- to implement -----------------------------------------------------------------------
    async def _areset(self, *, seed: int | None, options: dict[str, Any]) -> tuple[str, dict]:
        raise NotImplementedError

    async def _astep(self, action: str) -> tuple[str, float, bool, bool, dict]:
        raise NotImplementedError

    async def aclose(self) -> None:
        """Release the env's resources (service sessions, clients). Idempotent."""

    # -- async API --------------------------------------------------------------------------
    async def areset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[str, dict[str, Any]]:
        """Start an episode. ``options={"task": id_or_Task}`` picks a task; else ``seed`` draws
        one (from ``options={"split": name}`` when given)."""
        super().reset(seed=seed)
        self.turn = 0
        self._episode_open = False
        options = dict(options or {})
        if options.get(SPLIT_OPTION) is not None:
            self.check_split(options[SPLIT_OPTION])
        observation, info = await self._areset(seed=seed, options=options)
        missing = [key for key in REQUIRED_RESET_KEYS if info.get(key) in (None, "")]
        if missing:
            raise EnvContractError(
                f"{type(self).__name__}.reset returned no {', '.join(missing)} in info: "
                "rollout groups, results and resume are keyed on it"
            )
        self._task_id = str(info[TASK_ID])
        self._episode_open = True
        self._last_observation = observation
        return observation, info

    async def astep(self, action: str) -> tuple[str, float, bool, bool, dict[str, Any]]:
        """Apply one action (the agent's whole message for this turn).

        Raises :class:`EpisodeOverError` when no episode is running (before the first reset, or
        after a step returned ``terminated`` or ``truncated``).
        """
        if not self._episode_open:
            raise EpisodeOverError(
                f"{type(self).__name__}: the episode is over (or never started); "
                "call reset() before step()"
            )
        if not isinstance(action, str):
            action = "" if action is None else str(action)
        observation, reward, terminated, truncated, info = await self._astep(action)
        self.turn += 1
        info.setdefault(TASK_ID, self._task_id)
        info.setdefault(ACTION_VALID, True)
        info.setdefault(REWARD_COMPONENTS, {})
        info.setdefault(SUCCESS, False)
        self._episode_open = not (terminated or truncated)
        self._last_observation = observation
        return observation, float(reward), bool(terminated), bool(truncated), info

    # -- sync wrappers ----------------------------------------------------------------------
    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[str, dict[str, Any]]:
        return self.run_sync(self.areset(seed=seed, options=options))

    def step(self, action: str) -> tuple[str, float, bool, bool, dict[str, Any]]:
        return self.run_sync(self.astep(action))

    def close(self) -> None:
        if self._loop is not None:
            self.run_sync(self.aclose())
            self.run_sync(_cancel_other_tasks())
            self._loop.call_soon_threadsafe(self._loop.stop)
            if self._loop_thread is not None:
                self._loop_thread.join(timeout=5)
            self._loop.close()
            self._loop = None
            self._loop_thread = None

    def __getstate__(self) -> dict[str, Any]:
        """Picklable and deep-copyable state: the private loop and transient resources are left
        out (a copy starts its own loop and reconnects on first use)."""
        state = dict(self.__dict__)
        for name in ("_loop", "_loop_thread", *self.transient_attributes):
            if name in state:
                state[name] = None
        return state

    def render(self) -> str | None:
        if self.render_mode == "ansi":
            return self._last_observation
        return None

    def run_sync(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """Run ``coroutine`` on this env's private event loop (a daemon thread).

        One loop per env keeps its async clients bound to a single loop, and works whether or not
        the caller already runs an event loop (notebooks, async frameworks).
        """
        if self._loop is None:
            self._loop = asyncio.new_event_loop()
            self._loop_thread = threading.Thread(
                target=self._loop.run_forever, name=f"{type(self).__name__}-loop", daemon=True
            )
            self._loop_thread.start()
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result()
