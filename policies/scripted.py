"""Scripted policies: an env family's expert solver, its random baseline and its closed-book
demonstrator, as Policies.

Each env family may register an expert module (``EnvInfo.expert``) with
``solve(task, messages) -> str`` and ``random_action(task, messages, rng) -> str``. These
policies call it with the :class:`EpisodeContext` of each prompt (so a batch may mix env
families) and return the action tokenized as a model would emit it: the action's ids followed by
the tokenizer's eos token, or cut right after the first stop string of the sampling params, or
cut at ``max_tokens``. Their ids are what SFT learns from; logprobs are 0 (the action is
certain).

The random baseline needs no expert: for an env without ``random_action``,
:func:`generic_random_action` mixes words of the chat so far, the tags the system prompt shows
(``<answer> … </answer>``) and junk.
"""

from __future__ import annotations

import importlib
import inspect
import re
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import Any

import numpy as np

from agentenv.models import load_tokenizer
from agentenv.policies.base import Completion, EpisodeContext, FinishReason, SamplingParams
from agentenv.registry import UnknownEnvError, env_info

RandomAction = Callable[[Any, list[dict[str, str]], np.random.Generator], Any]
"""``random_action(task, messages, rng) -> str`` (or an awaitable of it)."""

_TAG = re.compile(r"<([A-Za-z][\w-]*)>")


def find_expert(source: str | ModuleType) -> ModuleType | None:
    """The expert module of a registered env id (None when it registers none), or a module given
    directly or by import path."""
    if isinstance(source, ModuleType):
        return source
    try:
        module_path = env_info(source).expert
    except UnknownEnvError:
        if ":" in source:  # a module:Class env id that does not resolve: say why
            raise
        try:
            return importlib.import_module(source)
        except ImportError as exc:
            raise ValueError(
                f"{source!r} is neither a registered env id nor an importable expert module"
            ) from exc
    return None if module_path is None else importlib.import_module(module_path)


def expert_module(source: str | ModuleType) -> ModuleType:
    """Like :func:`find_expert`, but an env without an expert module is a :class:`ValueError`."""
    module = find_expert(source)
    if module is None:
        raise ValueError(f"env {source!r} registers no expert module (EnvInfo.expert)")
    return module


def protocol_tags(text: str) -> list[str]:
    """Names of the tags ``text`` shows both opened and closed (``<answer>`` … ``</answer>``),
    in order of first appearance."""
    return [name for name in dict.fromkeys(_TAG.findall(text)) if f"</{name}>" in text]


def generic_random_action(messages: Sequence[dict[str, str]], rng: np.random.Generator) -> str:
    """A random action for any env: 1 to 5 random words of the chat so far (system prompt and
    observations), wrapped in one of the system prompt's tags (60% when it shows any), bare
    (30%), or junk characters (10%)."""
    system = " ".join(m["content"] for m in messages if m.get("role") == "system")
    seen = " ".join(m["content"] for m in messages if m.get("role") != "assistant")
    words = re.findall(r"\w+", seen) or ["nothing"]
    text = " ".join(rng.choice(words, size=int(rng.integers(1, 6))))
    tags = protocol_tags(system)
    roll = rng.random()
    if tags and roll < 0.6:
        tag = tags[int(rng.integers(len(tags)))]
        return f"<{tag}> {text} </{tag}>"
    if roll < 0.9:
        return text
    return "".join(map(chr, rng.integers(0x21, 0x2FF, size=int(rng.integers(1, 40)))))


def random_actor(source: str | ModuleType | None) -> RandomAction:
    """The ``random_action`` of ``source``'s expert (an env id or a module), or the generic one
    when there is no expert or it has no ``random_action``."""
    expert = None if source is None else find_expert(source)
    if expert is not None and hasattr(expert, "random_action"):
        return expert.random_action
    return lambda task, messages, rng: generic_random_action(messages, rng)


def default_tokenizer() -> Any:
    """The tiny model's tokenizer (built offline on first use)."""
    return load_tokenizer("tiny")


class _ExpertPolicy:
    """Shared machinery: resolve the expert per context (:meth:`_resolve`), tokenize its
    actions."""

    name = "expert"

    def __init__(self, source: str | ModuleType | None = None, tokenizer: Any = None) -> None:
        self._fixed = self._resolve(source) if source is not None else None
        self._resolved: dict[str, Any] = {}
        self.tokenizer = tokenizer if tokenizer is not None else default_tokenizer()

    @staticmethod
    def _resolve(source: str | ModuleType) -> Any:
        return expert_module(source)

    def _expert(self, context: EpisodeContext) -> Any:
        if self._fixed is not None:
            return self._fixed
        if context.env_id not in self._resolved:
            self._resolved[context.env_id] = self._resolve(context.env_id)
        return self._resolved[context.env_id]

    def _contexts(
        self, prompts: Sequence[Sequence[int]], contexts: Sequence[EpisodeContext] | None
    ) -> Sequence[EpisodeContext]:
        if contexts is None or len(contexts) != len(prompts):
            got = "none" if contexts is None else str(len(contexts))
            raise ValueError(
                f"{type(self).__name__}.generate needs one EpisodeContext per prompt "
                f"(contexts=...): {len(prompts)} prompts, {got} contexts"
            )
        return contexts

    async def _act(self, context: EpisodeContext, row: int, sampling: SamplingParams) -> str:
        raise NotImplementedError

    async def generate(
        self,
        prompts: Sequence[Sequence[int]],
        sampling: SamplingParams,
        *,
        contexts: Sequence[EpisodeContext] | None = None,
    ) -> list[Completion]:
        """The expert's next action for each context, as token ids (prompts are not read)."""
        contexts = self._contexts(prompts, contexts)
        return [
            self.encode_action(await self._act(context, row, sampling), sampling)
            for row, context in enumerate(contexts)
        ]

    def encode_action(self, action: str, sampling: SamplingParams) -> Completion:
        """Tokenize ``action`` as a model would have generated it under ``sampling``."""
        hits = [(action.find(s) + len(s), s) for s in sampling.stop if s and s in action]
        stop = min(hits) if hits else None
        reason: FinishReason = "stop" if stop else "eos"
        text = action[: stop[0]] if stop else action
        ids = self.tokenizer.encode(text, add_special_tokens=False)
        if stop is None:
            ids.append(int(self.tokenizer.eos_token_id))
        if len(ids) > sampling.max_tokens:
            ids, reason, stop = ids[: sampling.max_tokens], "length", None
        return Completion(
            token_ids=ids,
            text=self.tokenizer.decode(ids, skip_special_tokens=True),
            logprobs=[0.0] * len(ids),
            finish_reason=reason,
            stop_string=stop[1] if stop else None,
        )

    async def score(
        self, prompts: Sequence[Sequence[int]], continuations: Sequence[Sequence[int]]
    ) -> list[np.ndarray]:
        raise NotImplementedError(
            f"{type(self).__name__} is a scripted policy and has no token distribution to score; "
            "use a model policy (HFPolicy, OpenAIPolicy, VLLMPolicy) for score()"
        )

    async def aclose(self) -> None:
        return None


async def _call(function: Any, *args: Any) -> str:
    result = function(*args)
    if inspect.isawaitable(result):
        result = await result
    return str(result)


class ScriptedPolicy(_ExpertPolicy):
    """The env family's expert ``solve(task, messages)`` as a Policy.

    Args:
        source: a registered env id or an expert module (object or import path) used for every
            prompt; None (default) looks the expert up from each context's ``env_id``.
        tokenizer: tokenizes actions (default: the tiny model's tokenizer).
    """

    name = "expert"

    async def _act(self, context: EpisodeContext, row: int, sampling: SamplingParams) -> str:
        return await _call(self._expert(context).solve, context.task, context.messages)


class ClosedBookPolicy(_ExpertPolicy):
    """The env family's ``closed_book(task, messages)`` demonstrator as a Policy: it answers
    without using the env's tools (see :class:`~agentenv.registry.EnvInfo`)."""

    name = "closed-book"

    async def _act(self, context: EpisodeContext, row: int, sampling: SamplingParams) -> str:
        expert = self._expert(context)
        if not hasattr(expert, "closed_book"):
            raise ValueError(f"{expert.__name__} defines no closed_book(task, messages)")
        return await _call(expert.closed_book, context.task, context.messages)


class RandomPolicy(_ExpertPolicy):
    """The env family's ``random_action(task, messages, rng)`` baseline as a Policy; for an env
    without one, :func:`generic_random_action`.

    ``rng`` is a ``numpy.random.Generator``: seeded from ``sampling.seed`` and the row index
    when the call gives a seed (the rollout engine seeds each episode's turns), else drawn from
    the policy's own stream (seeded by ``seed``).
    """

    name = "random"

    def __init__(
        self,
        source: str | ModuleType | None = None,
        tokenizer: Any = None,
        *,
        seed: int | None = 0,
    ) -> None:
        super().__init__(source, tokenizer)
        self._rng = np.random.default_rng(seed)

    @staticmethod
    def _resolve(source: str | ModuleType) -> RandomAction:
        return random_actor(source)

    async def _act(self, context: EpisodeContext, row: int, sampling: SamplingParams) -> str:
        rng = (
            np.random.default_rng([sampling.seed & (2**64 - 1), row])
            if sampling.seed is not None
            else self._rng
        )
        return await _call(self._expert(context), context.task, context.messages, rng)
