"""Tool-call parsers: every family round-trips any calls, and no text makes one raise."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agentenv.toolcalls import (
    PARSERS,
    AssistantMessage,
    ToolCall,
    ToolCallError,
    decode_action,
    normalize_arguments,
    parse_hermes,
    parse_llama3_json,
    parse_pythonic,
    parser_for,
    template_messages,
)

names = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,20}", fullmatch=True)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**12), 10**12),
    st.floats(allow_nan=False, allow_infinity=False, width=32),
    st.text(max_size=20),
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=6,
)
arguments = st.dictionaries(names, values, max_size=4)
calls = st.lists(st.builds(ToolCall, names, arguments), min_size=1, max_size=4)


def _hermes(calls: list[ToolCall], content: str = "") -> str:
    blocks = [
        f"<tool_call>\n{json.dumps({'name': c.name, 'arguments': c.arguments})}\n</tool_call>"
        for c in calls
    ]
    return "\n".join([content, *blocks] if content else blocks)


def _llama(calls: list[ToolCall]) -> str:
    return "; ".join(json.dumps({"name": c.name, "parameters": c.arguments}) for c in calls)


def _pythonic(calls: list[ToolCall]) -> str:
    def call(c: ToolCall) -> str:
        return f"{c.name}({', '.join(f'{k}={json.dumps(v, ensure_ascii=False)}' for k, v in c.arguments.items())})"

    return "[" + ", ".join(map(call, calls)) + "]"


@settings(max_examples=150, deadline=None)
@given(calls=calls, content=st.text(alphabet=st.characters(blacklist_characters="<>"), max_size=30))
def test_every_family_round_trips_its_calls(calls, content):
    for text, parse in (
        (_hermes(calls, content), parse_hermes),
        (_llama(calls), parse_llama3_json),
        (_pythonic(calls), parse_pythonic),
    ):
        message = parse(text)
        assert message.error == "", (text, message.error)
        assert [(c.name, c.arguments) for c in message.tool_calls] == [
            (c.name, c.arguments) for c in calls
        ]
    assert parse_hermes(_hermes(calls, content)).content == content.strip()


@settings(max_examples=300, deadline=None)
@given(
    text=st.text(max_size=200)
    | st.from_regex(r"(<tool_call>|\[|\{|\(|\"|\]|\)|</tool_call>|name|:|\w)*")
)
def test_no_text_makes_a_parser_raise(text):
    for parse in (*PARSERS.values(), decode_action):
        message = parse(text)
        assert isinstance(message, AssistantMessage)


@settings(max_examples=100, deadline=None)
@given(calls=calls, content=st.text(max_size=20))
def test_an_action_carries_its_message_exactly(calls, content):
    message = AssistantMessage(content, tuple(calls)).with_ids("call_")
    assert decode_action(message.to_action()) == message


@pytest.mark.parametrize(
    "text, error",
    [
        ('<tool_call>{"name": "f", "arguments": {"a": 1}</tool_call>', "not valid JSON"),
        ('<tool_call>{"name": "f"', "not closed"),
        ("<tool_call></tool_call>", "is empty"),
        ('<tool_call>{"arguments": {}}</tool_call>', 'needs a "name"'),
        ('<tool_call>{"name": "f", "arguments": [1]}</tool_call>', "must be a JSON object"),
        ('<tool_call>{"name": "f", "arguments": "{bad"}</tool_call>', "not valid JSON"),
        ("ok </tool_call>", "without an opening"),
        ("<tool_call>[1, 2]</tool_call>", "must be a JSON object"),
    ],
)
def test_hermes_errors_say_what_is_wrong(text, error):
    message = parse_hermes(text)
    assert error in message.error


def test_toolrl_lines_and_parameters_key_are_read():
    text = '<tool_call>\n{"name": "a", "parameters": {"x": 1}}\n{"name": "b", "arguments": "{\\"y\\": 2}"}\n</tool_call>'
    message = parse_hermes(text)
    assert [(c.name, c.arguments) for c in message.tool_calls] == [("a", {"x": 1}), ("b", {"y": 2})]


def test_pythonic_refuses_code_and_positional_arguments():
    assert "not a literal" in parse_pythonic('[f(a=__import__("os").system("x"))]').error
    assert "by keyword" in parse_pythonic("[f(1)]").error
    assert parse_pythonic("[1, 2, 3]").tool_calls == ()  # a list that is not calls is content
    assert parse_pythonic("[f(a=true, b=null)]").tool_calls[0].arguments == {"a": True, "b": None}


def test_llama_json_reply_that_is_not_a_call_is_content():
    assert parse_llama3_json('{"answer": 3}').content == '{"answer": 3}'
    assert (
        parse_llama3_json('<|python_tag|>{"name": "f", "parameters": {}}').tool_calls[0].name == "f"
    )
    assert "not valid JSON" in parse_llama3_json('{"name": "f", "parameters": {').error


@pytest.mark.parametrize(
    "text",
    [
        '<tool_call>{"name": "f", "arguments": {"a": ' + "9" * 5000 + "}}</tool_call>",
        "<tool_call>" + "[" * 100_000 + "</tool_call>",
        '{"role": "assistant", "content": ' + "[" * 100_000,
        "[f(a=" + "[" * 100_000 + ")]",
        '{"name": "f", "parameters": ' + "[" * 100_000,
    ],
)
def test_pathological_json_is_an_error_not_a_crash(text):
    for parse in (*PARSERS.values(), decode_action):
        assert isinstance(parse(text), AssistantMessage)


def test_too_many_calls_is_an_error_not_a_crash():
    message = parse_hermes("".join('<tool_call>{"name": "f"}</tool_call>' for _ in range(100)))
    assert "at most" in message.error and not message.tool_calls


def test_arguments_are_normalised():
    assert normalize_arguments('{"a": 1}') == {"a": 1}
    assert normalize_arguments(None) == {} == normalize_arguments("")
    with pytest.raises(ToolCallError, match="JSON object"):
        normalize_arguments("[1]")
    history = [
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "1", "type": "function", "function": {"name": "f", "arguments": '{"a": 1}'}}
            ],
        }
    ]
    (message,) = template_messages(history)
    assert message["content"] == "" and message["tool_calls"][0]["function"]["arguments"] == {
        "a": 1
    }


def test_parser_choice_can_be_overridden_and_unknown_names_fail():
    class Tok:
        chat_template = "{{ messages }}"

    with pytest.raises(ToolCallError, match="renders no tools"):
        parser_for(Tok())
    assert parser_for(Tok(), "pythonic") is parse_pythonic
    with pytest.raises(ToolCallError, match="unknown tool-call parser"):
        parser_for(Tok(), "xml")
