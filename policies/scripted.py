"""Scripted policies: an env family's expert solver, its random baseline and its closed-book
demonstrator, as Policies.

Each env family may register an expert module (``EnvInfo.expert``) with
``solve(task, messages) -> str`` and ``random_action(task, messages, rng) -> str``. These
policies call it with the :class:`EpisodeContext` of each prompt (so a batch may mix env
families) and return the action tokenized as a model would emit it: the action's ids followed by
the tokenizer's eos token, or cut right after the first stop string of the sampling params, or
cut at ``max_tokens``. Their ids are what SFT learns from; logprobs are 0 (the action is
certain).
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Sequence
from types import ModuleType
from typing import Any

import numpy as np

from agentenv.policies.base import Completion, EpisodeContext, FinishReason, SamplingParams
from agentenv.registry import UnknownEnvError, env_info


def expert_module(source: str | ModuleType) -> ModuleType:
    """The expert module of a registered env id, or a module given directly or by import path."""
    if isinstance(source, ModuleType):
        return source
    try:
        module_path = env_info(source).expert
    except UnknownEnvError:
        module_path = None
        try:
            return importlib.import_module(source)
        except ImportError as exc:
            raise ValueError(
                f"{source!r} is neither a registered env id nor an importable expert module"
            ) from exc
    if module_path is None:
        raise ValueError(f"env {source!r} registers no expert module (EnvInfo.expert)")
    return importlib.import_module(module_path)


def default_tokenizer() -> Any:
    """The tiny model's tokenizer (built offline on first use)."""
    from transformers import AutoTokenizer

    from agentenv.models import tiny

    return AutoTokenizer.from_pretrained(tiny())


class _ExpertPolicy:
    """Shared machinery: resolve the expert per context, tokenize its actions."""

    name = "expert"

    def __init__(self, source: str | ModuleType | None = None, tokenizer: Any = None) -> None:
        self._fixed = expert_module(source) if source is not None else None
        self._modules: dict[str, ModuleType] = {}
        self.tokenizer = tokenizer if tokenizer is not None else default_tokenizer()

    def _expert(self, context: EpisodeContext) -> ModuleType:
        if self._fixed is not None:
            return self._fixed
        if context.env_id not in self._modules:
            self._modules[context.env_id] = expert_module(context.env_id)
        return self._modules[context.env_id]

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
    """The env family's ``random_action(task, messages, rng)`` baseline as a Policy.

    ``rng`` is a ``numpy.random.Generator``: seeded from ``sampling.seed`` and the row index
    when the call gives a seed, else drawn from the policy's own stream (seeded by ``seed``).
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

    async def _act(self, context: EpisodeContext, row: int, sampling: SamplingParams) -> str:
        rng = (
            np.random.default_rng([sampling.seed & (2**64 - 1), row])
            if sampling.seed is not None
            else self._rng
        )
        return await _call(self._expert(context).random_action, context.task, context.messages, rng)
