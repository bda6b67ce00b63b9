"""The Policy protocol: what the rollout engine, rewards and evaluation need from a model.

A policy generates continuations of token-id prompts and scores given continuations
(teacher-forced log-probabilities). Token ids in, token ids out: the rollout engine never
re-tokenizes generated text, so training sees exactly what the policy produced.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np

FinishReason = Literal["stop", "length", "eos"]


@dataclass(frozen=True)
class SamplingParams:
    """How to sample one completion.

    ``stop`` strings end generation once they appear in the decoded continuation; the returned
    ids include the tokens that completed the stop string (the action is cut there, not
    re-tokenized). ``temperature=0`` is greedy. ``seed`` makes sampling reproducible per call.
    """

    max_tokens: int = 256
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    stop: tuple[str, ...] = ()
    seed: int | None = None


@dataclass
class Completion:
    """One generated continuation.

    ``logprobs[i]`` is log π(token_ids[i] | prompt, token_ids[:i]) under the model's raw
    distribution (temperature 1, no top-p/top-k), which is what PPO's ratio needs.
    ``finish_reason``: ``"stop"`` (a stop string matched), ``"eos"`` (end-of-sequence token),
    ``"length"`` (``max_tokens`` reached).
    """

    token_ids: list[int]
    text: str
    logprobs: list[float]
    finish_reason: FinishReason
    stop_string: str | None = None


@dataclass
class EpisodeContext:
    """What a scripted policy may know about the episode it acts in (models ignore it).

    ``messages`` is the chat so far (OpenAI-shaped dicts: ``{"role", "content"}``, assistant
    ``tool_calls`` and ``tool`` messages in envs with native tools); ``task`` the env's task
    object; ``info`` the last info dict the env returned.
    """

    env_id: str
    task: Any
    messages: list[dict[str, Any]]
    info: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class Policy(Protocol):
    """Anything that can generate and score token sequences.

    ``tokenizer`` is a Hugging Face tokenizer with a chat template: the rollout engine uses it to
    build prompts and tokenize observations.
    """

    name: str
    tokenizer: Any

    async def generate(
        self,
        prompts: Sequence[Sequence[int]],
        sampling: SamplingParams,
        *,
        contexts: Sequence[EpisodeContext] | None = None,
    ) -> list[Completion]:
        """One completion per prompt. Concurrent calls may be coalesced into batches."""
        ...

    async def score(
        self, prompts: Sequence[Sequence[int]], continuations: Sequence[Sequence[int]]
    ) -> list[np.ndarray]:
        """Teacher-forced log π(continuation[j] | prompt, continuation[:j]) for each pair."""
        ...

    async def aclose(self) -> None:
        """Release the model, servers or connections the policy holds."""
        ...


def score_pairs(
    prompts: Sequence[Sequence[int]], continuations: Sequence[Sequence[int]]
) -> list[tuple[list[int], list[int]]]:
    """``(prompt, continuation)`` id lists for :meth:`Policy.score`; one continuation per prompt."""
    if len(prompts) != len(continuations):
        raise ValueError(
            f"score needs one continuation per prompt: {len(prompts)} prompts, "
            f"{len(continuations)} continuations"
        )
    return [
        ([int(t) for t in p], [int(t) for t in c])
        for p, c in zip(prompts, continuations, strict=True)
    ]
