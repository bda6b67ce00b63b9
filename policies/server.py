"""An OpenAI-compatible HTTP server over :class:`HFPolicy` (``agentenv serve-policy MODEL``).

Endpoints (request and response bodies follow the OpenAI API, with vLLM's extensions):

- ``GET /health``, ``GET /v1/models``;
- ``POST /v1/completions``: ``prompt`` as text, token ids, or a list of either; ``max_tokens``,
  ``temperature``, ``top_p``, ``top_k``, ``stop``, ``seed``, ``n``, ``logprobs``, ``echo``
  (with ``max_tokens: 0`` this scores the prompt), ``return_tokens_as_token_ids`` and
  ``include_stop_str_in_output``. Every choice also carries ``token_ids`` (the exact generated
  ids) and ``prompt_token_ids``;
- ``POST /v1/chat/completions``: ``messages`` rendered through the tokenizer's chat template,
  with the sampling fields above plus ``max_completion_tokens``, ``logprobs`` and
  ``top_logprobs``. Native function calls follow OpenAI's wire format: ``tools``,
  ``tool_choice``, ``parallel_tool_calls``, assistant messages with ``tool_calls`` (``content``
  may be null) and ``tool`` messages with ``tool_call_id`` in the history (see "Tool calls");
- ``POST /v1/load_lora_adapter`` ``{"lora_name", "lora_path"}`` and
  ``POST /v1/unload_lora_adapter`` ``{"lora_name"}``: merge a peft LoRA adapter into the served
  weights, or restore the base weights. Unlike vLLM, which serves several adapters side by side,
  one adapter is active at a time and every request uses it, under either model name.

Requests from many clients are coalesced into shared batches by the policy. Every request is
validated before it reaches the batcher (field bounds, then
:func:`~agentenv.policies.hf.check_sampling`, prompt token ids and lengths, and the caps below),
so a bad request gets its own HTTP 400 naming the field and never fails the requests batched
with it. Caps (:func:`create_app` knobs): ``max_body_bytes`` (:data:`MAX_BODY_BYTES`, HTTP 413
before parsing), ``max_rows`` (prompts x ``n``, :data:`MAX_ROWS`); a prompt is at most the
model's ``max_position_embeddings`` tokens (fewer to generate, that many to echo-score), and
``stop`` holds at most :data:`MAX_STOPS` strings of :data:`MAX_STOP_CHARS` characters.

Tool calls (chat completions):

- ``tools`` (at most :data:`MAX_TOOLS`, :data:`MAX_TOOLS_BYTES` of JSON, unique names of 1-64
  letters, digits, ``_`` or ``-``) are rendered by the chat template
  (``apply_chat_template(template_messages(messages), tools=...)``, tool-call arguments as
  dicts, so templates that ``tojson`` them never double-encode). A model whose template renders
  no tools, or in no format :func:`~agentenv.toolcalls.parser_for` knows, gets HTTP 400 naming
  the model (``create_app(tool_parser=)`` names the format when detection fails).
- ``tool_choice``: ``"auto"`` (the default) renders the tools and parses the generated text
  with the template's parser; ``"none"`` renders no tools and parses nothing (the history's
  calls and results are still rendered). ``"required"`` and ``{"type": "function",
  "function": {"name": X}}`` are accepted but not enforced, since a sampling server cannot force
  a grammar: the prompt is the same as for ``"auto"`` and the output is returned as parsed, so
  a reply with no call (or a call to another function) comes back as it is. A named function
  must be one of ``tools``, and ``tool_choice`` other than ``"none"``/``"auto"`` needs ``tools``.
  ``strict`` schemas are passed to the template, and arguments are not checked against them.
- The reply: when the text holds calls that all parse, ``message`` is ``{"role": "assistant",
  "content": <the text outside the calls, or null>, "tool_calls": [{"id": "call_...", "type":
  "function", "function": {"name", "arguments": <JSON string>}}]}`` and ``finish_reason`` is
  ``"tool_calls"``. ``parallel_tool_calls: false`` keeps only the first call (as vLLM does).
  Text that tries to call and fails to parse comes back whole as ``content`` with the usual
  finish reason and the parser's message in the extension field ``tool_parse_error``.
  ``token_ids`` and ``logprobs`` always cover every generated token. Each of ``n`` choices is
  parsed on its own.
- History: an assistant's ``tool_calls`` need an ``id``, a ``function.name`` and JSON-object
  ``arguments`` (a JSON string, or an object); a ``tool`` message needs ``content`` and a
  ``tool_call_id`` naming a call of the assistant message it follows (other ``tool`` messages
  may come between). Content may be a string or a list of ``{"type": "text"}`` parts; other
  parts get HTTP 400. Every violation is a 400 naming the message.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import Annotated, Any, Literal

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from pydantic import BaseModel, ConfigDict, Field, field_validator

from agentenv.limits import BodyLimit
from agentenv.policies.base import Completion, SamplingParams
from agentenv.policies.hf import HFPolicy, check_sampling
from agentenv.toolcalls import (
    MAX_TOOL_CALLS,
    PARSERS,
    Parser,
    ToolCall,
    ToolCallError,
    call_from_object,
    chat_template_text,
    detect_parser,
    template_messages,
)

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 64 * 2**20
"""Largest request body (bytes); a larger one gets HTTP 413 before it is parsed."""
MAX_ROWS = 1024
"""Most completions (prompts x ``n``) one request may ask for."""
MAX_TOP_K = 2**31 - 1
MAX_LOGPROBS = 20
"""Largest ``logprobs`` / ``top_logprobs`` (vLLM's default ``max_logprobs``)."""
MAX_STOPS = 64
MAX_STOP_CHARS = 1024
MAX_TOOLS = 128
"""Most ``tools`` one chat request may give."""
MAX_TOOLS_BYTES = 2**20
"""Largest ``tools`` list, as compact JSON (bytes)."""
TOOL_NAME_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
"""OpenAI's function-name rule."""

_Finite = Annotated[float, Field(allow_inf_nan=False)]
_Stop = Annotated[str, Field(max_length=MAX_STOP_CHARS)]


class APIError(Exception):
    """An error returned to the client in OpenAI's ``{"error": {...}}`` shape."""

    def __init__(self, status: int, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param


class _SamplingRequest(BaseModel):
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


class CompletionRequest(_SamplingRequest):
    prompt: str | list[int] | list[str] | list[list[int]]
    logprobs: int | None = Field(default=None, ge=0, le=MAX_LOGPROBS)
    echo: bool = False
    return_tokens_as_token_ids: bool = False


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: str
    content: str | list[dict[str, Any]] | None = None
    name: str | None = None
    tool_calls: list[dict[str, Any]] | None = None
    tool_call_id: str | None = None


class FunctionDefinition(BaseModel):
    model_config = ConfigDict(extra="ignore")

    name: str = Field(pattern=TOOL_NAME_PATTERN)
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None

    @field_validator("parameters")
    @classmethod
    def _object_schema(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is not None and value.get("type", "object") != "object":
            raise ValueError(
                f'parameters must be a JSON Schema of "type": "object", got {value["type"]!r}'
            )
        return value


class ToolDefinition(BaseModel):
    model_config = ConfigDict(extra="ignore")

    type: Literal["function"]
    function: FunctionDefinition

    def template_schema(self) -> dict[str, Any]:
        """The tool as chat templates read it: OpenAI's shape without the unset fields."""
        return {"type": "function", "function": self.function.model_dump(exclude_none=True)}


class FunctionName(BaseModel):
    name: str


class NamedToolChoice(BaseModel):
    type: Literal["function"]
    function: FunctionName


class ChatRequest(_SamplingRequest):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(default=None, ge=0)
    logprobs: bool = False
    top_logprobs: int | None = Field(default=None, ge=0, le=MAX_LOGPROBS)
    tools: Annotated[list[ToolDefinition], Field(max_length=MAX_TOOLS)] | None = None
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None
    parallel_tool_calls: bool | None = None


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
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'][1:]) or 'body'}: {e['msg']}" for e in exc.errors()
        )
        return _error(400, f"invalid request: {problems}", None)

    def check_rows(prompts: int, n: int) -> None:
        if prompts * n > max_rows:
            raise APIError(
                400,
                f"{prompts} prompt(s) x n={n} = {prompts * n} completions is over the limit "
                f"max_rows={max_rows}; split the request",
                param="n" if prompts == 1 else "prompt",
            )

    def check_model(request: _SamplingRequest) -> None:
        names = _served_names(policy, model_name)
        if request.model not in names:
            raise APIError(
                404,
                f"model {request.model!r} does not exist; served: {', '.join(names)}",
                param="model",
            )
        if request.stream:
            raise APIError(400, "stream=true is not supported by this server", param="stream")

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok", "model": model_name}

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        data = [{"id": model_name, "object": "model", "created": created, "owned_by": "agentenv"}]
        if policy.lora_name is not None:
            data.append(
                {
                    "id": policy.lora_name,
                    "object": "model",
                    "created": created,
                    "owned_by": "agentenv",
                    "parent": model_name,
                }
            )
        return {"object": "list", "data": data}

    @app.post("/v1/completions")
    async def completions(request: CompletionRequest) -> dict[str, Any]:
        check_model(request)
        sampling = request.sampling(default_max_tokens)
        check_rows(_prompt_count(request.prompt), request.n)
        prompts = _prompt_ids(policy, request.prompt)
        scored = request.echo and request.logprobs is not None
        if scored:
            _check_scored_lengths(policy, prompts)
        outputs = await _generate(policy, prompts, sampling, request.n)
        prompt_logprobs = (
            await _prompt_logprobs(policy, prompts) if scored else [None] * len(prompts)
        )
        choices = []
        for index, completion in enumerate(outputs):
            row = index // request.n
            choices.append(
                _completion_choice(
                    policy, request, index, prompts[row], prompt_logprobs[row], completion
                )
            )
        return {
            "id": f"cmpl-{uuid.uuid4().hex}",
            "object": "text_completion",
            "created": int(time.time()),
            "model": request.model,
            "choices": choices,
            "usage": _usage(prompts, outputs),
        }

    @app.post("/v1/chat/completions")
    async def chat_completions(request: ChatRequest) -> dict[str, Any]:
        check_model(request)
        tools, parser = _chat_tools(request, tools_parser, no_tools_reason)
        prompt = _render_chat(policy, _chat_messages(request.messages), tools)
        if request.max_completion_tokens is not None:
            request.max_tokens = request.max_completion_tokens
        sampling = request.sampling(default_max_tokens)
        check_rows(1, request.n)
        outputs = await _generate(policy, [prompt], sampling, request.n)
        choices = [
            _chat_choice(policy, request, index, completion, parser)
            for index, completion in enumerate(outputs)
        ]
        return {
            "id": f"chatcmpl-{uuid.uuid4().hex}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": request.model,
            "choices": choices,
            "prompt_token_ids": prompt,
            "usage": _usage([prompt], outputs),
        }

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


def _openai_finish(completion: Completion) -> Literal["stop", "length"]:
    return "length" if completion.finish_reason == "length" else "stop"


def _visible_text(completion: Completion, request: _SamplingRequest) -> str:
    """OpenAI semantics: the matched stop string is cut from the text unless asked for."""
    text = completion.text
    if completion.stop_string and not request.include_stop_str_in_output:
        cut = text.find(completion.stop_string)
        if cut >= 0:
            text = text[:cut]
    return text


def _token_label(policy: HFPolicy, token: int, as_ids: bool) -> str:
    return f"token_id:{token}" if as_ids else policy.tokenizer.decode([token])


def _completion_choice(
    policy: HFPolicy,
    request: CompletionRequest,
    index: int,
    prompt: list[int],
    prompt_logprobs: list[float | None] | None,
    completion: Completion,
) -> dict[str, Any]:
    text = _visible_text(completion, request)
    tokens = completion.token_ids
    logprobs: list[float | None] = list(completion.logprobs)
    if request.echo:
        text = policy.tokenizer.decode(prompt, skip_special_tokens=False) + text
        tokens = prompt + tokens
        logprobs = (prompt_logprobs or [None] * len(prompt)) + logprobs
    choice: dict[str, Any] = {
        "index": index,
        "text": text,
        "logprobs": None,
        "finish_reason": _openai_finish(completion),
        "stop_reason": completion.stop_string,
        "token_ids": completion.token_ids,
        "prompt_token_ids": prompt,
    }
    if request.logprobs is not None:
        labels = [_token_label(policy, t, request.return_tokens_as_token_ids) for t in tokens]
        offsets, position = [], 0
        for label in labels:
            offsets.append(position)
            position += len(label)
        choice["logprobs"] = {
            "tokens": labels,
            "token_logprobs": logprobs,
            "top_logprobs": [
                {label: lp} if lp is not None else None
                for label, lp in zip(labels, logprobs, strict=True)
            ],
            "text_offset": offsets,
        }
    return choice


# ---------------------------------------------------------------------------------------------
# Chat messages and tool calls
# ---------------------------------------------------------------------------------------------
def template_tool_parser(tokenizer: Any, name: str | None = None) -> tuple[Parser | None, str]:
    """The tool-call parser of ``tokenizer``'s chat template, or ``(None, why not)``.

    ``name`` (a key of :data:`~agentenv.toolcalls.PARSERS`) overrides detection; a template
    that never reads ``tools`` has no parser either way. An unknown ``name`` is a ValueError.
    """
    if name is not None and name not in PARSERS:
        raise ValueError(f"unknown tool_parser {name!r}; known: {', '.join(PARSERS)}")
    if "tools" not in chat_template_text(tokenizer):
        return None, "its chat template renders no tools"
    name = name or detect_parser(tokenizer)
    if name is None:
        return None, (
            "its chat template's tool-call format is not one this server parses "
            f"({', '.join(PARSERS)}); start the server with tool_parser=NAME to name it"
        )
    return PARSERS[name], ""


def _chat_tools(
    request: ChatRequest, parser: Parser | None, no_tools_reason: str
) -> tuple[list[dict[str, Any]] | None, Parser | None]:
    """The tools to render and the parser to read the reply with (None, None: plain chat)."""
    choice = request.tool_choice or "auto"
    tools = [t.template_schema() for t in request.tools or ()]
    if not tools:
        if choice not in ("none", "auto"):
            raise APIError(400, "tool_choice other than none/auto needs tools", param="tool_choice")
        return None, None
    names = [t["function"]["name"] for t in tools]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise APIError(400, f"tools: duplicate function names {duplicates}", param="tools")
    size = len(json.dumps(tools, separators=(",", ":")).encode())
    if size > MAX_TOOLS_BYTES:
        raise APIError(
            400, f"tools take {size} bytes of JSON; at most {MAX_TOOLS_BYTES}", param="tools"
        )
    if isinstance(choice, NamedToolChoice) and choice.function.name not in names:
        raise APIError(
            400,
            f"tool_choice names function {choice.function.name!r}, which is not in tools "
            f"({', '.join(names)})",
            param="tool_choice",
        )
    if choice == "none":
        return None, None
    if parser is None:
        raise APIError(
            400,
            f"model {request.model!r} cannot take tools: {no_tools_reason}. Send the request "
            "without tools (or with tool_choice none), or serve a model whose chat template "
            "renders tools",
            param="tools",
        )
    return tools, parser


def _chat_messages(messages: Sequence[ChatMessage]) -> list[dict[str, Any]]:
    """The request's messages as OpenAI-shaped dicts, checked (APIError 400 naming the message).

    A ``tool`` message must answer a call of the assistant message it follows (``tool``
    messages may come between them).
    """
    out: list[dict[str, Any]] = []
    open_calls: set[str] = set()
    for index, message in enumerate(messages):
        entry = _chat_message(message, index)
        if message.role == "tool":
            _check_tool_answer(entry["tool_call_id"], open_calls, index)
        else:
            open_calls = {c["id"] for c in entry.get("tool_calls", ())}
        out.append(entry)
    return out


def _chat_message(message: ChatMessage, index: int) -> dict[str, Any]:
    """One checked message: role, text content, and its name, tool calls or tool_call_id."""
    where = f"messages[{index}]"
    entry: dict[str, Any] = {"role": message.role, "content": _message_text(message, where)}
    if message.name is not None:
        entry["name"] = message.name
    if message.tool_calls:
        if message.role != "assistant":
            raise APIError(
                400, f"{where}: only assistant messages carry tool_calls", param="messages"
            )
        entry["tool_calls"] = _history_calls(message.tool_calls, where)
    if message.role == "tool":
        if not message.tool_call_id:
            raise APIError(400, f"{where}: a tool message needs a tool_call_id", param="messages")
        if message.content is None:
            raise APIError(400, f"{where}: a tool message needs content", param="messages")
        entry["tool_call_id"] = message.tool_call_id
    return entry


def _message_text(message: ChatMessage, where: str) -> str | None:
    """The content as one string (text parts joined); None stays None (templating makes it "")."""
    if not isinstance(message.content, list):
        return message.content
    texts = []
    for number, part in enumerate(message.content):
        if part.get("type", "text") != "text" or not isinstance(part.get("text"), str):
            raise APIError(
                400,
                f"{where}.content[{number}]: only text parts ({{'type': 'text', 'text': str}}) "
                f"are supported, got type {part.get('type')!r}",
                param="messages",
            )
        texts.append(part["text"])
    return "".join(texts)


def _history_calls(calls: Sequence[dict[str, Any]], where: str) -> list[dict[str, Any]]:
    """An assistant's tool calls, checked and in the OpenAI shape (arguments a JSON string)."""
    if len(calls) > MAX_TOOL_CALLS:
        raise APIError(
            400, f"{where}: {len(calls)} tool_calls; at most {MAX_TOOL_CALLS}", param="messages"
        )
    out = []
    for number, raw in enumerate(calls):
        spot = f"{where}.tool_calls[{number}]"
        if raw.get("type", "function") != "function":
            raise APIError(
                400, f"{spot}: type must be 'function', got {raw.get('type')!r}", param="messages"
            )
        try:
            call = call_from_object(raw)
        except ToolCallError as exc:
            raise APIError(400, f"{spot}: {exc}", param="messages") from exc
        if not call.id:
            raise APIError(
                400, f"{spot}: a tool call needs an id (tool messages answer it)", param="messages"
            )
        out.append(call.to_openai())
    return out


def _check_tool_answer(call_id: str, open_calls: set[str], index: int) -> None:
    if call_id in open_calls:
        return
    known = ", ".join(sorted(open_calls)) or "none: no assistant message with tool_calls before it"
    raise APIError(
        400,
        f"messages[{index}]: tool_call_id {call_id!r} answers no tool call of the assistant "
        f"message before it (its calls: {known})",
        param="messages",
    )


def _render_chat(
    policy: HFPolicy, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None
) -> list[int]:
    """The chat prompt's token ids: the messages (arguments as dicts) and tools, templated."""
    try:
        return list(
            policy.tokenizer.apply_chat_template(
                template_messages(messages),
                tools=tools,
                add_generation_prompt=True,
                tokenize=True,
                return_dict=False,
            )
        )
    except Exception as exc:  # template errors (bad roles, no template) are the client's
        raise APIError(400, f"cannot apply the chat template: {exc}", param="messages") from exc


def _reply(text: str, parser: Parser | None, parallel: bool) -> tuple[dict[str, Any], str]:
    """The assistant message for ``text`` and the parse error ("" if none).

    Calls that all parse become OpenAI ``tool_calls`` with fresh ids; anything else, including
    a failed parse, is the text as ``content``.
    """
    plain = {"role": "assistant", "content": text}
    if parser is None:
        return plain, ""
    try:
        parsed = parser(text)
    except Exception as exc:  # parsers do not raise; guard the reply against one that does
        log.warning("tool-call parser raised %s on model output", type(exc).__name__)
        return plain, f"the tool-call parser failed: {type(exc).__name__}"
    if parsed.error or not parsed.tool_calls:
        return plain, parsed.error
    calls = parsed.tool_calls if parallel else parsed.tool_calls[:1]
    return {
        "role": "assistant",
        "content": parsed.content or None,
        "tool_calls": [_wire_call(c) for c in calls],
    }, ""


def _wire_call(call: ToolCall) -> dict[str, Any]:
    return replace(call, id=f"call_{uuid.uuid4().hex[:24]}").to_openai()


def _chat_choice(
    policy: HFPolicy,
    request: ChatRequest,
    index: int,
    completion: Completion,
    parser: Parser | None,
) -> dict[str, Any]:
    message, error = _reply(
        _visible_text(completion, request), parser, request.parallel_tool_calls is not False
    )
    choice: dict[str, Any] = {
        "index": index,
        "message": message,
        "logprobs": _chat_logprobs(policy, completion) if request.logprobs else None,
        "finish_reason": "tool_calls" if "tool_calls" in message else _openai_finish(completion),
        "stop_reason": completion.stop_string,
        "token_ids": completion.token_ids,
    }
    if error:
        choice["tool_parse_error"] = error
    return choice


def _chat_logprobs(policy: HFPolicy, completion: Completion) -> dict[str, Any]:
    content = []
    for token, lp in zip(completion.token_ids, completion.logprobs, strict=True):
        label = policy.tokenizer.decode([token])
        content.append(
            {
                "token": label,
                "logprob": lp,
                "bytes": list(label.encode("utf-8")),
                "top_logprobs": [],
            }
        )
    return {"content": content}


def _usage(prompts: Sequence[list[int]], outputs: Sequence[Completion]) -> dict[str, int]:
    prompt_tokens = sum(len(p) for p in prompts)
    completion_tokens = sum(len(c.token_ids) for c in outputs)
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


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
    from agentenv.policies.specs import load_policy

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
    import uvicorn

    app = create_app_from_spec(spec, model_name=model_name, **policy_kwargs)
    uvicorn.run(app, host=host, port=port, log_level=log_level)
