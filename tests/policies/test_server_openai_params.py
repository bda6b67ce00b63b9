"""serve-policy's parity with vLLM's OpenAI server, driven by the official openai client:
streaming (SSE) for completions and chat, stop_token_ids, skip_special_tokens, top logprobs,
vLLM's extra sampling fields (penalties, logit_bias, min_p, min_tokens, ignore_eos) with their
effect, GET /v1/models/{id}, and a 400 naming every field it does not know."""

from __future__ import annotations

import json
import math

import httpx
import openai
import pytest

from agentenv.launch import LocalServer

FACTORY = "agentenv.policies.server:create_app_from_spec"
CHAT = [{"role": "user", "content": "Who wrote book 7?"}]
PROMPT = [5, 17, 99, 230, 41]
EOS = 2


@pytest.fixture(scope="module")
def server(tiny_path):
    config = {"spec": str(tiny_path), "model_name": "tiny", "device": "cpu"}
    with LocalServer(FACTORY, config) as running:
        yield running


@pytest.fixture
def client(server):
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)


def greedy(client, **kwargs):
    body = {"model": "tiny", "prompt": PROMPT, "max_tokens": 12, "temperature": 0, **kwargs}
    return client.completions.create(**body)


def ids(response) -> list[list[int]]:
    return [choice.model_extra["token_ids"] for choice in response.choices]


def test_streamed_completion_adds_up_to_the_whole_one(client):
    whole = greedy(client, n=2, seed=1, temperature=1.0)
    stream = greedy(
        client, n=2, seed=1, temperature=1.0, stream=True, stream_options={"include_usage": True}
    )
    texts, finishes, usage = {0: "", 1: ""}, {}, None
    for chunk in stream:
        assert chunk.object == "text_completion" and chunk.model == "tiny"
        if chunk.usage is not None:
            assert chunk.choices == []
            usage = chunk.usage
        for choice in chunk.choices:
            texts[choice.index] += choice.text
            if choice.finish_reason is not None:
                finishes[choice.index] = choice.finish_reason
    assert texts == {c.index: c.text for c in whole.choices}
    assert finishes == {c.index: c.finish_reason for c in whole.choices}
    assert usage == whole.usage


def test_streamed_chat_adds_up_to_the_whole_reply(client):
    body = {"model": "tiny", "messages": CHAT, "max_tokens": 10, "temperature": 0}
    whole = client.chat.completions.create(**body, logprobs=True)
    content, roles, finish, tokens = "", [], None, []
    stream = client.chat.completions.create(
        **body, logprobs=True, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    for chunk in chunks[:-1]:
        assert chunk.object == "chat.completion.chunk" and chunk.usage is None
        (choice,) = chunk.choices
        roles += [choice.delta.role] if choice.delta.role else []
        content += choice.delta.content or ""
        tokens += [t.token for t in choice.logprobs.content] if choice.logprobs else []
        finish = choice.finish_reason or finish
    assert roles == ["assistant"]
    assert content == whole.choices[0].message.content
    assert tokens == [t.token for t in whole.choices[0].logprobs.content]
    assert finish == whole.choices[0].finish_reason
    assert chunks[-1].choices == [] and chunks[-1].usage == whole.usage


def test_stream_wire_format_is_sse_ending_in_done(server):
    body = {"model": "tiny", "prompt": PROMPT, "max_tokens": 4, "stream": True}
    with httpx.stream("POST", f"{server.url}/v1/completions", json=body, timeout=60) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        raw = response.read().decode()
    events = raw.split("\n\n")
    assert events[-2:] == ["data: [DONE]", ""]
    assert all(e.startswith("data: ") for e in events[:-1])
    assert all("usage" not in json.loads(e[6:]) for e in events[:-2])


def test_stream_options_need_stream(client):
    with pytest.raises(openai.BadRequestError) as error:
        greedy(client, stream_options={"include_usage": True})
    assert error.value.body["param"] == "stream_options"


def test_stop_token_ids_end_the_output_at_the_first_one(client, tokenizer):
    ids = greedy(client, extra_body={"ignore_eos": False}).choices[0].model_extra["token_ids"]
    stop = ids[3]
    first = ids.index(stop)
    for keep in (False, True):
        (choice,) = greedy(
            client, extra_body={"stop_token_ids": [stop], "include_stop_str_in_output": keep}
        ).choices
        assert choice.model_extra["token_ids"] == ids[: first + 1]
        assert choice.finish_reason == "stop" and choice.model_extra["stop_reason"] == stop
        shown = ids[: first + 1] if keep else ids[:first]
        assert choice.text == tokenizer.decode(shown, skip_special_tokens=True)


def test_skip_special_tokens_false_keeps_them_in_the_text(client, tokenizer):
    response = greedy(client, temperature=1.5, seed=0, n=32, max_tokens=30)
    special = set(tokenizer.all_special_ids) - {tokenizer.eos_token_id}
    choice = next(
        c for c in response.choices if special & set(c.model_extra["token_ids"])
    )  # a seeded sample of 32 x 30 tokens over a 1,024-token vocabulary holds one
    kept = greedy(
        client,
        temperature=1.5,
        seed=0,
        n=32,
        max_tokens=30,
        extra_body={"skip_special_tokens": False},
    ).choices[choice.index]
    ids = choice.model_extra["token_ids"]
    assert kept.model_extra["token_ids"] == ids
    shown = ids[:-1] if ids[-1] == tokenizer.eos_token_id else ids
    assert kept.text == tokenizer.decode(shown, skip_special_tokens=False) != choice.text
    assert choice.text == tokenizer.decode(ids, skip_special_tokens=True)


def test_completion_logprobs_k_gives_k_alternatives_and_the_chosen_token(client):
    (choice,) = greedy(client, logprobs=3).choices
    lp = choice.logprobs
    assert len(lp.top_logprobs) == len(lp.tokens) > 0
    for token, chosen, top in zip(lp.tokens, lp.token_logprobs, lp.top_logprobs, strict=True):
        assert 3 <= len(top) <= 4 and top[token] == chosen
        assert chosen == pytest.approx(max(top.values()), abs=1e-4)  # greedy: the argmax
    (echoed,) = greedy(client, logprobs=2, echo=True, max_tokens=0).choices
    assert echoed.logprobs.top_logprobs[0] is None
    assert all(2 <= len(top) <= 3 for top in echoed.logprobs.top_logprobs[1:])


def test_chat_top_logprobs_gives_k_alternatives_per_token(client):
    (choice,) = client.chat.completions.create(
        model="tiny", messages=CHAT, max_tokens=8, temperature=0, logprobs=True, top_logprobs=4
    ).choices
    assert choice.logprobs.content
    for entry in choice.logprobs.content:
        assert len(entry.top_logprobs) == 4
        values = [t.logprob for t in entry.top_logprobs]
        assert values == sorted(values, reverse=True)
        assert entry.top_logprobs[0].token == entry.token  # greedy: the most likely token
        assert entry.top_logprobs[0].logprob == pytest.approx(entry.logprob, abs=1e-4)
    with pytest.raises(openai.BadRequestError) as error:
        client.chat.completions.create(model="tiny", messages=CHAT, top_logprobs=2)
    assert error.value.body["param"] == "top_logprobs"


def test_get_model_by_id(server, client):
    card = client.models.retrieve("tiny")
    assert card.id == "tiny" and card.object == "model"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("gpt-nope")
    response = httpx.get(f"{server.url}/v1/models/org/gpt-nope", timeout=30)
    assert response.status_code == 404
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and "gpt-nope" in error["message"]


def test_logit_bias_minus_100_bans_a_token_and_plus_100_forces_it(client):
    (plain,) = ids(greedy(client))
    banned = plain[0]
    (without,) = ids(greedy(client, logit_bias={str(banned): -100}))
    assert banned not in without
    (forced,) = ids(greedy(client, logit_bias={"77": 100}, max_tokens=5))
    assert forced == [77] * 5
    # values are clamped to [-100, 100], as vLLM does
    assert ids(greedy(client, extra_body={"logit_bias": {"77": 1e6}}, max_tokens=5)) == [forced]


def test_min_tokens_delays_eos(client):
    eager = greedy(client, logit_bias={str(EOS): 100})
    assert ids(eager) == [[EOS]] and eager.choices[0].finish_reason == "stop"
    (delayed,) = greedy(client, logit_bias={str(EOS): 100}, extra_body={"min_tokens": 4}).choices
    tokens = delayed.model_extra["token_ids"]
    assert len(tokens) == 5 and tokens[-1] == EOS and EOS not in tokens[:-1]
    assert delayed.finish_reason == "stop" and delayed.model_extra["stop_reason"] is None


def test_ignore_eos_runs_to_max_tokens(client):
    (choice,) = greedy(client, logit_bias={str(EOS): 100}, extra_body={"ignore_eos": True}).choices
    assert choice.model_extra["token_ids"] == [EOS] * 12 and choice.finish_reason == "length"
    assert choice.model_extra["stop_reason"] is None


def test_stop_token_ids_stop_after_min_tokens(client):
    body = {"logit_bias": {"77": 100}}
    extra = {"stop_token_ids": [77], "min_tokens": 3}
    (choice,) = greedy(client, **body, extra_body=extra).choices
    tokens = choice.model_extra["token_ids"]
    assert len(tokens) == 4 and tokens[-1] == 77 and 77 not in tokens[:-1]  # banned until due
    assert choice.finish_reason == "stop" and choice.model_extra["stop_reason"] == 77
    (first,) = greedy(client, **body, extra_body={"stop_token_ids": [77]}).choices
    assert first.model_extra["token_ids"] == [77]


def test_min_p_samples_only_tokens_near_the_most_likely(client):
    """Every sampled token's raw probability is at least ``min_p`` times the top one's (at
    temperature 1); plain sampling from the same seeds strays below."""

    def ratios(**extra) -> list[float]:
        response = greedy(
            client, temperature=1.0, seed=5, n=4, max_tokens=16, logprobs=1, extra_body=extra
        )
        return [
            math.exp(chosen - max(top.values()))
            for choice in response.choices
            for chosen, top in zip(
                choice.logprobs.token_logprobs, choice.logprobs.top_logprobs, strict=True
            )
        ]

    assert min(ratios()) < 0.3
    assert min(ratios(min_p=0.3)) >= 0.3 - 1e-4


@pytest.mark.parametrize(
    "penalty",
    [
        {"frequency_penalty": 2.0},
        {"presence_penalty": 2.0},
        {"extra_body": {"repetition_penalty": 3.0}},
    ],
)
def test_penalties_change_seeded_samples_deterministically_with_fewer_repeats(client, penalty):
    """What the reference loop of test_server_sampling.py says: a penalty changes the seeded
    samples, reproducibly, towards fewer repeated tokens; greedy decoding (the tiny model
    repeats one token) is pushed off its repeats."""
    sampled = {"temperature": 1.0, "seed": 3, "max_tokens": 24}
    plain = ids(greedy(client, **sampled))
    penalised = ids(greedy(client, **sampled, **penalty))
    assert penalised == ids(greedy(client, **sampled, **penalty)) != plain
    assert len(set(penalised[0])) >= len(set(plain[0]))
    (repeats,) = ids(greedy(client))
    (varied,) = ids(greedy(client, **penalty))
    assert len(set(repeats)) == 1 < len(set(varied))


def test_chat_applies_the_extra_fields_too(client):
    body = {"model": "tiny", "messages": CHAT, "max_tokens": 6, "temperature": 0}
    (choice,) = client.chat.completions.create(
        **body, logit_bias={str(EOS): 100}, extra_body={"ignore_eos": True}
    ).choices
    assert choice.model_extra["token_ids"] == [EOS] * 6 and choice.finish_reason == "length"


def test_min_tokens_above_max_tokens_is_a_400(client):
    with pytest.raises(openai.BadRequestError) as error:
        greedy(client, max_tokens=2, extra_body={"min_tokens": 3})
    assert error.value.body["param"] == "min_tokens"


def test_neutral_values_are_accepted_and_change_nothing(client):
    neutral = {
        "presence_penalty": 0,
        "frequency_penalty": 0,
        "logit_bias": {},
        "user": "someone",
        "extra_body": {
            "repetition_penalty": 1.0,
            "min_p": 0.0,
            "min_tokens": 0,
            "ignore_eos": False,
            "skip_special_tokens": True,
            "return_token_ids": True,
        },
    }
    plain = greedy(client).choices[0]
    same = greedy(client, **neutral).choices[0]
    assert (
        same.text == plain.text and same.model_extra["token_ids"] == plain.model_extra["token_ids"]
    )


@pytest.mark.parametrize(
    ("path", "extra", "field"),
    [
        ("/v1/completions", {"suffix": "x"}, "suffix"),
        ("/v1/completions", {"best_of": 2}, "best_of"),
        ("/v1/completions", {"frobnicate": 1}, "frobnicate"),
        ("/v1/chat/completions", {"response_format": {"type": "json_object"}}, "response_format"),
        ("/v1/chat/completions", {"stream": True, "stream_options": {"x": 1}}, "stream_options.x"),
        ("/v1/completions", {"stop_token_ids": [10**6]}, "stop_token_ids"),
        ("/v1/completions", {"logit_bias": {"99999": 1}}, "logit_bias"),
    ],
)
def test_unknown_fields_get_a_400_naming_them(server, path, extra, field):
    body = {"model": "tiny", "max_tokens": 2, **extra}
    body |= {"messages": CHAT} if "chat" in path else {"prompt": PROMPT}
    response = httpx.post(f"{server.url}{path}", json=body, timeout=60)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == field
