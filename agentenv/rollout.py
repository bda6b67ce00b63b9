"""RolloutEngine: async, per-episode multi-turn collection of token-faithful trajectories.

Each episode is its own coroutine: reset → (generate → step)* → done. There is no lock-step
barrier, so an episode that finishes never generates again and one episode's env step overlaps
other episodes' generation; concurrent ``generate`` calls are coalesced into batches by the
policy backend. Per-env concurrency caps bound the load on each tool service.

The context is kept as token ids. Generated ids are appended exactly as produced; the text
between two assistant turns (the end of the assistant message, the observation message, the next
generation prompt) is rendered through the tokenizer's chat template by difference against a
fixed probe conversation and tokenized on its own. What is recorded is exactly what the policy is
fed at the next turn — never a re-tokenization of generated text.
"""

from __future__ import annotations

import asyncio
import time
import weakref
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from agentenv import env as env_keys
from agentenv.policies.base import Completion, EpisodeContext, Policy, SamplingParams
from agentenv.registry import make
from agentenv.toolcalls import AssistantMessage, ToolCall, parser_for, template_messages
from agentenv.trajectory import Trajectory, Turn


@dataclass
class RolloutConfig:
    """Budgets and sampling for rollouts.

    - ``max_turns``: agent turns per episode (``None``: the env's own limit). Reaching it marks the
      episode ``truncated`` with reason ``max_turns``.
    - ``max_tokens_per_turn``: generation budget of one action (``None``: the env's
      :attr:`~agentenv.env.TextEnv.turn_tokens`, 256 unless the env needs long actions).
    - ``max_context_tokens``: prompt + all turns (``None``: the env's
      :attr:`~agentenv.env.TextEnv.context_tokens`, 4096 by default). An action is generated
      with at most the room left; when no room is left, or an observation would overflow it, the
      episode stops as ``truncated`` with reason ``max_context_tokens`` (the overflowing
      observation is not added).
    - ``max_concurrent_episodes``: episodes in flight at once.
    - ``env_concurrency``: concurrent ``reset``/``step`` calls per env id (default for unlisted
      ids: ``default_env_concurrency``).
    - ``tool_parser``: how tool calls are read out of generated text in envs with native tools
      (``hermes``, ``llama3_json``, ``pythonic``; ``None``: detected from the chat template).
    """

    max_turns: int | None = None
    max_tokens_per_turn: int | None = None
    max_context_tokens: int | None = None
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    max_concurrent_episodes: int = 256
    default_env_concurrency: int = 64
    env_concurrency: dict[str, int] = field(default_factory=dict)
    tool_parser: str | None = None


@dataclass
class EpisodeRequest:
    """One episode to play: ``env_id`` reset with ``seed`` on ``task`` (an id or task object) or,
    without one, on a task the seed draws from ``split`` (``None``: the env's only source).

    ``group_id`` defaults to ``"{env_id}:{task_id}"``; ``sample_seed`` seeds generation.
    """

    env_id: str
    seed: int
    group_id: str | None = None
    task: Any = None
    split: str | None = None
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    sample_seed: int | None = None
    traj_id: str | None = None


def group_requests(
    env_id: str,
    seeds: Sequence[int],
    group_size: int,
    env_kwargs: dict[str, Any] | None = None,
    *,
    split: str | None = None,
    sample_seed: int = 0,
) -> list[EpisodeRequest]:
    """``group_size`` episodes per reset seed (a group plays one task drawn from ``split``),
    seeds in order."""
    return [
        EpisodeRequest(
            env_id,
            seed,
            split=split,
            env_kwargs=dict(env_kwargs or {}),
            sample_seed=sample_seed + i * group_size + j,
            traj_id=f"{env_id}/{seed}/{j}",
        )
        for i, seed in enumerate(seeds)
        for j in range(group_size)
    ]


class EpisodesFailedError(RuntimeError):
    """Every episode of a batch (a training step, an evaluation) errored: nothing to learn from or
    measure. The message gives each distinct reason with its count."""


def check_not_all_failed(trajectories: list[Trajectory], what: str) -> None:
    """Raise :class:`EpisodesFailedError`, with the distinct reasons, when all episodes errored."""
    if not trajectories or any(t.status != "error" for t in trajectories):
        return
    reasons = Counter(t.reason for t in trajectories).most_common()
    lines = "\n".join(f"  {n} × {reason}" for reason, n in reasons)
    raise EpisodesFailedError(f"all {len(trajectories)} episodes of {what} errored:\n{lines}")


def reset_options(request: EpisodeRequest) -> dict[str, Any]:
    """The reset options of ``request``: its task, else the split its seed draws from."""
    if request.task is not None:
        return {env_keys.TASK_OPTION: request.task}
    if request.split is not None:
        return {env_keys.SPLIT_OPTION: request.split}
    return {}


# ---------------------------------------------------------------------------------------------
# Chat-template arithmetic
# ---------------------------------------------------------------------------------------------
_PROBE_ACTION = "\x00AGENTENV-ACTION\x00"


@dataclass(frozen=True)
class TurnTemplate:
    """The template text around an assistant action and an observation, for one tokenizer.

    ``assistant_suffix``: what closes an assistant message (``"<|im_end|>\\n"`` for ChatML).
    ``observation_prefix``/``observation_suffix``: what surrounds an observation message's
    content, the suffix including the next generation prompt.
    """

    assistant_suffix: str
    observation_prefix: str
    observation_suffix: str


def _render(
    tokenizer: Any,
    messages: list[dict[str, Any]],
    generation_prompt: bool,
    tools: list[dict[str, Any]] | None = None,
) -> str:
    return tokenizer.apply_chat_template(
        template_messages(messages),
        tools=tools or None,
        tokenize=False,
        add_generation_prompt=generation_prompt,
    )


@cache
def _turn_template_cached(tokenizer: Any, role: str) -> TurnTemplate:
    probe_obs = "\x00AGENTENV-OBSERVATION\x00"
    head = [{"role": "system", "content": "s"}, {"role": "user", "content": "u"}]
    with_action = [*head, {"role": "assistant", "content": _PROBE_ACTION}]
    closed = _render(tokenizer, with_action, False)
    full = _render(tokenizer, [*with_action, {"role": role, "content": probe_obs}], True)
    if not full.startswith(closed):
        raise ValueError(
            "the chat template renders earlier turns differently once a message is added; "
            "token-faithful multi-turn rollouts need an append-only template"
        )
    assistant_suffix = closed[closed.rindex(_PROBE_ACTION) + len(_PROBE_ACTION) :]
    tail = full[len(closed) :]
    cut = tail.index(probe_obs)
    return TurnTemplate(assistant_suffix, tail[:cut], tail[cut + len(probe_obs) :])


def turn_template(tokenizer: Any, role: str = "user") -> TurnTemplate:
    """The :class:`TurnTemplate` of ``tokenizer`` for observations sent with chat ``role``."""
    return _turn_template_cached(tokenizer, role)


def prompt_ids(
    tokenizer: Any,
    system: str,
    first_observation: str,
    role: str = "user",
    tools: list[dict[str, Any]] | None = None,
) -> list[int]:
    """Token ids of the opening prompt: system message, first observation, generation prompt
    (with ``tools`` rendered the template's way)."""
    messages = [{"role": "system", "content": system}, {"role": role, "content": first_observation}]
    text = _render(tokenizer, messages, True, tools)
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def _probe_assistant(assistant: AssistantMessage | None) -> dict[str, Any]:
    """The assistant message of a probe conversation: the probe text, and calls of the same ids
    (templates that pair tool messages with calls see a consistent history)."""
    message: dict[str, Any] = {"role": "assistant", "content": _PROBE_ACTION}
    if assistant is not None and assistant.tool_calls:
        message["tool_calls"] = [
            ToolCall("probe", {}, c.id).to_template() for c in assistant.tool_calls
        ]
    return message


def messages_text(
    tokenizer: Any,
    messages: Sequence[dict[str, Any]],
    assistant: AssistantMessage | None = None,
    tools: list[dict[str, Any]] | None = None,
) -> str:
    """The template's text for ``messages`` following an assistant turn, up to the next
    generation prompt — by difference: the messages are rendered after a probe assistant turn,
    and what follows that turn's close is theirs.

    The close is found after the probe's text, or, for templates that drop the content of a
    message with tool calls (Llama-3.1's), after the rendering of the conversation that ends
    with the probe turn.
    """
    close = turn_template(tokenizer).assistant_suffix
    head = [
        {"role": "system", "content": "s"},
        {"role": "user", "content": "u"},
        _probe_assistant(assistant),
    ]
    text = _render(tokenizer, [*head, *messages], True, tools)
    if _PROBE_ACTION in text:
        start = text.index(_PROBE_ACTION) + len(_PROBE_ACTION)
        end = text.find(close, start)
        if end >= 0:
            return text[end + len(close) :]
    else:
        closed = _render(tokenizer, head, False, tools)
        if text.startswith(closed):
            return text[len(closed) :]
    raise ValueError(
        "the chat template does not close an assistant turn the same way when more messages "
        f"follow it (expected {close!r}); token-faithful multi-turn rollouts need it to"
    )


def between_turns_ids(
    tokenizer: Any,
    observation: str | Sequence[dict[str, Any]],
    completion: Completion,
    role: str = "user",
    *,
    assistant: AssistantMessage | None = None,
    tools: list[dict[str, Any]] | None = None,
) -> list[int]:
    """Ids fed after a generated action: the assistant close, the observation (one text sent
    as ``role``, or the env's messages — e.g. one ``tool`` message per call of ``assistant``),
    and the next generation prompt.

    If generation already ended on the end-of-sequence token that closes an assistant message,
    that token is not repeated.
    """
    if isinstance(observation, str):
        observation = [{"role": role, "content": observation}]
    close = turn_template(tokenizer).assistant_suffix
    eos = tokenizer.eos_token
    if completion.finish_reason == "eos" and eos and close.startswith(eos):
        close = close[len(eos) :]
    text = close + messages_text(tokenizer, observation, assistant, tools)
    return tokenizer(text, add_special_tokens=False)["input_ids"]


# ---------------------------------------------------------------------------------------------
# Engine
# ---------------------------------------------------------------------------------------------
async def play_all(
    requests: Sequence[EpisodeRequest],
    play: Callable[[EpisodeRequest], Awaitable[Trajectory]],
    on_episode: Callable[[Trajectory], None] | None = None,
) -> list[Trajectory]:
    """``play`` every request concurrently; ``on_episode`` hears each trajectory as it ends; the
    trajectories come back in request order."""

    async def one(request: EpisodeRequest) -> Trajectory:
        trajectory = await play(request)
        if on_episode is not None:
            on_episode(trajectory)
        return trajectory

    return list(await asyncio.gather(*(one(r) for r in requests)))


class _Slots:
    """The concurrency caps of one event loop: episodes in flight, env calls per env id."""

    def __init__(self, config: RolloutConfig) -> None:
        self.config = config
        self.episodes = asyncio.Semaphore(config.max_concurrent_episodes)
        self.envs: dict[str, asyncio.Semaphore] = {}

    def env(self, env_id: str) -> asyncio.Semaphore:
        if env_id not in self.envs:
            cap = self.config.env_concurrency.get(env_id, self.config.default_env_concurrency)
            self.envs[env_id] = asyncio.Semaphore(cap)
        return self.envs[env_id]


class RolloutEngine:
    """Plays episodes of any registered envs with one policy, concurrently and token-faithfully.

    The concurrency caps hold per event loop, so one engine serves successive ``asyncio.run``
    calls (an asyncio semaphore belongs to the loop it was first contended on)."""

    def __init__(self, policy: Policy, config: RolloutConfig | None = None) -> None:
        self.policy = policy
        self.config = config or RolloutConfig()
        self._slots: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Slots] = (
            weakref.WeakKeyDictionary()
        )
        self.generated_tokens = 0
        self.generate_calls = 0

    def _loop_slots(self) -> _Slots:
        loop = asyncio.get_running_loop()
        if loop not in self._slots:
            self._slots[loop] = _Slots(self.config)
        return self._slots[loop]

    def _env_slot(self, env_id: str) -> asyncio.Semaphore:
        return self._loop_slots().env(env_id)

    async def run(
        self,
        requests: Sequence[EpisodeRequest],
        *,
        on_episode: Callable[[Trajectory], None] | None = None,
    ) -> list[Trajectory]:
        """Play every request; trajectories come back in request order."""
        if not hasattr(getattr(self.policy, "tokenizer", None), "apply_chat_template"):
            raise ValueError(
                f"policy {getattr(self.policy, 'name', self.policy)!r} has no chat tokenizer; "
                "token-faithful rollouts need one (e.g. OpenAIPolicy(..., tokenizer=PATH))"
            )

        async def play(request: EpisodeRequest) -> Trajectory:
            async with self._loop_slots().episodes:
                return await self.run_episode(request)

        return await play_all(requests, play, on_episode)

    async def run_episode(self, request: EpisodeRequest) -> Trajectory:
        """Play one episode. Env or service failures end it as ``error``, never raise."""
        traj = Trajectory(
            traj_id=request.traj_id or f"{request.env_id}/{request.seed}/{request.sample_seed}",
            group_id=request.group_id or "",
            env_id=request.env_id,
            task_id="",
            seed=request.seed,
        )
        env = None
        try:
            env = make(request.env_id, **request.env_kwargs)
            await self._play(env, request, traj)
        except Exception as exc:  # isolate the episode: record, count, never drop
            traj.status = "error"
            traj.reason = f"{type(exc).__name__}: {exc}"
        finally:
            if env is not None:
                try:
                    await env.aclose()
                except Exception as exc:
                    if traj.status != "error":
                        traj.metadata["close_error"] = f"{type(exc).__name__}: {exc}"
        return traj

    async def _play(self, env: Any, request: EpisodeRequest, traj: Trajectory) -> None:
        cfg = self.config
        tokenizer = self.policy.tokenizer
        role = env.observation_role
        options = reset_options(request)
        async with self._env_slot(request.env_id):
            observation, info = await env.areset(seed=request.seed, options=options)
        traj.task_id = str(info.get(env_keys.TASK_ID, ""))
        traj.group_id = traj.group_id or f"{request.env_id}:{traj.task_id}"
        traj.metadata[env_keys.GROUND_TRUTH] = info.get(env_keys.GROUND_TRUTH)
        system = info.get(env_keys.SYSTEM_PROMPT, "")
        tools = env.tools or None
        parse = parser_for(tokenizer, cfg.tool_parser) if tools else None
        messages = [{"role": "system", "content": system}, {"role": role, "content": observation}]
        traj.messages = messages  # the record grows with the chat, up to an error if one comes
        prompt = prompt_ids(tokenizer, system, observation, role, tools)
        traj.append_tokens(prompt, trainable=False, turn=-1)
        traj.prompt_length = len(prompt)
        context = traj.token_ids  # what the policy is fed is the record itself

        turn_tokens = cfg.max_tokens_per_turn or env.turn_tokens
        context_tokens = cfg.max_context_tokens or env.context_tokens
        turn = 0
        while True:
            if cfg.max_turns is not None and turn >= cfg.max_turns:
                traj.status, traj.reason = "truncated", "max_turns"
                return
            room = context_tokens - len(context)
            if room <= 0:
                traj.status, traj.reason = "truncated", "max_context_tokens"
                return
            sampling = SamplingParams(
                max_tokens=min(turn_tokens, room),
                temperature=cfg.temperature,
                top_p=cfg.top_p,
                top_k=cfg.top_k,
                stop=tuple(env.stop_strings),
                seed=None if request.sample_seed is None else request.sample_seed * 1009 + turn,
            )
            ctx = EpisodeContext(request.env_id, env.task, list(messages), dict(info))
            t0 = time.perf_counter()
            (completion,) = await self.policy.generate([list(context)], sampling, contexts=[ctx])
            gen_seconds = time.perf_counter() - t0
            self.generate_calls += 1
            self.generated_tokens += len(completion.token_ids)
            traj.append_tokens(
                completion.token_ids, trainable=True, turn=turn, logprobs=completion.logprobs
            )

            assistant = None if parse is None else parse(completion.text).with_ids(f"call_{turn}_")
            action = completion.text if assistant is None else assistant.to_action()
            t0 = time.perf_counter()
            async with self._env_slot(request.env_id):
                observation, reward, terminated, truncated, info = await env.astep(action)
            env_seconds = time.perf_counter() - t0
            replies = info.get(env_keys.MESSAGES) or [{"role": role, "content": observation}]
            said = {"role": "assistant", "content": completion.text}
            messages += [said if assistant is None else assistant.to_openai(), *replies]
            record = Turn(
                index=turn,
                action=completion.text,
                observation=observation,
                reward=reward,
                reward_components=dict(info.get(env_keys.REWARD_COMPONENTS, {})),
                action_valid=bool(info.get(env_keys.ACTION_VALID, True)),
                anchor=info.get(env_keys.ANCHOR),
                finish_reason=completion.finish_reason,
                tool_calls=list(info.get(env_keys.TOOL_CALLS, [])),
                action_tokens=len(completion.token_ids),
                gen_seconds=gen_seconds,
                env_seconds=env_seconds,
                entropy=completion.mean_entropy,
            )
            traj.turns.append(record)
            if terminated or truncated:
                traj.success = bool(info.get(env_keys.SUCCESS, False))
                traj.status = "done" if terminated else "truncated"
                traj.reason = "" if terminated else "env"
                return
            between = between_turns_ids(
                tokenizer, replies, completion, assistant=assistant, tools=tools
            )
            if len(context) + len(between) >= context_tokens:
                traj.status, traj.reason = "truncated", "max_context_tokens"
                return
            record.observation_tokens = len(between)
            traj.append_tokens(between, trainable=False, turn=turn)
            turn += 1
