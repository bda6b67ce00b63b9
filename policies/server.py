"""An OpenAI-compatible HTTP server over :class:`HFPolicy` (``agentenv serve-policy MODEL``).

Endpoints (request and response bodies follow the OpenAI API, with vLLM's extensions):

- ``GET /health``, ``GET /v1/models``, ``GET /v1/models/{id}`` (404 for an unknown id);
- ``POST /v1/completions``: ``prompt`` as text, token ids, or a list of either; ``max_tokens``,
  ``temperature``, ``top_p``, ``top_k``, ``stop``, ``stop_token_ids``, ``seed``, ``n``,
  ``logprobs`` (k alternatives per token plus the chosen one), ``echo`` (with
  ``max_tokens: 0`` this scores the prompt), ``return_tokens_as_token_ids``,
  ``include_stop_str_in_output``, ``skip_special_tokens``. Every choice also carries
  ``token_ids`` (the exact generated ids) and ``prompt_token_ids``;
- ``POST /v1/chat/completions``: ``messages`` rendered through the tokenizer's chat template,
  with the sampling fields above plus ``max_completion_tokens``, ``logprobs`` and
  ``top_logprobs``. Native function calls follow OpenAI's wire format: ``tools``,
  ``tool_choice``, ``parallel_tool_calls``, assistant messages with ``tool_calls`` (``content``
  may be null) and ``tool`` messages with ``tool_call_id`` in the history (request schema,
  checks, prompt and reply: :mod:`agentenv.policies.chat`);
- both generating endpoints stream with ``stream: true`` (server-sent events in OpenAI's chunk
  format, ``stream_options.include_usage``, then ``data: [DONE]``). The policy returns whole
  completions, so the chunks are sent once the request's completions are done;
- ``POST /v1/load_lora_adapter`` ``{"lora_name", "lora_path"}`` and
  ``POST /v1/unload_lora_adapter`` ``{"lora_name"}``: merge a peft LoRA adapter into the served
  weights, or restore the base weights. Unlike vLLM, which serves several adapters side by side,
  one adapter is active at a time and every request uses it, under either model name.

Requests from many clients are coalesced into shared batches by the policy. Every request is
validated before it reaches the batcher (field bounds, then
:func:`~agentenv.policies.hf.check_sampling`, prompt token ids and lengths, and the caps below),
so a bad request gets its own HTTP 400 naming the field and never fails the requests batched
with it. A field the schema does not know is a 400 naming it: nothing is silently ignored;
vLLM's penalties, ``logit_bias``, ``min_p``, ``min_tokens`` and ``ignore_eos`` are applied by the
backend's sampling loop (:mod:`agentenv.policies.sampling`). Caps (:func:`create_app` knobs):
``max_body_bytes`` (:data:`MAX_BODY_BYTES`, HTTP 413
before parsing), ``max_rows`` (prompts x ``n``, :data:`MAX_ROWS`); a prompt is at most the
model's ``max_position_embeddings`` tokens (fewer to generate, that many to echo-score), and
``stop`` holds at most :data:`~agentenv.policies.api.MAX_STOPS` strings of
:data:`~agentenv.policies.api.MAX_STOP_CHARS` characters.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import uvicorn
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse
from pydantic import BaseModel, Field

from agentenv.limits import BodyLimit
from agentenv.policies.api import MAX_LOGPROBS, APIError, SamplingRequest, Served, served
from agentenv.policies.base import Completion, SamplingParams
from agentenv.policies.chat import (
    ChatRequest,
    TopLogprobs,
    chat_choice,
    chat_prompt,
    chat_stream_choices,
    check_chat_logprobs,
    template_tool_parser,
)
from agentenv.policies.hf import HFPolicy
from agentenv.policies.sampling import top_logprobs
from agentenv.policies.specs import load_policy

MAX_BODY_BYTES = 64 * 2**20
"""Largest request body (bytes); a larger one gets HTTP 413 before it is parsed."""
MAX_ROWS = 1024
"""Most completions (prompts x ``n``) one request may ask for."""


class CompletionRequest(SamplingRequest):
    prompt: str | list[int] | list[str] | list[list[int]]
    logprobs: int | None = Field(default=None, ge=0, le=MAX_LOGPROBS)
    echo: bool = False
    return_tokens_as_token_ids: bool = False


class LoadLoraRequest(BaseModel):
    lora_name: str
    lora_path: str


class UnloadLoraRequest(BaseModel):
    lora_name: str


def create_app(
    policy: HFPolicy,
    *,
    model_name: str,
    default_max_tokens: int = 16,
    close_policy: bool = True,
    max_body_bytes: int = MAX_BODY_BYTES,
    max_rows: int = MAX_ROWS,
    tool_parser: str | None = None,
) -> FastAPI:
    """The OpenAI-compatible app serving ``policy`` under ``model_name``.

    ``default_max_tokens`` applies when a request gives none (OpenAI's default is 16).
    ``close_policy`` stops the policy's worker when the app shuts down. ``max_body_bytes`` and
    ``max_rows`` (prompts x ``n``) bound every request. ``tool_parser`` names the tool-call
    format of the model's chat template (``hermes``, ``llama3_json``, ``pythonic``) where it is
    not detected from the template.
    """
    if max_rows < 1:
        raise ValueError(f"max_rows must be >= 1, got {max_rows}")
    tools_parser, no_tools_reason = template_tool_parser(policy.tokenizer, tool_parser)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        if close_policy:
            await policy.aclose()

    app = FastAPI(title=f"agentenv policy server ({model_name})", lifespan=lifespan)
    app.state.policy = policy
    app.add_middleware(
        BodyLimit, max_bytes=max_body_bytes, error_body=lambda m: _error_body(413, m, None)
    )
    created = int(time.time())

    @app.exception_handler(APIError)
    async def api_error(_: Request, exc: APIError) -> JSONResponse:
        return _error(exc.status, exc.message, exc.param)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        return _validation_error(exc.errors())

    def check_rows(prompts: int, n: int) -> None:
        if prompts * n > max_rows:
            raise APIError(
                400,
                f"{prompts} prompt(s) x n={n} = {prompts * n} completions is over the limit "
                f"max_rows={max_rows}; split the request",
                param="n" if prompts == 1 else "prompt",
            )

    def check_request(request: SamplingRequest) -> None:
        names = _served_names(policy, model_name)
        if request.model not in names:
            raise APIError(
                404,
                f"model {request.model!r} does not exist; served: {', '.join(names)}",
                param="model",
            )
        request.check_supported(int(policy.model.config.vocab_size))

    def model_cards() -> list[dict[str, Any]]:
        cards = [{"id": model_name, "object": "model", "created": created, "owned_by": "agentenv"}]
        if policy.lora_name is not None:
            cards.append({**cards[0], "id": policy.lora_name, "parent": model_name})
        return cards

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok", "model": model_name}

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {"object": "list", "data": model_cards()}

    @app.get("/v1/models/{model_id:path}")
    async def model(model_id: str) -> dict[str, Any]:
        for card in model_cards():
            if card["id"] == model_id:
                return card
        raise APIError(404, f"The model {model_id!r} does not exist", param="model")

    @app.post("/v1/completions", response_model=None)
    async def completions(request: CompletionRequest) -> dict[str, Any] | StreamingResponse:
        check_request(request)
        sampling = request.sampling(default_max_tokens)
        check_rows(_prompt_count(request.prompt), request.n)
        prompts = _prompt_ids(policy, request.prompt)
        scored = request.echo and request.logprobs is not None
        if scored:
            _check_scored_lengths(policy, prompts)
        outputs = await _generate(policy, prompts, sampling, request.n)
        replies = [served(c, request, policy.tokenizer) for c in outputs]
        rows = [prompts[index // request.n] for index in range(len(replies))]
        prompt_logprobs = (
            await _prompt_logprobs(policy, prompts) if scored else [None] * len(prompts)
        )
        starts = [1 if request.echo else len(row) for row in rows]
        tops = await _top_logprobs(
            policy,
            [row + reply.token_ids for row, reply in zip(rows, replies, strict=True)],
            starts,
            request.logprobs or 0,
        )
        choices = [
            _completion_choice(
                policy,
                request,
                index,
                rows[index],
                prompt_logprobs[index // request.n],
                reply,
                tops[index],
            )
            for index, reply in enumerate(replies)
        ]
        body = {
            "id": f"cmpl-{uuid.uuid4().hex}",
            "object": "text_completion",
            "created": int(time.time()),
            "model": request.model,
            "choices": choices,
            "usage": _usage(prompts, replies),
        }
        if request.stream:
            return _stream(body, [_completion_stream_choices(c) for c in choices], request)
        return body

    @app.post("/v1/chat/completions", response_model=None)
    async def chat_completions(request: ChatRequest) -> dict[str, Any] | StreamingResponse:
        check_request(request)
        check_chat_logprobs(request)
        prompt, parser = chat_prompt(policy.tokenizer, request, tools_parser, no_tools_reason)
        if request.max_completion_tokens is not None:
            request.max_tokens = request.max_completion_tokens
        sampling = request.sampling(default_max_tokens)
        check_rows(1, request.n)
        outputs = await _generate(policy, [prompt], sampling, request.n)
        replies = [served(c, request, policy.tokenizer) for c in outputs]
        k = (request.top_logprobs or 0) if request.logprobs else 0
        tops = await _top_logprobs(
            policy, [prompt + r.token_ids for r in replies], [len(prompt)] * len(replies), k
        )
        choices = [
            chat_choice(policy.tokenizer, request, index, reply, parser, tops[index])
            for index, reply in enumerate(replies)
        ]
        body = {
            "id": f"chatcmpl-{uuid.uuid4().hex}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": request.model,
            "choices": choices,
            "prompt_token_ids": prompt,
            "usage": _usage([prompt], replies),
        }
        if request.stream:
            return _stream(body, [chat_stream_choices(c) for c in choices], request)
        return body

    @app.post("/v1/load_lora_adapter")
    async def load_lora_adapter(request: LoadLoraRequest) -> PlainTextResponse:
        if request.lora_name == model_name:
            raise APIError(400, "lora_name must differ from the base model name", param="lora_name")
        try:
            await asyncio.to_thread(policy.load_lora_adapter, request.lora_name, request.lora_path)
        except (OSError, ValueError) as exc:
            raise APIError(400, f"cannot load LoRA adapter: {exc}", param="lora_path") from exc
        return PlainTextResponse(f"Success: LoRA adapter '{request.lora_name}' added successfully.")

    @app.post("/v1/unload_lora_adapter")
    async def unload_lora_adapter(request: UnloadLoraRequest) -> PlainTextResponse:
        try:
            await asyncio.to_thread(policy.unload_lora_adapter, request.lora_name)
        except KeyError as exc:
            raise APIError(404, str(exc.args[0]), param="lora_name") from exc
        return PlainTextResponse(
            f"Success: LoRA adapter '{request.lora_name}' removed successfully."
        )

    return app


# ---------------------------------------------------------------------------------------------
# Request handling
# ---------------------------------------------------------------------------------------------
def _served_names(policy: HFPolicy, model_name: str) -> list[str]:
    return [model_name] + ([policy.lora_name] if policy.lora_name is not None else [])


def _prompt_items(prompt: str | list[int] | list[str] | list[list[int]]) -> list[Any]:
    """The prompts of a completions request: each a text or a token-id list."""
    if isinstance(prompt, str) or (prompt and all(isinstance(t, int) for t in prompt)):
        return [prompt]
    return list(prompt)


def _prompt_count(prompt: str | list[int] | list[str] | list[list[int]]) -> int:
    return len(_prompt_items(prompt))


def _prompt_ids(
    policy: HFPolicy, prompt: str | list[int] | list[str] | list[list[int]]
) -> list[list[int]]:
    """The prompt(s) of a completions request as token-id lists (text is encoded as-is)."""
    items = _prompt_items(prompt)
    if not items:
        raise APIError(400, "prompt is empty", param="prompt")
    ids = [
        policy.tokenizer.encode(item, add_special_tokens=False)
        if isinstance(item, str)
        else list(item)
        for item in items
    ]
    vocab = int(policy.model.config.vocab_size)
    for index, row in enumerate(ids):
        if not row:
            raise APIError(400, f"prompt {index} has no tokens", param="prompt")
        if not all(0 <= t < vocab for t in row):
            raise APIError(
                400, f"prompt {index} has token ids outside [0, {vocab})", param="prompt"
            )
    return ids


def _check_scored_lengths(policy: HFPolicy, prompts: Sequence[list[int]]) -> None:
    """Echo scoring takes prompts of at most the model's positions (generation's own bound,
    fewer than that, is checked by the policy before it queues a prompt)."""
    limit = policy.max_positions
    for index, row in enumerate(prompts):
        if len(row) > limit:
            raise APIError(
                400,
                f"prompt {index} has {len(row)} tokens; echo scoring takes at most {limit} "
                "(the model's max_position_embeddings)",
                param="prompt",
            )


async def _generate(
    policy: HFPolicy, prompts: Sequence[list[int]], sampling: SamplingParams, n: int
) -> list[Completion]:
    """``n`` completions per prompt, in prompt order (one policy call, so they share batches)."""
    if sampling.max_tokens == 0:
        return [Completion([], "", [], "length") for _ in range(len(prompts) * n)]
    rows = [p for p in prompts for _ in range(n)]
    try:
        return await policy.generate(rows, sampling)
    except ValueError as exc:
        raise APIError(400, str(exc), param="prompt") from exc


async def _prompt_logprobs(
    policy: HFPolicy, prompts: Sequence[list[int]]
) -> list[list[float | None]]:
    """Teacher-forced logprobs of each prompt token given the ones before (first: None)."""
    scores = await policy.score([p[:1] for p in prompts], [p[1:] for p in prompts])
    return [[None, *map(float, s)] for s in scores]


async def _top_logprobs(
    policy: HFPolicy, sequences: Sequence[list[int]], starts: Sequence[int], k: int
) -> list[TopLogprobs | None]:
    """Per sequence, the ``k`` most likely tokens at each position from its start on (None for
    every sequence when ``k`` is 0), teacher-forced under the weights lock."""
    if k == 0:
        return [None] * len(sequences)

    def compute() -> list[TopLogprobs]:
        out = []
        with policy.weights_lock:
            for ids, start in zip(sequences, starts, strict=True):
                tokens, values = top_logprobs(policy.model, ids, start, k, policy.device)
                out.append(
                    [list(zip(t, v, strict=True)) for t, v in zip(tokens, values, strict=True)]
                )
        return out

    return list(await asyncio.to_thread(compute))


def _token_label(policy: HFPolicy, token: int, as_ids: bool) -> str:
    return f"token_id:{token}" if as_ids else policy.tokenizer.decode([token])


def _completion_choice(
    policy: HFPolicy,
    request: CompletionRequest,
    index: int,
    prompt: list[int],
    prompt_logprobs: list[float | None] | None,
    reply: Served,
    tops: TopLogprobs | None,
) -> dict[str, Any]:
    """One OpenAI completion choice; ``tops`` are the alternatives of every token shown (the
    prompt's after its first token when echoing, then the generated ones)."""
    text = reply.text
    tokens = reply.token_ids
    logprobs: list[float | None] = list(reply.logprobs)
    if request.echo:
        text = policy.tokenizer.decode(prompt, skip_special_tokens=False) + text
        tokens = prompt + tokens
        logprobs = (prompt_logprobs or [None] * len(prompt)) + logprobs
    choice: dict[str, Any] = {
        "index": index,
        "text": text,
        "logprobs": None,
        "finish_reason": reply.finish_reason,
        "stop_reason": reply.stop_reason,
        "token_ids": reply.token_ids,
        "prompt_token_ids": prompt,
    }
    if request.logprobs is not None:
        as_ids = request.return_tokens_as_token_ids
        labels = [_token_label(policy, t, as_ids) for t in tokens]
        offsets, position = [], 0
        for label in labels:
            offsets.append(position)
            position += len(label)
        alternatives = [None] * (len(tokens) - len(tops)) + tops if tops else [None] * len(tokens)
        choice["logprobs"] = {
            "tokens": labels,
            "token_logprobs": logprobs,
            "top_logprobs": [
                _top_entry(policy, label, lp, alts, as_ids) if lp is not None else None
                for label, lp, alts in zip(labels, logprobs, alternatives, strict=True)
            ],
            "text_offset": offsets,
        }
    return choice


def _top_entry(
    policy: HFPolicy,
    label: str,
    logprob: float,
    alternatives: list[tuple[int, float]] | None,
    as_ids: bool,
) -> dict[str, float]:
    """The ``top_logprobs`` of one token: its alternatives, most likely first, and the chosen
    token with its own logprob (so up to ``logprobs + 1`` entries, as OpenAI documents)."""
    entry = {_token_label(policy, t, as_ids): v for t, v in alternatives or ()}
    entry[label] = logprob
    return entry


def _completion_stream_choices(choice: dict[str, Any]) -> list[dict[str, Any]]:
    """The streamed choices that add up to the finished ``choice``: its text with its
    logprobs, then its finish reason."""
    text = {key: choice[key] for key in ("index", "text", "logprobs")}
    return [
        {**text, "finish_reason": None},
        {
            "index": choice["index"],
            "text": "",
            "logprobs": None,
            "finish_reason": choice["finish_reason"],
            "stop_reason": choice["stop_reason"],
            "token_ids": choice["token_ids"],
            "prompt_token_ids": choice["prompt_token_ids"],
        },
    ]


def _stream(
    body: dict[str, Any], choices: Sequence[list[dict[str, Any]]], request: SamplingRequest
) -> StreamingResponse:
    """``body`` as OpenAI's server-sent events: one chunk per streamed choice (each choice's in
    order, choice after choice), the usage chunk if ``stream_options.include_usage``, then
    ``[DONE]``."""
    usage = request.stream_options is not None and request.stream_options.include_usage
    envelope = {key: body[key] for key in ("id", "created", "model")}
    envelope["object"] = (
        "chat.completion.chunk" if body["object"] == "chat.completion" else body["object"]
    )
    chunks = [
        {**envelope, "choices": [piece], **({"usage": None} if usage else {})}
        for pieces in choices
        for piece in pieces
    ]
    if usage:
        chunks.append({**envelope, "choices": [], "usage": body["usage"]})
    events = [f"data: {json.dumps(chunk)}\n\n" for chunk in chunks] + ["data: [DONE]\n\n"]
    return StreamingResponse(iter(events), media_type="text/event-stream")


def _usage(prompts: Sequence[list[int]], outputs: Sequence[Served]) -> dict[str, Any]:
    """OpenAI's usage: tokens of the prompts (each once, whatever ``n``) and of every output;
    ``prompt_tokens_details.cached_tokens``: the prompt tokens the prefix cache served (each
    prompt's first output's)."""
    prompt_tokens = sum(len(p) for p in prompts)
    completion_tokens = sum(len(c.token_ids) for c in outputs)
    n = max(len(outputs) // max(len(prompts), 1), 1)
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "prompt_tokens_details": {"cached_tokens": sum(c.cached_tokens for c in outputs[::n])},
    }


def _validation_error(errors: Sequence[Any]) -> JSONResponse:
    """HTTP 400 for a request that does not fit the schema; a field the schema does not know
    is named as unsupported (the first one is the error's ``param``)."""
    unknown = [
        ".".join(str(p) for p in e["loc"][1:]) for e in errors if e["type"] == "extra_forbidden"
    ]
    if unknown:
        return _error(
            400,
            f"unsupported field(s) {', '.join(map(repr, unknown))}: this server does not "
            "implement them",
            unknown[0],
        )
    problems = "; ".join(
        f"{'.'.join(str(p) for p in e['loc'][1:]) or 'body'}: {e['msg']}" for e in errors
    )
    return _error(400, f"invalid request: {problems}", None)


def _error_body(status: int, message: str, param: str | None) -> dict[str, Any]:
    kind = "invalid_request_error" if status < 500 else "server_error"
    return {"error": {"message": message, "type": kind, "param": param, "code": status}}


def _error(status: int, message: str, param: str | None) -> JSONResponse:
    return JSONResponse(_error_body(status, message, param), status_code=status)


# ---------------------------------------------------------------------------------------------
# Launching
# ---------------------------------------------------------------------------------------------
def create_app_from_spec(
    spec: str,
    model_name: str | None = None,
    *,
    max_body_bytes: int = MAX_BODY_BYTES,
    max_rows: int = MAX_ROWS,
    tool_parser: str | None = None,
    **policy_kwargs: Any,
) -> FastAPI:
    """App factory for :class:`agentenv.launch.LocalServer` and ``uvicorn --factory``.

    ``spec`` is a policy spec that loads an :class:`HFPolicy` (a model folder, ``tiny``,
    ``smollm2``); ``max_body_bytes``, ``max_rows`` and ``tool_parser`` go to
    :func:`create_app`, ``policy_kwargs`` to :func:`~agentenv.policies.specs.load_policy`.
    """
    policy = load_policy(spec, **policy_kwargs)
    if not isinstance(policy, HFPolicy):
        raise ValueError(
            f"serve-policy serves local transformers models; {spec!r} is a "
            f"{type(policy).__name__}. Give a model folder, 'tiny' or 'smollm2'."
        )
    return create_app(
        policy,
        model_name=model_name or policy.name,
        max_body_bytes=max_body_bytes,
        max_rows=max_rows,
        tool_parser=tool_parser,
    )


def serve_policy(
    spec: str,
    host: str = "127.0.0.1",
    port: int = 8000,
    *,
    model_name: str | None = None,
    log_level: str = "info",
    **policy_kwargs: Any,
) -> None:
    """Serve ``spec`` (see :func:`create_app_from_spec`) with uvicorn until interrupted."""
    app = create_app_from_spec(spec, model_name=model_name, **policy_kwargs)
    uvicorn.run(app, host=host, port=port, log_level=log_level)
