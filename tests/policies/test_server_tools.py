"""Native tool calls through serve-policy (a real uvicorn on 127.0.0.1) with the official openai
client, and OpenAIPolicy's chat helpers against it.

A random tiny model never writes a tool call, so the server here serves a copy of the tiny model
fine-tuned (a hundred-odd Adam steps on CPU) to answer a few fixed prompts with fixed text: one
call, two calls after some text, a malformed call, a final answer after a tool result, and a
call written even though no tools were rendered. Greedy decoding then reproduces that text, and
the tests check what the server makes of it.
"""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import openai
import pytest
import torch
from openai.types.chat import ChatCompletionMessageFunctionToolCall
from transformers import AutoModelForCausalLM, AutoTokenizer

from agentenv.launch import LocalServer
from agentenv.policies.chat import MAX_TOOLS, template_tool_parser
from agentenv.policies.hf import HFPolicy
from agentenv.policies.openai import OpenAIPolicy, assistant_messages, wire_messages
from agentenv.policies.server import create_app
from agentenv.toolcalls import AssistantMessage, ToolCall, template_messages

FACTORY = "agentenv.policies.server:create_app_from_spec"
MODEL = "tiny-tools"
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather of a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}
TOOLS = [WEATHER]
PARIS = [{"role": "user", "content": "Weather in Paris?"}]
BOTH = [{"role": "user", "content": "Weather in Paris and Rome?"}]
OSLO = [{"role": "user", "content": "Weather in Oslo?"}]
PARIS_CALL = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'
ROME_CALL = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Rome"}}\n</tool_call>'
BROKEN_CALL = '<tool_call>\n{"name": "get_weather", "arguments": {"city": </tool_call>'
ANSWER = "It is sunny in Paris."


def answered(call_id: str, arguments: str | dict = '{"city": "Paris"}') -> list[dict]:
    """PARIS, the assistant's call (OpenAI shape) and the tool's result."""
    call = {
        "id": call_id,
        "type": "function",
        "function": {"name": "get_weather", "arguments": arguments},
    }
    return [
        *(dict(m) for m in PARIS),  # copies: the bad-history cases edit them
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": call_id, "content": "sunny"},
    ]


EXAMPLES = [
    (PARIS, TOOLS, PARIS_CALL),
    (BOTH, TOOLS, f"Checking both.\n{PARIS_CALL}\n{ROME_CALL}"),
    (OSLO, TOOLS, BROKEN_CALL),
    (answered("call_0"), TOOLS, ANSWER),
    (PARIS, None, PARIS_CALL),  # a call although no tools were rendered (tool_choice none)
]
"""(messages, tools rendered, the completion the fine-tuned model writes)."""


def render(tokenizer, messages: list[dict], tools: list[dict] | None) -> list[int]:
    return tokenizer.apply_chat_template(
        template_messages(messages), tools=tools, add_generation_prompt=True, return_dict=False
    )


def fine_tune(tiny_path: Path, out: Path) -> Path:
    """The tiny model trained until greedy decoding writes each example's completion."""
    tokenizer = AutoTokenizer.from_pretrained(tiny_path)
    rows = [
        (
            render(tokenizer, messages, tools),
            tokenizer.encode(text + "<|im_end|>", add_special_tokens=False),
        )
        for messages, tools, text in EXAMPLES
    ]
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(tiny_path)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(200):
        total = 0.0
        for prompt, completion in rows:
            loss = model(
                input_ids=torch.tensor([prompt + completion]),
                labels=torch.tensor([[-100] * len(prompt) + completion]),
            ).loss
            loss.backward()
            total += loss.item()
        optimizer.step()
        optimizer.zero_grad()
        if total < 0.01:
            break
    model.eval()
    for prompt, completion in rows:
        generated = model.generate(
            torch.tensor([prompt]), max_new_tokens=len(completion), do_sample=False
        )
        assert generated[0, len(prompt) :].tolist() == completion, "fine-tuning did not take"
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def tool_model(tiny_path, tmp_path_factory) -> Path:
    return fine_tune(tiny_path, tmp_path_factory.mktemp("models") / "tiny-tools")


@pytest.fixture(scope="module")
def server(tool_model):
    config = {"spec": str(tool_model), "model_name": MODEL, "device": "cpu"}
    with LocalServer(FACTORY, config) as running:
        yield running


@pytest.fixture
def client(server):
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)


def chat(client, messages, **params):
    return client.chat.completions.create(
        model=MODEL, messages=messages, max_tokens=160, temperature=0, **params
    )


def post_chat(server, **body) -> httpx.Response:
    body = {"model": MODEL, "max_tokens": 2, **body}
    return httpx.post(f"{server.url}/v1/chat/completions", json=body, timeout=60)


# ---------------------------------------------------------------------------------------------
# Replies with tool calls
# ---------------------------------------------------------------------------------------------
def test_a_tool_call_comes_back_as_openai_tool_calls(client, tokenizer):
    response = chat(client, PARIS, tools=TOOLS, logprobs=True)
    (choice,) = response.choices
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    (call,) = choice.message.tool_calls
    assert isinstance(call, ChatCompletionMessageFunctionToolCall)
    assert call.id.startswith("call_") and call.type == "function"
    assert call.function.name == "get_weather"
    assert isinstance(call.function.arguments, str)
    assert json.loads(call.function.arguments) == {"city": "Paris"}
    ids = choice.model_extra["token_ids"]
    assert tokenizer.decode(ids, skip_special_tokens=True) == PARIS_CALL
    assert len(choice.logprobs.content) == len(ids)
    assert response.model_extra["prompt_token_ids"] == render(tokenizer, PARIS, TOOLS)


def test_parallel_calls_keep_the_text_outside_them(client):
    (choice,) = chat(client, BOTH, tools=TOOLS).choices
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content == "Checking both."
    calls = choice.message.tool_calls
    assert [json.loads(c.function.arguments)["city"] for c in calls] == ["Paris", "Rome"]
    assert len({c.id for c in calls}) == 2


def test_parallel_tool_calls_false_keeps_the_first_call(client):
    both = chat(client, BOTH, tools=TOOLS).choices[0]
    (choice,) = chat(client, BOTH, tools=TOOLS, parallel_tool_calls=False).choices
    assert choice.finish_reason == "tool_calls"
    (call,) = choice.message.tool_calls
    assert json.loads(call.function.arguments) == {"city": "Paris"}
    assert choice.model_extra["token_ids"] == both.model_extra["token_ids"]  # same generation


def test_a_call_that_does_not_parse_comes_back_as_text(client):
    (choice,) = chat(client, OSLO, tools=TOOLS).choices
    assert choice.finish_reason == "stop"
    assert choice.message.tool_calls is None
    assert choice.message.content == BROKEN_CALL
    assert "not valid JSON" in choice.model_extra["tool_parse_error"]


def test_each_of_n_choices_is_parsed(client):
    response = chat(client, PARIS, tools=TOOLS, n=2)
    assert [c.finish_reason for c in response.choices] == ["tool_calls"] * 2
    ids = [c.message.tool_calls[0].id for c in response.choices]
    assert len(set(ids)) == 2


# ---------------------------------------------------------------------------------------------
# Histories with calls and results
# ---------------------------------------------------------------------------------------------
def test_history_with_calls_and_results_renders_and_generates(client, tokenizer):
    first = chat(client, PARIS, tools=TOOLS).choices[0].message
    (call,) = first.tool_calls
    history = [
        *PARIS,
        first,  # the client's own message object, appended as OpenAI's docs do
        {"role": "tool", "tool_call_id": call.id, "content": "sunny"},
    ]
    response = chat(client, history, tools=TOOLS)
    (choice,) = response.choices
    assert choice.finish_reason == "stop"
    assert choice.message.content == ANSWER
    assert choice.message.tool_calls is None
    prompt = response.model_extra["prompt_token_ids"]
    assert prompt == render(tokenizer, answered(call.id), TOOLS)
    text = tokenizer.decode(prompt)
    assert '"arguments": {"city": "Paris"}' in text  # a dict in the template, not a string
    assert "<tool_response>\nsunny\n</tool_response>" in text


def test_history_arguments_as_objects_and_text_parts_render_the_same(server, tokenizer):
    history = answered("call_7", arguments={"city": "Paris"})
    history[0] = {"role": "user", "content": [{"type": "text", "text": "Weather in Paris?"}]}
    response = post_chat(server, messages=history, tools=TOOLS)
    assert response.status_code == 200, response.text
    assert response.json()["prompt_token_ids"] == render(tokenizer, answered("call_7"), TOOLS)


# ---------------------------------------------------------------------------------------------
# tool_choice
# ---------------------------------------------------------------------------------------------
def test_tool_choice_none_renders_no_tools_and_parses_nothing(client, tokenizer):
    response = chat(client, PARIS, tools=TOOLS, tool_choice="none")
    (choice,) = response.choices
    assert response.model_extra["prompt_token_ids"] == render(tokenizer, PARIS, None)
    assert choice.finish_reason == "stop"
    assert choice.message.tool_calls is None
    assert choice.message.content == PARIS_CALL  # the model wrote a call; it stays text


def test_required_and_named_choices_are_rendered_like_auto_and_not_enforced(client):
    auto = chat(client, PARIS, tools=TOOLS)
    required = chat(client, PARIS, tools=TOOLS, tool_choice="required")
    assert required.model_extra["prompt_token_ids"] == auto.model_extra["prompt_token_ids"]
    assert required.choices[0].finish_reason == "tool_calls"
    named = {"type": "function", "function": {"name": "get_weather"}}
    (choice,) = chat(client, OSLO, tools=TOOLS, tool_choice=named).choices
    assert choice.finish_reason == "stop" and choice.message.content == BROKEN_CALL


def test_no_tools_means_nothing_is_parsed(client):
    (choice,) = chat(client, PARIS).choices
    assert choice.message.tool_calls is None
    assert choice.message.content == PARIS_CALL
    assert choice.finish_reason == "stop"


# ---------------------------------------------------------------------------------------------
# Bad requests
# ---------------------------------------------------------------------------------------------
def named(name: str) -> dict:
    return {**WEATHER, "function": {**WEATHER["function"], "name": name}}


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"tools": [named("get weather")]}, "tools.0.function.name"),
        ({"tools": [{"type": "retrieval", "function": WEATHER["function"]}]}, "tools.0.type"),
        ({"tools": [{"type": "function"}]}, "tools.0.function"),
        (
            {"tools": [{**WEATHER, "function": {"name": "f", "parameters": {"type": "string"}}}]},
            '"type": "object"',
        ),
        ({"tools": [named(f"f{i}") for i in range(MAX_TOOLS + 1)]}, "at most 128"),
        ({"tools": [WEATHER, WEATHER]}, "duplicate function names ['get_weather']"),
        (
            {"tools": [{**WEATHER, "function": {"name": "f", "description": "x" * 2**20}}]},
            "bytes of JSON",
        ),
        ({"tool_choice": "required"}, "needs tools"),
        ({"tool_choice": "always", "tools": TOOLS}, "tool_choice"),
        (
            {"tools": TOOLS, "tool_choice": {"type": "function", "function": {"name": "nope"}}},
            "'nope', which is not in tools",
        ),
    ],
)
def test_bad_tools_get_a_400(server, change, expected):
    response = post_chat(server, messages=PARIS, **change)
    assert response.status_code == 400, response.text[:300]
    assert expected in response.json()["error"]["message"]


def _history(edit) -> list[dict]:
    messages = answered("call_1")
    edit(messages)
    return messages


@pytest.mark.parametrize(
    ("messages", "expected"),
    [
        (_history(lambda m: m[2].pop("tool_call_id")), "messages[2]: a tool message needs"),
        (
            _history(lambda m: m[2].update(tool_call_id="call_9")),
            "messages[2]: tool_call_id 'call_9' answers no tool call",
        ),
        (
            [*PARIS, {"role": "tool", "tool_call_id": "call_1", "content": "x"}],
            "no assistant message with tool_calls before it",
        ),
        (
            _history(lambda m: m[2].update(content=None)),
            "messages[2]: a tool message needs content",
        ),
        (
            _history(lambda m: m[1]["tool_calls"][0]["function"].update(arguments='{"city": ')),
            "messages[1].tool_calls[0]: arguments are not valid JSON",
        ),
        (
            _history(lambda m: m[1]["tool_calls"][0]["function"].update(arguments="[1]")),
            "arguments must be a JSON object",
        ),
        (_history(lambda m: m[1]["tool_calls"][0].pop("id")), "a tool call needs an id"),
        (_history(lambda m: m[1]["tool_calls"][0]["function"].pop("name")), 'needs a "name"'),
        (
            _history(lambda m: m[0].update(tool_calls=m[1]["tool_calls"])),
            "messages[0]: only assistant messages carry tool_calls",
        ),
        (
            [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}],
            "messages[0].content[0]: only text parts",
        ),
    ],
)
def test_bad_histories_get_a_400_naming_the_message(server, messages, expected):
    response = post_chat(server, messages=messages, tools=TOOLS)
    assert response.status_code == 400, response.text[:300]
    assert expected in response.json()["error"]["message"]


def test_the_openai_client_sees_a_bad_request(client):
    messages = [*PARIS, {"role": "tool", "tool_call_id": "call_x", "content": "x"}]
    with pytest.raises(openai.BadRequestError, match="answers no tool call"):
        chat(client, messages, tools=TOOLS)


PLAIN_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


async def test_a_template_without_tools_refuses_tools_naming_the_model(tiny_path):
    tokenizer = AutoTokenizer.from_pretrained(tiny_path)
    tokenizer.chat_template = PLAIN_TEMPLATE
    model = AutoModelForCausalLM.from_pretrained(tiny_path)
    policy = HFPolicy(model, tokenizer, device="cpu")
    app = create_app(policy, model_name="plain")
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://plain") as http:
        client = openai.AsyncOpenAI(
            base_url="http://plain/v1", api_key="unused", http_client=http, max_retries=0
        )
        try:
            with pytest.raises(
                openai.BadRequestError,
                match="model 'plain' cannot take tools: its chat template renders no tools",
            ):
                await client.chat.completions.create(
                    model="plain", messages=PARIS, tools=TOOLS, max_tokens=2
                )
            reply = await client.chat.completions.create(
                model="plain", messages=PARIS, tools=TOOLS, tool_choice="none", max_tokens=2
            )
            assert reply.choices[0].message.tool_calls is None
        finally:
            await policy.aclose()


def test_tool_parser_knob(tokenizer):
    assert template_tool_parser(tokenizer)[0] is not None
    parser, _ = template_tool_parser(tokenizer, "pythonic")
    assert parser("[get_weather(city='Paris')]").tool_calls == (
        ToolCall("get_weather", {"city": "Paris"}),
    )
    with pytest.raises(ValueError, match="unknown tool_parser 'nope'"):
        template_tool_parser(tokenizer, "nope")


# ---------------------------------------------------------------------------------------------
# OpenAIPolicy
# ---------------------------------------------------------------------------------------------
async def test_openai_policy_reads_calls_and_sends_histories(server, tokenizer):
    remote = OpenAIPolicy(server.url, MODEL)
    try:
        params = {"max_tokens": 160, "temperature": 0}
        message = await remote.chat_message(PARIS, tools=TOOLS, **params)
        assert isinstance(message, AssistantMessage)
        (call,) = message.tool_calls
        assert (call.name, call.arguments) == ("get_weather", {"city": "Paris"})
        assert call.id.startswith("call_")
        assert message.content == "" and message.error == ""
        history = [*PARIS, message, {"role": "tool", "tool_call_id": call.id, "content": "sunny"}]
        raw = await remote.chat(history, tools=TOOLS, **params)
        assert raw["prompt_token_ids"] == render(tokenizer, answered(call.id), TOOLS)
        assert raw["choices"][0]["message"]["content"] == ANSWER
        plain = await remote.chat_message(PARIS, tools=TOOLS, tool_choice="none", **params)
        assert plain.tool_calls == () and plain.content == PARIS_CALL
    finally:
        await remote.aclose()


def test_wire_messages_send_arguments_as_json_strings():
    history = answered("call_3", arguments={"city": "Paris"})
    message = AssistantMessage("", (ToolCall("get_weather", {"city": "Rome"}, "call_4"),))
    wired = wire_messages([*history, message])
    assert wired[1]["tool_calls"][0]["function"]["arguments"] == '{"city": "Paris"}'
    assert wired[3] == {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": "call_4",
                "type": "function",
                "function": {"name": "get_weather", "arguments": '{"city": "Rome"}'},
            }
        ],
    }
    with pytest.raises(ValueError, match=r"messages\[1\]: arguments are not valid JSON"):
        wire_messages(answered("call_3", arguments="{"))


def test_assistant_messages_accept_object_arguments():
    """Some servers send ``arguments`` as an object instead of a JSON string."""
    response = {
        "choices": [
            {
                "message": {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "id": "c1",
                            "type": "function",
                            "function": {"name": "get_weather", "arguments": {"city": "Oslo"}},
                        }
                    ],
                }
            },
            {"message": {"role": "assistant", "content": "hi"}},
        ]
    }
    first, second = assistant_messages(response)
    assert first.tool_calls == (ToolCall("get_weather", {"city": "Oslo"}, "c1"),)
    assert second == AssistantMessage("hi")
    with pytest.raises(ValueError, match="no choices"):
        assistant_messages({"error": {}})
