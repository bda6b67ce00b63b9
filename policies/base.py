"""The Policy protocol: what the rollout engine, rewards and evaluation need from a model.

A policy generates continuations of token-id prompts and scores given continuations
(teacher-forced log-probabilities). Token ids in, token ids out: the rollout engine never
re-tokenizes generated text, so training sees exactly what the policy produced.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np

FinishReason = Literal["stop", "length", "eos"]


@dataclass(frozen=True)
class SamplingExtras:
    """vLLM's extra sampling parameters, with vLLM's meaning; the defaults change nothing.

    ``repetition_penalty`` (> 0) divides positive logits and multiplies negative ones of every
    token seen in the prompt or the output; ``frequency_penalty`` subtracts its value times the
    token's count in the output, ``presence_penalty`` its value once per token present there;
    ``logit_bias`` adds a bias to a token's logit; ``min_p`` drops tokens less likely than
    ``min_p`` times the most likely one (at the row's temperature); ``min_tokens`` forbids
    end-of-sequence and ``stop_token_ids`` (even with ``ignore_eos``) and ignores stop strings
    until that many tokens are out; ``ignore_eos`` keeps generating past an end-of-sequence
    token; ``stop_token_ids`` end the row (the token is kept in the output, and the completion's
    ``finish_reason`` is ``"eos"``). :class:`agentenv.policies.sampling.LogitsProcessor` applies
    them.
    """

    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    repetition_penalty: float = 1.0
    logit_bias: tuple[tuple[int, float], ...] = ()
    min_p: float = 0.0
    min_tokens: int = 0
    ignore_eos: bool = False
    stop_token_ids: tuple[int, ...] = ()

    @property
    def neutral(self) -> bool:
        """Whether every field has its default (sampling is then plain ``SamplingParams``)."""
        return self == _NEUTRAL

    def request_fields(self) -> dict[str, Any]:
        """The fields that differ from their defaults, as vLLM's ``SamplingParams`` and its
        OpenAI server name them (``logit_bias`` as ``{token id: bias}``)."""
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        changed = {k: v for k, v in values.items() if v != getattr(_NEUTRAL, k)}
        if "logit_bias" in changed:
            changed["logit_bias"] = dict(self.logit_bias)
        if "stop_token_ids" in changed:
            changed["stop_token_ids"] = list(self.stop_token_ids)
        return changed


_NEUTRAL = SamplingExtras()


@dataclass(frozen=True)
class SamplingParams:
    """How to sample one completion.

    ``stop`` strings end generation once they appear in the decoded continuation; the returned
    ids include the tokens that completed the stop string (the action is cut there, not
    re-tokenized). ``temperature=0`` is greedy. ``seed`` makes sampling reproducible per call.
    ``extras`` are vLLM's penalties, ``logit_bias``, ``min_p``, ``min_tokens``, ``ignore_eos``
    and ``stop_token_ids`` (:class:`SamplingExtras`; the default is neutral). HFPolicy applies
    them; OpenAIPolicy sends them in its requests and VLLMPolicy passes them to vLLM
    (:meth:`SamplingExtras.request_fields`).
    """

    max_tokens: int = 256
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    stop: tuple[str, ...] = ()
    seed: int | None = None
    extras: SamplingExtras = _NEUTRAL


@dataclass
class Completion:
    """One generated continuation.

    ``logprobs[i]`` is log π(token_ids[i] | prompt, token_ids[:i]) under the model's raw
    distribution (temperature 1, no top-p/top-k), which is what PPO's ratio needs.
    ``finish_reason``: ``"stop"`` (a stop string matched), ``"eos"`` (end-of-sequence token),
    ``"length"`` (``max_tokens`` reached). ``entropies[i]``, where the backend computes it
    (HFPolicy), is the exact entropy −Σ_v π(v) log π(v) of that same raw distribution at
    position i; None where the backend only reports the sampled tokens' log-probabilities.
    """

    token_ids: list[int]
    text: str
    logprobs: list[float]
    finish_reason: FinishReason
    stop_string: str | None = None
    entropies: list[float] | None = None
    cached_tokens: int = 0
    """Prompt tokens whose keys and values the backend reused instead of computing them
    (HFPolicy's prefix cache)."""

    @property
    def mean_entropy(self) -> float | None:
        """The mean per-token entropy of the action, or None (no tokens, or not finite).

        Exact (the mean of :attr:`entropies`) where the backend gives entropies; otherwise the
        Monte-Carlo estimate Ĥ = −(1/n)·Σ_i log π(y_i | y_<i). Each term's expectation over
        y_i ~ π(·|y_<i) is that position's entropy, so at temperature 1 without top-p/top-k
        truncation Ĥ is an unbiased estimate of the mean per-token entropy along the sampled
        action. Under any other sampling distribution q (temperature T ≠ 1, top-p, top-k) it
        estimates the cross-entropy H(q, π) = H(q) + KL(q‖π) instead: below π's entropy when q
        is sharper (greedy decoding gives −log of the top token's probability), above it when
        q is flatter. A scripted policy (log-probabilities 0) has entropy 0.
        """
        values = self.entropies if self.entropies is not None else self.logprobs
        if not self.token_ids or len(values) != len(self.token_ids):
            return None
        mean = float(np.mean(values))
        value = mean if self.entropies is not None else 0.0 - mean
        return value if np.isfinite(value) else None


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
