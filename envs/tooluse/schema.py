"""Tools as data: a name, a description and a JSON-Schema of parameters; built from a Python
function's signature, and used to check a call's arguments before anything runs.

:func:`function_tool` reads type hints and a Google-style docstring (``Args:`` block), the way
``transformers.utils.get_json_schema`` does, without requiring a description for every argument.
:func:`check_arguments` implements the part of JSON Schema tool schemas use (``type``,
``properties``, ``required``, ``additionalProperties``, ``enum``, ``items``, nested objects) and
returns explanations a model can act on.
"""

from __future__ import annotations

import inspect
import re
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, get_args, get_origin

_JSON_TYPES: dict[Any, str] = {
    str: "string",
    int: "integer",
    float: "number",
    bool: "boolean",
    list: "array",
    tuple: "array",
    dict: "object",
    type(None): "null",
}
_NAME = re.compile(r"^[A-Za-z0-9_\-]{1,64}$")


@dataclass(frozen=True)
class Tool:
    """One callable tool as a model sees it."""

    name: str
    description: str
    parameters: Mapping[str, Any]

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise ValueError(
                f"tool name {self.name!r} must be 1-64 letters, digits, '_' or '-' "
                "(the OpenAI function-name rule)"
            )

    def schema(self) -> dict[str, Any]:
        """The OpenAI tool schema: ``{"type": "function", "function": {...}}``."""
        return {
            "type": "function",
            "function": {
                "name": self.name,
                "description": self.description,
                "parameters": dict(self.parameters),
            },
        }


def function_tool(
    fn: Callable[..., Any], *, name: str | None = None, skip: tuple[str, ...] = ()
) -> Tool:
    """The :class:`Tool` of ``fn``: parameters from its signature (``skip`` hides injected ones,
    like a database handle), descriptions from its docstring's first paragraph and ``Args:``."""
    doc = inspect.getdoc(fn) or ""
    summary, arg_docs = _parse_docstring(doc)
    hints = typing.get_type_hints(fn)
    properties: dict[str, Any] = {}
    required: list[str] = []
    for param in inspect.signature(fn).parameters.values():
        if param.name in skip or param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            continue
        prop = type_schema(hints.get(param.name, Any))
        if param.name in arg_docs:
            prop["description"] = arg_docs[param.name]
        properties[param.name] = prop
        if param.default is inspect.Parameter.empty:
            required.append(param.name)
    parameters = {
        "type": "object",
        "properties": properties,
        "required": required,
        "additionalProperties": False,
    }
    return Tool(name or fn.__name__, summary, parameters)


def _parse_docstring(doc: str) -> tuple[str, dict[str, str]]:
    summary = doc.split("\n\n", 1)[0].replace("\n", " ").strip()
    args: dict[str, str] = {}
    match = re.search(r"^Args:\s*\n(.*?)(?:\n\s*\n|\Z)", doc, re.DOTALL | re.MULTILINE)
    if match:
        current = None
        for line in match.group(1).splitlines():
            head = re.match(r"^\s*(\w+)(?:\s*\([^)]*\))?:\s*(.*)$", line)
            if head:
                current = head.group(1)
                args[current] = head.group(2).strip()
            elif current and line.strip():
                args[current] += " " + line.strip()
    return summary, args


def type_schema(hint: Any) -> dict[str, Any]:
    """The JSON Schema of a Python type hint (str, int, float, bool, None, list[T], dict,
    Literal[...], Optional/Union)."""
    origin = get_origin(hint)
    if hint is Any:
        return {}
    if origin is Literal:
        values = list(get_args(hint))
        kinds = {_JSON_TYPES[type(v)] for v in values}
        return {"type": kinds.pop(), "enum": values} if len(kinds) == 1 else {"enum": values}
    if origin in (typing.Union, types.UnionType):
        options = [type_schema(a) for a in get_args(hint)]
        if all(set(o) == {"type"} for o in options):
            return {"type": [o["type"] for o in options]}
        return {"anyOf": options}
    if origin in (list, tuple, set) or hint in (list, tuple, set):
        args = get_args(hint)
        schema: dict[str, Any] = {"type": "array"}
        if args and args[0] is not Ellipsis:
            schema["items"] = type_schema(args[0])
        return schema
    if origin is dict or hint is dict:
        return {"type": "object"}
    if hint in _JSON_TYPES:
        return {"type": _JSON_TYPES[hint]}
    raise TypeError(f"no JSON Schema for type hint {hint!r}")


# ---------------------------------------------------------------------------------------------
# Checking arguments
# ---------------------------------------------------------------------------------------------
def _is_type(value: Any, kind: str) -> bool:
    if kind == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind == "string":
        return isinstance(value, str)
    if kind == "boolean":
        return isinstance(value, bool)
    if kind == "array":
        return isinstance(value, list)
    if kind in ("object", "dict"):
        return isinstance(value, dict)
    if kind == "null":
        return value is None
    return True  # a type this checker does not know constrains nothing


def _describe(value: Any) -> str:
    kind = {
        bool: "boolean",
        int: "integer",
        float: "number",
        str: "string",
        list: "array",
        dict: "object",
        type(None): "null",
    }.get(type(value), type(value).__name__)
    text = repr(value)
    return f"{kind} {text[:60] + '…' if len(text) > 60 else text}"


def check_value(value: Any, schema: Mapping[str, Any], where: str) -> list[str]:
    """Why ``value`` does not satisfy ``schema`` (empty when it does)."""
    if "anyOf" in schema:
        if any(not check_value(value, s, where) for s in schema["anyOf"]):
            return []
        return [f"{where} matches none of the allowed forms, got {_describe(value)}"]
    kind = schema.get("type")
    kinds = kind if isinstance(kind, list) else [kind] if kind else []
    if kinds and not any(_is_type(value, k) for k in kinds):
        return [f"{where} must be {' or '.join(kinds)}, got {_describe(value)}"]
    if "enum" in schema and value not in schema["enum"]:
        allowed = ", ".join(map(repr, schema["enum"][:20]))
        return [f"{where} must be one of {allowed}, got {_describe(value)}"]
    if isinstance(value, list) and isinstance(schema.get("items"), Mapping):
        errors: list[str] = []
        for i, item in enumerate(value):
            errors += check_value(item, schema["items"], f"{where}[{i}]")
        return errors
    if isinstance(value, dict) and ("properties" in schema or "required" in schema):
        return check_object(value, schema, where)
    return []


def check_object(value: Mapping[str, Any], schema: Mapping[str, Any], where: str) -> list[str]:
    """Missing required keys, unexpected keys (unless ``additionalProperties`` allows them) and
    each property's own errors."""
    properties: Mapping[str, Any] = schema.get("properties") or {}
    errors = [
        f"{where or 'the call'} is missing required argument {key!r}"
        for key in schema.get("required") or ()
        if key not in value
    ]
    extra = schema.get("additionalProperties", not properties)
    for key, item in value.items():
        if key in properties:
            errors += check_value(item, properties[key], f"{where}.{key}" if where else key)
        elif extra is False:
            known = ", ".join(properties) or "none"
            errors.append(
                f"unexpected argument {where + '.' if where else ''}{key!r} (arguments: {known})"
            )
    return errors


def check_arguments(tool: Tool, arguments: Mapping[str, Any]) -> list[str]:
    """Why ``arguments`` are not a valid call of ``tool`` (empty when they are)."""
    return check_object(arguments, tool.parameters, "")
