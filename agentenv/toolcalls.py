"""Native function calls: the assistant message with tool calls, and the parsers that read it.

A model trained on native tool calls writes them in its chat template's format. Three families
cover the templates models are trained on:

- ``hermes`` (Qwen2.5, Qwen3, Hermes, the tiny model): ``<tool_call>{"name": …, "arguments": …}
  </tool_call>`` blocks, one per call; several blocks are parallel calls. A block may also hold
  one JSON object per line (ToolRL's protocol) and ``"parameters"`` in place of ``"arguments"``.
- ``llama3_json`` (Llama-3.1/3.2 JSON tool use): the whole message is
  ``{"name": …, "parameters": …}`` (optionally after ``<|python_tag|>``; several separated by
  ``;``).
- ``pythonic`` (Llama-3.2/4 pythonic tool use): the whole message is ``[f(a=1), g(b="x")]``.

:func:`parser_for` picks the family from the tokenizer's chat template. A parser never raises on
model output: text that tries to call and fails comes back as an :class:`AssistantMessage` whose
``error`` says why, so the env can answer with an explanation and ``action_valid=False``.

An env with native tools receives the parsed message as its action, encoded by
:meth:`AssistantMessage.to_action` as an OpenAI chat-completions assistant message (JSON);
:func:`decode_action` reads it back, and reads any other text with the ``hermes`` parser (what a
person types in ``agentenv play`` or a model prompted with the text protocol writes).
"""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

MAX_TOOL_CALLS = 64
"""Calls one assistant message may carry; a parser reports more as an error."""


class ToolCallError(ValueError):
    """A tool call that cannot be read (bad JSON, no name, arguments that are not an object)."""


@dataclass(frozen=True)
class ToolCall:
    """One function call: ``name`` with JSON-object ``arguments`` (always a dict here)."""

    name: str
    arguments: dict[str, Any] = field(default_factory=dict)
    id: str = ""

    def to_openai(self) -> dict[str, Any]:
        """The OpenAI wire shape: ``arguments`` as a JSON string."""
        return {
            "id": self.id,
            "type": "function",
            "function": {"name": self.name, "arguments": json.dumps(self.arguments)},
        }

    def to_template(self) -> dict[str, Any]:
        """The shape chat templates read: ``arguments`` as a dict (a string would be
        double-encoded by templates that apply ``tojson`` unconditionally, like Qwen2.5's)."""
        return {
            "id": self.id,
            "type": "function",
            "function": {"name": self.name, "arguments": self.arguments},
        }


@dataclass(frozen=True)
class AssistantMessage:
    """What an assistant turn said: free ``content`` and the ``tool_calls`` it made.

    ``error`` is non-empty when the text tried to call a tool and the call could not be read;
    the calls that could be read are kept in ``tool_calls``.
    """

    content: str = ""
    tool_calls: tuple[ToolCall, ...] = ()
    error: str = ""

    def with_ids(self, prefix: str) -> AssistantMessage:
        """Calls without an id get ``{prefix}{i}`` (ids are what tool messages answer to)."""
        calls = tuple(
            c if c.id else replace(c, id=f"{prefix}{i}") for i, c in enumerate(self.tool_calls)
        )
        return replace(self, tool_calls=calls)

    def to_openai(self) -> dict[str, Any]:
        """An OpenAI chat-completions assistant message."""
        message: dict[str, Any] = {"role": "assistant", "content": self.content or None}
        if self.tool_calls:
            message["tool_calls"] = [c.to_openai() for c in self.tool_calls]
        return message

    def to_template(self) -> dict[str, Any]:
        """The message as chat templates read it (``content`` a string, arguments dicts)."""
        message: dict[str, Any] = {"role": "assistant", "content": self.content}
        if self.tool_calls:
            message["tool_calls"] = [c.to_template() for c in self.tool_calls]
        return message

    def to_action(self) -> str:
        """The env action: the OpenAI message as JSON, with ``parse_error`` when there is one."""
        message = self.to_openai()
        if self.error:
            message["parse_error"] = self.error
        return json.dumps(message, ensure_ascii=False)


# ---------------------------------------------------------------------------------------------
# Normalisation
# ---------------------------------------------------------------------------------------------
def normalize_arguments(arguments: Any) -> dict[str, Any]:
    """``arguments`` as a dict: a JSON-object string is decoded, ``None``/``""`` is ``{}``."""
    if arguments is None or arguments == "":
        return {}
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments)
        except (ValueError, RecursionError) as exc:
            raise ToolCallError(f"arguments are not valid JSON: {exc}") from None
    if not isinstance(arguments, dict):
        raise ToolCallError(
            f"arguments must be a JSON object, got {type(arguments).__name__} {arguments!r:.80}"
        )
    return arguments


def call_from_object(obj: Any) -> ToolCall:
    """A :class:`ToolCall` from ``{"name", "arguments"|"parameters"}`` or the OpenAI shape
    ``{"id", "type": "function", "function": {"name", "arguments"}}``."""
    if not isinstance(obj, Mapping):
        raise ToolCallError(f"a tool call must be a JSON object, got {type(obj).__name__}")
    call_id = obj.get("id") or ""
    if isinstance(obj.get("function"), Mapping):
        obj = obj["function"]
    name = obj.get("name")
    if not isinstance(name, str) or not name:
        raise ToolCallError(f'a tool call needs a "name" string, got {obj!r:.120}')
    arguments = obj["arguments"] if "arguments" in obj else obj.get("parameters")
    return ToolCall(name, normalize_arguments(arguments), str(call_id))


def template_messages(messages: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """``messages`` ready for a chat template: tool-call arguments as dicts, ``None`` content as
    ``""``. OpenAI-shaped history (string arguments) renders the same in every template."""
    out = []
    for message in messages:
        message = dict(message)
        if message.get("content") is None:
            message["content"] = ""
        if message.get("tool_calls"):
            message["tool_calls"] = [
                call_from_object(c).to_template() for c in message["tool_calls"]
            ]
        out.append(message)
    return out


def message_from_openai(message: Mapping[str, Any]) -> AssistantMessage:
    """An :class:`AssistantMessage` from an OpenAI assistant message (errors kept, not raised)."""
    content = message.get("content") or ""
    if not isinstance(content, str):
        return AssistantMessage(str(content), (), "content must be a string")
    raw = message.get("tool_calls") or []
    if not isinstance(raw, list):
        return AssistantMessage(content, (), '"tool_calls" must be a list')
    calls, errors = _read_objects(raw)
    error = str(message.get("parse_error") or "") or "; ".join(errors)
    return AssistantMessage(content, tuple(calls), error)


def decode_action(action: str) -> AssistantMessage:
    """The assistant message an env action carries.

    An OpenAI assistant message as JSON (what the rollout sends for native tool calls) is read as
    such; any other text is parsed with the ``hermes`` parser (``<tool_call>`` blocks; text
    without them is a reply with no calls).
    """
    stripped = action.strip()
    if stripped.startswith("{") and '"role"' in stripped:
        try:
            message = json.loads(stripped)
        except (ValueError, RecursionError):
            message = None
        if isinstance(message, dict) and message.get("role") == "assistant":
            return message_from_openai(message)
    return parse_hermes(action)


def _read_objects(objects: Sequence[Any]) -> tuple[list[ToolCall], list[str]]:
    calls: list[ToolCall] = []
    errors: list[str] = []
    if len(objects) > MAX_TOOL_CALLS:
        return [], [f"{len(objects)} tool calls in one message; at most {MAX_TOOL_CALLS}"]
    for i, obj in enumerate(objects, 1):
        try:
            calls.append(call_from_object(obj))
        except ToolCallError as exc:
            errors.append(f"tool call {i}: {exc}")
    return calls, errors


# ---------------------------------------------------------------------------------------------
# Parsers
# ---------------------------------------------------------------------------------------------
_TOOL_CALL_BLOCK = re.compile(r"<tool_call>(.*?)(</tool_call>|\Z)", re.DOTALL)


def _json_values(text: str) -> Iterator[Any]:
    """Consecutive JSON values in ``text`` (whitespace, newlines or ``;`` between them)."""
    decoder = json.JSONDecoder()
    i, n = 0, len(text)
    while True:
        while i < n and text[i] in " \t\r\n;":
            i += 1
        if i >= n:
            return
        value, i = decoder.raw_decode(text, i)
        yield value


def _objects_in(text: str) -> list[Any]:
    """The JSON objects of one call block: one object, a list of them, or one per line."""
    values = list(_json_values(text))
    if len(values) == 1 and isinstance(values[0], list):
        return values[0]
    return values


def parse_hermes(text: str) -> AssistantMessage:
    """``<tool_call>…</tool_call>`` blocks; the text outside them is the content."""
    objects: list[Any] = []
    errors: list[str] = []
    pieces: list[str] = []
    end = 0
    for number, match in enumerate(_TOOL_CALL_BLOCK.finditer(text), 1):
        pieces.append(text[end : match.start()])
        end = match.end()
        if not match.group(2):
            errors.append(f"tool call block {number} is not closed with </tool_call>")
            continue
        try:
            found = _objects_in(match.group(1))
        except (ValueError, RecursionError) as exc:
            errors.append(f"tool call block {number} is not valid JSON: {exc}")
            continue
        if not found:
            errors.append(f"tool call block {number} is empty")
        objects.extend(found)
    pieces.append(text[end:])
    calls, call_errors = _read_objects(objects)
    content = "".join(pieces).strip()
    if "</tool_call>" in content:
        errors.append("</tool_call> without an opening <tool_call>")
    return AssistantMessage(content, tuple(calls), "; ".join(errors + call_errors))


def parse_llama3_json(text: str) -> AssistantMessage:
    """A message that is one or more ``{"name", "parameters"}`` objects (``;``-separated)."""
    body = text.strip()
    if body.startswith("<|python_tag|>"):
        body = body[len("<|python_tag|>") :].strip()
    if not body.startswith("{"):
        return AssistantMessage(text.strip())
    try:
        objects = list(_json_values(body))
    except (ValueError, RecursionError) as exc:
        if '"name"' in body:
            return AssistantMessage(text.strip(), (), f"tool call is not valid JSON: {exc}")
        return AssistantMessage(text.strip())
    if not all(isinstance(o, dict) and "name" in o for o in objects):
        return AssistantMessage(text.strip())
    calls, errors = _read_objects(objects)
    return AssistantMessage("", tuple(calls), "; ".join(errors))


_PYTHON_TAGS = ("<|python_start|>", "<|python_end|>")


def parse_pythonic(text: str) -> AssistantMessage:
    """A message that is a Python list of calls with literal keyword arguments."""
    body = text.strip()
    for tag in _PYTHON_TAGS:
        body = body.replace(tag, "")
    body = body.strip()
    if not (body.startswith("[") and body.endswith("]") and "(" in body):
        return AssistantMessage(text.strip())
    try:
        tree = ast.parse(body, mode="eval").body
    except (SyntaxError, ValueError, RecursionError, MemoryError) as exc:
        return AssistantMessage(text.strip(), (), f"tool call list is not valid Python: {exc.msg}")
    if not isinstance(tree, ast.List) or not all(isinstance(e, ast.Call) for e in tree.elts):
        return AssistantMessage(text.strip())
    if len(tree.elts) > MAX_TOOL_CALLS:
        return AssistantMessage("", (), f"{len(tree.elts)} tool calls; at most {MAX_TOOL_CALLS}")
    calls, errors = [], []
    for i, node in enumerate(tree.elts, 1):
        try:
            calls.append(_pythonic_call(node))
        except ToolCallError as exc:
            errors.append(f"tool call {i}: {exc}")
    return AssistantMessage("", tuple(calls), "; ".join(errors))


def _pythonic_call(node: ast.Call) -> ToolCall:
    name = ast.unparse(node.func)
    if not re.fullmatch(r"[A-Za-z_][\w.\-]*", name):
        raise ToolCallError(f"{name!r} is not a function name")
    if node.args:
        raise ToolCallError(f"{name}: arguments must be passed by keyword")
    arguments: dict[str, Any] = {}
    for keyword in node.keywords:
        if keyword.arg is None:
            raise ToolCallError(f"{name}: ** arguments are not allowed")
        try:
            arguments[keyword.arg] = _literal(keyword.value)
        except (ValueError, RecursionError):
            raise ToolCallError(f"{name}: argument {keyword.arg} is not a literal value") from None
    return ToolCall(name, arguments)


_JSON_NAMES = {"true": True, "false": False, "null": None}


def _literal(node: ast.AST) -> Any:
    """A Python literal, also accepting JSON's ``true``/``false``/``null`` (templates that write
    arguments with ``tojson`` produce them)."""
    if isinstance(node, ast.Name) and node.id in _JSON_NAMES:
        return _JSON_NAMES[node.id]
    if isinstance(node, (ast.List, ast.Tuple)):
        return [_literal(e) for e in node.elts]
    if isinstance(node, ast.Dict) and None not in node.keys:
        return {_literal(k): _literal(v) for k, v in zip(node.keys, node.values, strict=True)}
    return ast.literal_eval(node)


Parser = Callable[[str], AssistantMessage]

PARSERS: dict[str, Parser] = {
    "hermes": parse_hermes,
    "llama3_json": parse_llama3_json,
    "pythonic": parse_pythonic,
}
"""Tool-call parsers by family name."""


def chat_template_text(tokenizer: Any) -> str:
    """The tokenizer's chat template source (the ``tool_use`` one where there are several)."""
    template = getattr(tokenizer, "chat_template", None) or ""
    if isinstance(template, dict):
        template = template.get("tool_use") or template.get("default") or ""
    if isinstance(template, list):
        named = {t.get("name"): t.get("template", "") for t in template}
        template = named.get("tool_use") or named.get("default") or ""
    return str(template)


def detect_parser(tokenizer: Any) -> str | None:
    """The parser family a chat template is written for, or ``None`` if it renders no tools."""
    template = chat_template_text(tokenizer)
    if "tools" not in template:
        return None
    if "<tool_call>" in template:
        return "hermes"
    if "[func_name1(" in template or "<|python_start|>" in template:
        return "pythonic"
    if '"parameters"' in template or "<|python_tag|>" in template or "ipython" in template:
        return "llama3_json"
    return None


def parser_for(tokenizer: Any, name: str | None = None) -> Parser:
    """The tool-call parser for ``tokenizer``: ``name`` if given, else detected from its
    template. A template that renders no tools is an error naming the two ways out."""
    if name is None:
        name = detect_parser(tokenizer)
        if name is None:
            raise ToolCallError(
                "the tokenizer's chat template renders no tools (no tool-call format found); "
                f"name a parser ({', '.join(PARSERS)}) with tool_parser=, or give the env "
                "protocol='text' to describe the tools in the system prompt instead"
            )
    if name not in PARSERS:
        raise ToolCallError(f"unknown tool-call parser {name!r}; known: {', '.join(PARSERS)}")
    return PARSERS[name]
