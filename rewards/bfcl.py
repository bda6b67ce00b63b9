"""BFCL's AST checker for single-turn function calling, as pure functions.

The Berkeley Function Calling Leaderboard (Patil et al., "The Berkeley Function Calling
Leaderboard (BFCL): From Tool Use to Agentic Evaluation of Large Language Models", ICML 2025;
code: ``ShishirPatil/gorilla``, ``berkeley-function-call-leaderboard/bfcl_eval/eval_checker/
ast_eval/ast_checker.py``) judges a model's calls against a *possible answer*: one
``{function_name: {param: [allowed values]}}`` entry per expected call, where ``""`` among the
allowed values means the parameter may be left out. The function docs use BFCL's schema
(``parameters.type == "dict"``; Python type names ``string``, ``integer``, ``float``,
``boolean``, ``array``, ``tuple``, ``dict``, ``any``).

One call (:func:`check_call`) is checked in this order, stopping at the first failure (the
``error_type`` strings are BFCL's):

1. the name is the expected function's (``dots_to_underscores``: ``a.b`` may be called ``a_b``,
   as OpenAI-style names require) — ``simple_function_checker:wrong_func_name``;
2. every ``required`` parameter is present — ``…:missing_required``;
3. every given parameter is both in the schema and in the possible answer —
   ``…:unexpected_param``;
4. its type is the schema's (strict: a bool is not an integer; an integer is accepted for a
   float; a Python tuple is read as a list where the schema says ``tuple``; the items of an ``array``/``tuple`` are type-checked one
   level deep) — ``type_error:simple`` / ``type_error:nested``. BFCL's *variable* rule: when the
   possible answer lists values of another type than the schema's (a variable name where a
   number is expected), a value of that type passes and is compared as is;
5. its value is allowed: strings are *standardized* (spaces and ``, . / - _ * ^`` removed,
   lowercased, ``'`` → ``"``) on both sides before the membership test; lists are compared
   element-wise with their strings standardized; a dict must match one allowed dict key by key
   (keys outside it are ``value_error:dict_key``, values outside its allowed lists
   ``value_error:dict_value``, its keys not given must allow ``""``); a list of dicts matches an
   allowed list of the same length dict by dict; anything else must be among the allowed
   values — ``value_error:string`` / ``…:list/tuple`` / ``…:dict_*`` / ``…:others``;
6. every parameter of the possible answer that was not given allows ``""`` —
   ``simple_function_checker:missing_optional``.

Categories (:func:`checker_for` maps BFCL's category names to these):

- ``simple``: exactly one call, checked as above;
- ``multiple``: several functions offered, exactly one call, checked against the expected one;
- ``parallel`` and ``parallel_multiple``: as many calls as expected, matched greedily and
  order-free (each expected call, in order, takes the first still unmatched call that passes);
- ``irrelevance``: no function fits, valid iff no call was made;
- ``relevance`` (``live_relevance``): valid iff at least one call was made.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from agentenv.toolcalls import ToolCall

CHECKERS: tuple[str, ...] = (
    "simple",
    "multiple",
    "parallel",
    "parallel_multiple",
    "irrelevance",
    "relevance",
)
"""The checkers of :func:`check`; BFCL category names map onto them with :func:`checker_for`."""

UNSUPPORTED_MARKERS: tuple[str, ...] = (
    "java",
    "multi_turn",
    "memory",
    "web_search",
    "format_sensitivity",
)
"""Parts of BFCL category names whose checking differs (Java/JavaScript type converters,
stateful execution, agentic tasks): :func:`checker_for` refuses them."""

PYTHON_TYPES: dict[str, type] = {
    "string": str,
    "integer": int,
    "float": float,
    "number": float,
    "boolean": bool,
    "array": list,
    "tuple": list,
    "dict": dict,
    "object": dict,
}
"""BFCL schema type names (and their JSON-Schema synonyms) → the Python type a value must have.
``any`` and unknown names constrain nothing."""

_STANDARDIZE = re.compile(r"[ ,./\-_*^]")

Call = ToolCall | Mapping[str, Mapping[str, Any]]
"""A model call: a :class:`ToolCall`, or BFCL's ``{function_name: {param: value}}``."""


@dataclass(frozen=True)
class ASTResult:
    """The checker's verdict: ``valid``, and when not, BFCL's ``error_type`` and a message."""

    valid: bool
    error_type: str = ""
    message: str = ""


VALID = ASTResult(True)


def _fail(error_type: str, message: str) -> ASTResult:
    return ASTResult(False, error_type, message)


# ---------------------------------------------------------------------------------------------
# Entry points
# ---------------------------------------------------------------------------------------------
def checker_for(category: str) -> str:
    """The checker (one of :data:`CHECKERS`) of a BFCL category name: ``simple_python`` and
    ``live_simple`` → ``simple``, ``live_parallel_multiple`` → ``parallel_multiple``, …

    Raises ``ValueError`` for categories this checker does not implement
    (:data:`UNSUPPORTED_MARKERS`) or does not recognise.
    """
    name = category.lower()
    if any(marker in name for marker in UNSUPPORTED_MARKERS):
        raise ValueError(
            f"BFCL category {category!r} is not checked by the single-turn Python AST checker "
            f"(supported: {', '.join(CHECKERS)} and their live_ forms)"
        )
    if "irrelevance" in name:
        return "irrelevance"
    if "relevance" in name:
        return "relevance"
    if "parallel" in name:
        return "parallel_multiple" if "multiple" in name else "parallel"
    if "multiple" in name:
        return "multiple"
    if "simple" in name:
        return "simple"
    raise ValueError(f"unknown BFCL category {category!r} (expected one of {', '.join(CHECKERS)})")


def check(
    functions: Sequence[Mapping[str, Any]],
    possible_answer: Sequence[Mapping[str, Mapping[str, Sequence[Any]]]],
    calls: Sequence[Call],
    category: str,
    *,
    dots_to_underscores: bool = False,
) -> ASTResult:
    """Judge ``calls`` for a task of ``category`` (a BFCL category name or a checker name).

    ``functions`` are the task's BFCL function docs, ``possible_answer`` its ground truth
    (empty for irrelevance and relevance). A possible answer naming a function that is not
    among ``functions`` is a ``ValueError`` (bad data, not a model error).
    """
    kind = checker_for(category)
    model_calls = as_calls(calls)
    if kind == "irrelevance":
        return check_irrelevance(model_calls)
    if kind == "relevance":
        return check_relevance(model_calls)
    if kind in ("parallel", "parallel_multiple"):
        return check_parallel(functions, possible_answer, model_calls, dots_to_underscores)
    if kind == "multiple":
        return check_multiple(functions, possible_answer, model_calls, dots_to_underscores)
    return check_simple(functions, possible_answer, model_calls, dots_to_underscores)


def as_calls(calls: Sequence[Call]) -> list[ToolCall]:
    """``calls`` as :class:`ToolCall` objects (``{name: args}`` mappings are converted)."""
    out = []
    for call in calls:
        if isinstance(call, ToolCall):
            out.append(call)
        elif isinstance(call, Mapping) and len(call) == 1:
            name, arguments = next(iter(call.items()))
            if not isinstance(arguments, Mapping):
                raise TypeError(f"the arguments of {name!r} must be a mapping, got {arguments!r}")
            out.append(ToolCall(str(name), dict(arguments)))
        else:
            raise TypeError(f"a call must be a ToolCall or {{name: arguments}}, got {call!r:.80}")
    return out


# ---------------------------------------------------------------------------------------------
# Categories
# ---------------------------------------------------------------------------------------------
def check_simple(
    functions: Sequence[Mapping[str, Any]],
    possible_answer: Sequence[Mapping[str, Any]],
    calls: Sequence[ToolCall],
    dots_to_underscores: bool = False,
) -> ASTResult:
    """Exactly one call, matching the one expected call."""
    if len(calls) != 1:
        return _fail("simple_function_checker:wrong_count", f"expected 1 call, got {len(calls)}")
    answer = possible_answer[0]
    return check_call(find_function(functions, answer), answer, calls[0], dots_to_underscores)


def check_multiple(
    functions: Sequence[Mapping[str, Any]],
    possible_answer: Sequence[Mapping[str, Any]],
    calls: Sequence[ToolCall],
    dots_to_underscores: bool = False,
) -> ASTResult:
    """As many calls as expected (one in BFCL's data), the first checked against the expected
    function among those offered."""
    if len(calls) != len(possible_answer):
        return _fail(
            "multiple_function_checker:wrong_count",
            f"expected {len(possible_answer)} call(s), got {len(calls)}",
        )
    answer = possible_answer[0]
    return check_call(find_function(functions, answer), answer, calls[0], dots_to_underscores)


def check_parallel(
    functions: Sequence[Mapping[str, Any]],
    possible_answer: Sequence[Mapping[str, Any]],
    calls: Sequence[ToolCall],
    dots_to_underscores: bool = False,
) -> ASTResult:
    """As many calls as expected; each expected call, in order, takes the first unmatched call
    that passes :func:`check_call` (greedy one-to-one matching, order-free)."""
    if len(calls) != len(possible_answer):
        return _fail(
            "parallel_function_checker_no_order:wrong_count",
            f"expected {len(possible_answer)} calls, got {len(calls)}",
        )
    unmatched = list(range(len(calls)))
    for number, answer in enumerate(possible_answer, 1):
        function = find_function(functions, answer)
        last = VALID
        for index in unmatched:
            last = check_call(function, answer, calls[index], dots_to_underscores)
            if last.valid:
                unmatched.remove(index)
                break
        if not last.valid:
            return _fail(
                "parallel_function_checker_no_order:cannot_find_match",
                f"no call matches expected call {number} ({answer_name(answer)}); "
                f"last mismatch: {last.message}",
            )
    return VALID


def check_irrelevance(calls: Sequence[ToolCall]) -> ASTResult:
    """Valid iff no call was made."""
    if calls:
        names = ", ".join(c.name for c in calls)
        return _fail(
            "irrelevance_error:decoder_success",
            f"no given function fits the request, but the model called {names}",
        )
    return VALID


def check_relevance(calls: Sequence[ToolCall]) -> ASTResult:
    """Valid iff at least one call was made."""
    if not calls:
        return _fail("relevance_error:decoder_failed", "a function call was expected, got none")
    return VALID


# ---------------------------------------------------------------------------------------------
# One call
# ---------------------------------------------------------------------------------------------
def answer_name(answer: Mapping[str, Any]) -> str:
    """The function name of one possible-answer entry ``{name: {param: [values]}}``."""
    return next(iter(answer))


def find_function(
    functions: Sequence[Mapping[str, Any]], answer: Mapping[str, Any]
) -> Mapping[str, Any]:
    """The doc of the function ``answer`` calls; ``ValueError`` if it is not offered."""
    name = answer_name(answer)
    for function in functions:
        if function.get("name") == name:
            return function
    offered = ", ".join(str(f.get("name")) for f in functions)
    raise ValueError(f"the possible answer calls {name!r}, which is not offered ({offered})")


def name_matches(expected: str, called: str, dots_to_underscores: bool = False) -> bool:
    """Whether ``called`` names function ``expected`` (``a.b`` as ``a_b`` when allowed)."""
    return called == expected or (dots_to_underscores and called == expected.replace(".", "_"))


def check_call(
    function: Mapping[str, Any],
    answer: Mapping[str, Mapping[str, Sequence[Any]]],
    call: ToolCall,
    dots_to_underscores: bool = False,
) -> ASTResult:
    """One call against one possible-answer entry (rules 1-6 of the module docstring)."""
    name = answer_name(answer)
    allowed = answer[name]
    if not name_matches(name, call.name, dots_to_underscores):
        return _fail(
            "simple_function_checker:wrong_func_name", f"expected {name!r}, got {call.name!r}"
        )
    parameters = function.get("parameters") or {}
    properties = parameters.get("properties") or {}
    for param in parameters.get("required") or ():
        if param not in call.arguments:
            return _fail(
                "simple_function_checker:missing_required", f"missing required parameter {param!r}"
            )
    for param, value in call.arguments.items():
        if param not in properties or param not in allowed:
            return _fail(
                "simple_function_checker:unexpected_param", f"unexpected parameter {param!r}"
            )
        result = check_param(param, value, properties[param], allowed[param])
        if not result.valid:
            return result
    for param, values in allowed.items():
        if param not in call.arguments and "" not in values:
            return _fail(
                "simple_function_checker:missing_optional",
                f"parameter {param!r} was left out but the answer needs one of {values!r}",
            )
    return VALID


def check_param(
    param: str, value: Any, schema: Mapping[str, Any], allowed: Sequence[Any]
) -> ASTResult:
    """One parameter's type (rule 4) and value (rule 5) against its schema and allowed values."""
    kind = schema.get("type")
    expected = python_type(schema)
    if kind == "tuple" and isinstance(value, tuple):
        value = list(value)
    if expected is float and type(value) is int:
        value = float(value)
    answer_type = _answer_type(allowed)
    variable = expected is not None and answer_type is not None and answer_type is not expected
    if expected is not None and type(value) is not expected:
        if not (variable and type(value) is answer_type):
            return _fail(
                "type_error:simple",
                f"parameter {param!r} must be {kind}, got {type(value).__name__} {value!r:.60}",
            )
    elif expected is list and isinstance(schema.get("items"), Mapping):
        result = _check_items(param, value, schema["items"], allowed)
        if not result.valid:
            return result
    if variable:
        return _check_member(param, value, allowed)
    return _check_value(param, value, schema, allowed)


def python_type(schema: Mapping[str, Any]) -> type | None:
    """The Python type a value of ``schema`` must have (``None``: any)."""
    kind = schema.get("type")
    return PYTHON_TYPES.get(kind) if isinstance(kind, str) else None


def standardize_string(text: str) -> str:
    """BFCL's string standardization: drop spaces and ``, . / - _ * ^``, lowercase, ``'`` → ``"``
    (so "April 1, 2024" and "april 1 2024" compare equal)."""
    return _STANDARDIZE.sub("", text).lower().replace("'", '"')


def _standardize(value: Any) -> Any:
    return standardize_string(value) if isinstance(value, str) else value


def _answer_type(allowed: Sequence[Any]) -> type | None:
    """The type of the first allowed value that is not ``""`` (the may-omit marker)."""
    return next((type(v) for v in allowed if v != ""), None)


def _item_type_ok(item: Any, expected: type | None, answer_types: set[type]) -> bool:
    return expected is None or type(item) is expected or type(item) in answer_types


def _check_items(
    param: str, value: list[Any], items: Mapping[str, Any], allowed: Sequence[Any]
) -> ASTResult:
    """The items of a list against ``items.type`` (one level; the variable rule per item)."""
    kind = items.get("type")
    expected = python_type(items)
    answer_types = {type(v) for option in allowed if isinstance(option, list) for v in option}
    for item in value:
        if not _item_type_ok(item, expected, answer_types - {expected}):
            return _fail(
                "type_error:nested",
                f"the items of {param!r} must be {kind}, got {type(item).__name__} {item!r:.60}",
            )
    return VALID


def _check_value(
    param: str, value: Any, schema: Mapping[str, Any], allowed: Sequence[Any]
) -> ASTResult:
    items = schema.get("items")
    if isinstance(value, dict):
        return _check_dict(param, value, allowed)
    if isinstance(value, list):
        if isinstance(items, Mapping) and python_type(items) is dict:
            return _check_list_of_dicts(param, value, allowed)
        return _check_list(param, value, allowed)
    if isinstance(value, str):
        options = [standardize_string(v) for v in allowed if isinstance(v, str)]
        if standardize_string(value) not in options:
            return _fail(
                "value_error:string",
                f"invalid value for {param!r}: {value!r}; expected one of {list(allowed)!r} "
                "(compared without case, spaces or punctuation)",
            )
        return VALID
    return _check_member(param, value, allowed)


def _check_member(param: str, value: Any, allowed: Sequence[Any]) -> ASTResult:
    if value not in allowed:
        return _fail(
            "value_error:others",
            f"invalid value for {param!r}: {value!r:.60}; expected one of {list(allowed)!r:.200}",
        )
    return VALID


def _check_list(param: str, value: list[Any], allowed: Sequence[Any]) -> ASTResult:
    got = [_standardize(v) for v in value]
    for option in allowed:
        if isinstance(option, list) and got == [_standardize(v) for v in option]:
            return VALID
    return _fail(
        "value_error:list/tuple",
        f"invalid value for {param!r}: {value!r:.80}; expected one of {list(allowed)!r:.200}",
    )


def _dict_problem(param: str, value: Mapping[str, Any], option: Mapping[str, Any]) -> ASTResult:
    """``value`` against one allowed dict ``{key: [allowed values]}``."""
    for key, item in value.items():
        if key not in option:
            return _fail("value_error:dict_key", f"unexpected key {key!r} in {param!r}")
        if _standardize(item) not in [_standardize(v) for v in option[key]]:
            return _fail(
                "value_error:dict_value",
                f"invalid value for {param}[{key!r}]: {item!r:.60}; expected one of "
                f"{list(option[key])!r:.200}",
            )
    for key, values in option.items():
        if key not in value and "" not in values:
            return _fail("value_error:dict_key", f"missing key {key!r} in {param!r}")
    return VALID


def _check_dict(param: str, value: Mapping[str, Any], allowed: Sequence[Any]) -> ASTResult:
    """``value`` must match one of the allowed dicts."""
    last = _fail("value_error:dict_value", f"no dict value is allowed for {param!r}")
    for option in allowed:
        if isinstance(option, Mapping):
            last = _dict_problem(param, value, option)
            if last.valid:
                return VALID
    return last


def _check_list_of_dicts(param: str, value: list[Any], allowed: Sequence[Any]) -> ASTResult:
    """``value`` must match, dict by dict, one allowed list of dicts of the same length."""
    last = _fail("value_error:list_dict_count", f"wrong number of dicts in {param!r}")
    for option in allowed:
        if not isinstance(option, list) or len(option) != len(value):
            continue
        pairs = zip(value, option, strict=True)
        last = next(
            (p for p in (_pair_problem(param, g, w) for g, w in pairs) if not p.valid), VALID
        )
        if last.valid:
            return VALID
    return last


def _pair_problem(param: str, got: Any, want: Any) -> ASTResult:
    if isinstance(got, Mapping) and isinstance(want, Mapping):
        return _dict_problem(param, got, want)
    return _fail("value_error:dict_value", f"{got!r:.60} in {param!r} does not match {want!r:.60}")
