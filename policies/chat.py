"""Chat completions with native tool calls: request schema, checks, prompt and reply.

:class:`ChatRequest` is the body of ``POST /v1/chat/completions`` (OpenAI's, with vLLM's
extensions). :func:`chat_prompt` checks its tools and history and renders the prompt through the
tokenizer's chat template; :func:`chat_choice` turns one completion into an OpenAI choice,
parsing tool calls out of the text (with ``top_logprobs`` alternatives when asked for), and
:func:`chat_stream_choices` into the ``delta`` chunks of a streamed reply. Every violation is an :class:`~agentenv.policies.api.APIError`
(HTTP 400) naming the field or message. :mod:`agentenv.policies.server` serves it.

Tool calls:

- ``tools`` (at most :data:`MAX_TOOLS`, :data:`MAX_TOOLS_BYTES` of JSON, unique names of 1-64
  letters, digits, ``_`` or ``-``) are rendered by the chat template
  (``apply_chat_template(template_messages(messages), tools=...)``, tool-call arguments as
  dicts, so templates that ``tojson`` them never double-encode). A model whose template renders
  no tools, or in no format :func:`~agentenv.toolcalls.detect_parser` recognises, gets HTTP 400
  naming the model (:func:`~agentenv.policies.server.create_app`'s ``tool_parser`` names the format
  when detection fails).
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

import json
import logging
import uuid
from collections.abc import Sequence
from dataclasses import replace
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from agentenv.policies.api import MAX_LOGPROBS, APIError, SamplingRequest, Served
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

MAX_TOOLS = 128
"""Most ``tools`` one chat request may give."""
MAX_TOOLS_BYTES = 2**20
"""Largest ``tools`` list, as compact JSON (bytes)."""
TOOL_NAME_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
"""OpenAI's function-name rule."""


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


class ChatRequest(SamplingRequest):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(default=None, ge=0)
    logprobs: bool = False
    top_logprobs: int | None = Field(default=None, ge=0, le=MAX_LOGPROBS)
    tools: Annotated[list[ToolDefinition], Field(max_length=MAX_TOOLS)] | None = None
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None
    parallel_tool_calls: bool | None = None


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


def chat_prompt(
    tokenizer: Any, request: ChatRequest, parser: Parser | None, no_tools_reason: str
) -> tuple[list[int], Parser | None]:
    """The checked request's prompt token ids and the parser to read its replies with.

    ``parser`` and ``no_tools_reason`` are :func:`template_tool_parser`'s answer for
    ``tokenizer``; the parser comes back None when the reply is not to be parsed.
    """
    tools, reply_parser = chat_tools(request, parser, no_tools_reason)
    return render_chat(tokenizer, chat_messages(request.messages), tools), reply_parser


def chat_tools(
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


def chat_messages(messages: Sequence[ChatMessage]) -> list[dict[str, Any]]:
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


def render_chat(
    tokenizer: Any, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None
) -> list[int]:
    """The chat prompt's token ids: the messages (arguments as dicts) and tools, templated."""
    try:
        return list(
            tokenizer.apply_chat_template(
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


TopLogprobs = list[list[tuple[int, float]]]
"""Per generated token, its ``top_logprobs`` alternatives as ``(token id, logprob)``."""


def check_chat_logprobs(request: ChatRequest) -> None:
    """OpenAI's rule: ``top_logprobs`` needs ``logprobs: true``."""
    if request.top_logprobs and not request.logprobs:
        raise APIError(400, "top_logprobs needs logprobs=true", param="top_logprobs")


def chat_choice(
    tokenizer: Any,
    request: ChatRequest,
    index: int,
    reply: Served,
    parser: Parser | None,
    tops: TopLogprobs | None = None,
) -> dict[str, Any]:
    """One OpenAI chat choice for ``reply`` (``tops``: its ``top_logprobs``, if asked for)."""
    message, error = _reply(reply.text, parser, request.parallel_tool_calls is not False)
    choice: dict[str, Any] = {
        "index": index,
        "message": message,
        "logprobs": _chat_logprobs(tokenizer, reply, tops) if request.logprobs else None,
        "finish_reason": "tool_calls" if "tool_calls" in message else reply.finish_reason,
        "stop_reason": reply.stop_reason,
        "token_ids": reply.token_ids,
    }
    if error:
        choice["tool_parse_error"] = error
    return choice


def chat_stream_choices(choice: dict[str, Any]) -> list[dict[str, Any]]:
    """The streamed choices (``delta`` s) that add up to the finished ``choice``: the role, the
    content with its logprobs, the tool calls, then the finish reason."""
    message, index = choice["message"], choice["index"]
    deltas: list[dict[str, Any]] = [
        {"index": index, "delta": {"role": "assistant", "content": ""}, "logprobs": None}
    ]
    if message.get("content") or choice["logprobs"]:
        deltas.append(
            {
                "index": index,
                "delta": {"content": message.get("content") or ""},
                "logprobs": choice["logprobs"],
            }
        )
    if message.get("tool_calls"):
        calls = [{"index": i, **call} for i, call in enumerate(message["tool_calls"])]
        deltas.append({"index": index, "delta": {"tool_calls": calls}, "logprobs": None})
    for delta in deltas:
        delta["finish_reason"] = None
    deltas.append(
        {
            "index": index,
            "delta": {},
            "logprobs": None,
            "finish_reason": choice["finish_reason"],
            "stop_reason": choice["stop_reason"],
            "token_ids": choice["token_ids"],
        }
    )
    return deltas


def _logprob_entry(tokenizer: Any, token: int, logprob: float) -> dict[str, Any]:
    label = tokenizer.decode([token])
    return {"token": label, "logprob": logprob, "bytes": list(label.encode("utf-8"))}


def _chat_logprobs(tokenizer: Any, reply: Served, tops: TopLogprobs | None) -> dict[str, Any]:
    content = []
    for position, (token, lp) in enumerate(zip(reply.token_ids, reply.logprobs, strict=True)):
        alternatives = tops[position] if tops is not None else []
        content.append(
            {
                **_logprob_entry(tokenizer, token, lp),
                "top_logprobs": [_logprob_entry(tokenizer, t, v) for t, v in alternatives],
            }
        )
    return {"content": content}
