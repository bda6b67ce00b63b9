"""Request and reply pieces shared by the endpoints of :mod:`agentenv.policies.server`.

:class:`APIError` is the error a client gets in OpenAI's ``{"error": {...}}`` shape.
:class:`SamplingRequest` holds the sampling fields of ``/v1/completions`` and
``/v1/chat/completions`` with their bounds (:data:`MAX_TOP_K`, :data:`MAX_STOPS`,
:data:`MAX_STOP_CHARS`, :data:`MAX_LOGIT_BIAS`; :data:`MAX_LOGPROBS` bounds each endpoint's
logprobs field) and turns them into checked :class:`~agentenv.policies.base.SamplingParams`,
vLLM's extras (penalties, ``logit_bias``, ``min_p``, ``min_tokens``, ``ignore_eos``,
``stop_token_ids``) included. A field the request schema does not know is refused (HTTP 400
naming it). :func:`served` gives a completion as OpenAI reports it: decoded with or without
special tokens, the stop string or stop token's text cut unless asked for, with its finish and
stop reasons.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from agentenv.policies.base import Completion, SamplingExtras, SamplingParams
from agentenv.policies.hf import check_sampling

MAX_TOP_K = 2**31 - 1
MAX_LOGPROBS = 20
"""Largest ``logprobs`` / ``top_logprobs`` (vLLM's default ``max_logprobs``)."""
MAX_STOPS = 64
MAX_STOP_CHARS = 1024
MAX_LOGIT_BIAS = 300
"""Most ``logit_bias`` entries (OpenAI's limit)."""
LOGIT_BIAS_BOUND = 100.0
"""``logit_bias`` values are clamped to [-100, 100] (OpenAI's range; vLLM clamps likewise)."""

_Finite = Annotated[float, Field(allow_inf_nan=False)]
_Stop = Annotated[str, Field(max_length=MAX_STOP_CHARS)]


class APIError(Exception):
    """An error returned to the client in OpenAI's ``{"error": {...}}`` shape."""

    def __init__(self, status: int, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param


class StreamOptions(BaseModel):
    """OpenAI's ``stream_options``."""

    model_config = ConfigDict(extra="forbid")

    include_usage: bool = False


class SamplingRequest(BaseModel):
    """The fields every generating request shares: model, sampling, ``n``, ``stream``.

    Unknown fields are refused (the validation error names them). ``user`` is accepted and has
    no effect (OpenAI's end-user id); ``return_token_ids`` is accepted: ``token_ids`` always
    come back.
    """

    model_config = ConfigDict(extra="forbid")

    model: str
    max_tokens: int | None = Field(default=None, ge=0)
    temperature: _Finite = Field(default=1.0, ge=0.0)
    top_p: _Finite = Field(default=1.0, gt=0.0, le=1.0)
    top_k: int = Field(default=0, ge=-1, le=MAX_TOP_K, description="0 or -1: no top-k cut")
    stop: _Stop | Annotated[list[_Stop], Field(max_length=MAX_STOPS)] | None = None
    seed: int | None = None
    n: int = Field(default=1, ge=1, le=256)
    stream: bool = False
    stream_options: StreamOptions | None = None
    include_stop_str_in_output: bool = False
    stop_token_ids: Annotated[list[int], Field(max_length=MAX_STOPS)] | None = None
    skip_special_tokens: bool = True
    presence_penalty: _Finite | None = Field(default=None, ge=-2.0, le=2.0)
    frequency_penalty: _Finite | None = Field(default=None, ge=-2.0, le=2.0)
    repetition_penalty: _Finite | None = Field(default=None, gt=0.0)
    logit_bias: Annotated[dict[int, _Finite], Field(max_length=MAX_LOGIT_BIAS)] | None = None
    min_p: _Finite | None = Field(default=None, ge=0.0, le=1.0)
    min_tokens: int | None = Field(default=None, ge=0)
    ignore_eos: bool | None = None
    return_token_ids: bool | None = None
    user: str | None = None

    def extras(self) -> SamplingExtras:
        """The request's vLLM extras (unset fields at their neutral values; ``logit_bias``
        values clamped to ±:data:`LOGIT_BIAS_BOUND`, as vLLM does)."""
        bias = {
            token: min(LOGIT_BIAS_BOUND, max(-LOGIT_BIAS_BOUND, value))
            for token, value in (self.logit_bias or {}).items()
        }
        return SamplingExtras(
            presence_penalty=self.presence_penalty or 0.0,
            frequency_penalty=self.frequency_penalty or 0.0,
            repetition_penalty=1.0 if self.repetition_penalty is None else self.repetition_penalty,
            logit_bias=tuple(sorted(bias.items())),
            min_p=self.min_p or 0.0,
            min_tokens=self.min_tokens or 0,
            ignore_eos=bool(self.ignore_eos),
            stop_token_ids=tuple(self.stop_token_ids or ()),
        )

    def check_supported(self, vocab_size: int) -> None:
        """APIError 400 naming the first field whose token ids are outside the vocabulary, or
        ``stream_options`` without ``stream``."""
        for name, ids in (
            ("stop_token_ids", self.stop_token_ids or ()),
            ("logit_bias", self.logit_bias or {}),
        ):
            if not all(0 <= int(t) < vocab_size for t in ids):
                raise APIError(400, f"{name} has token ids outside [0, {vocab_size})", param=name)
        if self.stream_options is not None and not self.stream:
            raise APIError(
                400, "stream_options can only be given with stream=true", param="stream_options"
            )

    def sampling(self, default_max_tokens: int) -> SamplingParams:
        """The request's SamplingParams, checked by :func:`check_sampling` (APIError if bad)."""
        stop = (self.stop,) if isinstance(self.stop, str) else tuple(self.stop or ())
        max_tokens = default_max_tokens if self.max_tokens is None else self.max_tokens
        sampling = SamplingParams(
            max_tokens=max_tokens,
            temperature=self.temperature,
            top_p=self.top_p,
            top_k=max(self.top_k, 0),
            stop=stop,
            seed=self.seed,
            extras=self.extras(),
        )
        if sampling.extras.min_tokens > max_tokens:
            raise APIError(
                400,
                f"min_tokens must be at most max_tokens={max_tokens}, got {self.min_tokens}",
                param="min_tokens",
            )
        try:
            check_sampling(sampling)
        except ValueError as exc:
            raise APIError(400, f"invalid sampling parameters: {exc}") from exc
        return sampling


@dataclass(frozen=True)
class Served:
    """A completion as the client gets it."""

    token_ids: list[int]
    logprobs: list[float]
    text: str
    finish_reason: Literal["stop", "length"]
    stop_reason: str | int | None
    """The matched stop string or stop token id (vLLM's ``stop_reason``); None otherwise."""
    cached_tokens: int = 0
    """Prompt tokens the backend reused from its prefix cache."""


def served(completion: Completion, request: SamplingRequest, tokenizer: Any) -> Served:
    """``completion`` (generated with ``request``'s sampling) with vLLM's semantics.

    A completion the backend ended on one of ``stop_token_ids`` (its ``"eos"`` finish) reports
    that id as ``stop_reason``; the token stays in ``token_ids``, its text only with
    ``include_stop_str_in_output``. The text is decoded with ``skip_special_tokens``; a matched
    stop string is cut from it unless ``include_stop_str_in_output``, and so is the
    end-of-sequence token's text when special tokens are kept.
    """
    ids, logprobs = list(completion.token_ids), list(completion.logprobs)
    keep_stop = request.include_stop_str_in_output
    if completion.finish_reason == "eos" and ids[-1] in (request.stop_token_ids or ()):
        shown = ids if keep_stop else ids[:-1]
        text = tokenizer.decode(shown, skip_special_tokens=request.skip_special_tokens)
        return Served(ids, logprobs, text, "stop", ids[-1], completion.cached_tokens)
    if request.skip_special_tokens:
        text = completion.text
    else:
        shown = ids[:-1] if completion.finish_reason == "eos" and not keep_stop else ids
        text = tokenizer.decode(shown, skip_special_tokens=False)
    if completion.stop_string and not keep_stop:
        found = text.find(completion.stop_string)
        if found >= 0:
            text = text[:found]
    finish = "length" if completion.finish_reason == "length" else "stop"
    return Served(ids, logprobs, text, finish, completion.stop_string, completion.cached_tokens)
