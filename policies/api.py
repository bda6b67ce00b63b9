"""Request and reply pieces shared by the endpoints of :mod:`agentenv.policies.server`.

:class:`APIError` is the error a client gets in OpenAI's ``{"error": {...}}`` shape.
:class:`SamplingRequest` holds the sampling fields of ``/v1/completions`` and
``/v1/chat/completions`` with their bounds (:data:`MAX_TOP_K`, :data:`MAX_STOPS`,
:data:`MAX_STOP_CHARS`; :data:`MAX_LOGPROBS` bounds each endpoint's logprobs field) and turns
them into checked :class:`~agentenv.policies.base.SamplingParams`. :func:`visible_text` and
:func:`openai_finish` give a completion's text and finish reason as OpenAI reports them.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from agentenv.policies.base import Completion, SamplingParams
from agentenv.policies.hf import check_sampling

MAX_TOP_K = 2**31 - 1
MAX_LOGPROBS = 20
"""Largest ``logprobs`` / ``top_logprobs`` (vLLM's default ``max_logprobs``)."""
MAX_STOPS = 64
MAX_STOP_CHARS = 1024

_Finite = Annotated[float, Field(allow_inf_nan=False)]
_Stop = Annotated[str, Field(max_length=MAX_STOP_CHARS)]


class APIError(Exception):
    """An error returned to the client in OpenAI's ``{"error": {...}}`` shape."""

    def __init__(self, status: int, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param


class SamplingRequest(BaseModel):
    """The fields every generating request shares: model, sampling, ``n``, ``stream``."""

    model_config = ConfigDict(extra="ignore")

    model: str
    max_tokens: int | None = Field(default=None, ge=0)
    temperature: _Finite = Field(default=1.0, ge=0.0)
    top_p: _Finite = Field(default=1.0, gt=0.0, le=1.0)
    top_k: int = Field(default=0, ge=-1, le=MAX_TOP_K, description="0 or -1: no top-k cut")
    stop: _Stop | Annotated[list[_Stop], Field(max_length=MAX_STOPS)] | None = None
    seed: int | None = None
    n: int = Field(default=1, ge=1, le=256)
    stream: bool = False
    include_stop_str_in_output: bool = False

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
        )
        try:
            check_sampling(sampling)
        except ValueError as exc:
            raise APIError(400, f"invalid sampling parameters: {exc}") from exc
        return sampling


def openai_finish(completion: Completion) -> Literal["stop", "length"]:
    """OpenAI's finish reason: ``"length"`` when the token budget ran out, else ``"stop"``."""
    return "length" if completion.finish_reason == "length" else "stop"


def visible_text(completion: Completion, request: SamplingRequest) -> str:
    """OpenAI semantics: the matched stop string is cut from the text unless asked for."""
    text = completion.text
    if completion.stop_string and not request.include_stop_str_in_output:
        cut = text.find(completion.stop_string)
        if cut >= 0:
            text = text[:cut]
    return text
