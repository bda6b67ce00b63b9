"""serve-policy over a real uvicorn on 127.0.0.1, driven by the official openai client and by
OpenAIPolicy; LoRA hot-loading through /v1/load_lora_adapter."""

from __future__ import annotations

import asyncio
import json

import httpx
import numpy as np
import openai
import pytest
import torch

from agentenv.launch import LocalServer
from agentenv.policies import SamplingParams
from agentenv.policies.base import SamplingExtras
from agentenv.policies.hf import HFPolicy
from agentenv.policies.openai import OpenAIPolicy, PolicyServerError
from agentenv.train.sync import ServerSync
from tests.http_probe import declare_body

FACTORY = "agentenv.policies.server:create_app_from_spec"
GREEDY = SamplingParams(max_tokens=12, temperature=0.0)


def policy_server(tiny_path) -> LocalServer:
    return LocalServer(FACTORY, {"spec": str(tiny_path), "model_name": "tiny", "device": "cpu"})


@pytest.fixture(scope="module")
def server(tiny_path):
    with policy_server(tiny_path) as running:
        yield running


@pytest.fixture
def client(server):
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)


@pytest.fixture
def local(tiny_path):
    policy = HFPolicy.from_pretrained(tiny_path, device="cpu")
    yield policy
    policy.close()


def test_models_and_health(server, client):
    assert [m.id for m in client.models.list().data] == ["tiny"]
    assert httpx.get(f"{server.url}/health").json()["status"] == "ok"


def test_completion_with_text_prompt(client, tokenizer):
    response = client.completions.create(
        model="tiny", prompt="Who wrote it?", max_tokens=8, temperature=0, logprobs=1
    )
    (choice,) = response.choices
    ids = choice.model_extra["token_ids"]
    assert 0 < len(ids) <= 8
    assert choice.text == tokenizer.decode(ids, skip_special_tokens=True)
    assert len(choice.logprobs.token_logprobs) == len(ids)
    assert response.usage.completion_tokens == len(ids)
    assert choice.model_extra["prompt_token_ids"] == tokenizer.encode(
        "Who wrote it?", add_special_tokens=False
    )


def test_completion_with_token_ids_matches_local_policy(client, local, chat_prompts):
    prompt = chat_prompts(1)[0]
    response = client.completions.create(
        model="tiny",
        prompt=prompt,
        max_tokens=10,
        seed=4,
        logprobs=1,
        extra_body={"return_tokens_as_token_ids": True},
    )
    (choice,) = response.choices
    import asyncio

    (expected,) = asyncio.run(local.generate([prompt], SamplingParams(max_tokens=10, seed=4)))
    assert choice.model_extra["token_ids"] == expected.token_ids
    assert choice.logprobs.tokens == [f"token_id:{t}" for t in expected.token_ids]
    np.testing.assert_allclose(choice.logprobs.token_logprobs, expected.logprobs, atol=1e-4)


def test_n_and_batch_prompts(client, chat_prompts):
    response = client.completions.create(
        model="tiny", prompt=chat_prompts(2), max_tokens=5, n=3, seed=1
    )
    assert [c.index for c in response.choices] == list(range(6))
    first = [c.model_extra["token_ids"] for c in response.choices[:3]]
    assert len({tuple(ids) for ids in first}) > 1  # n samples differ


def test_echo_scores_the_prompt(client, local, chat_prompts):
    prompt = chat_prompts(1)[0]
    response = client.completions.create(
        model="tiny", prompt=prompt, max_tokens=0, echo=True, logprobs=1
    )
    values = response.choices[0].logprobs.token_logprobs
    assert values[0] is None and len(values) == len(prompt)
    import asyncio

    (expected,) = asyncio.run(local.score([prompt[:1]], [prompt[1:]]))
    np.testing.assert_allclose(values[1:], expected, atol=1e-4)


def test_stop_string_is_cut_from_text_unless_asked(client, chat_prompts):
    prompt = chat_prompts(1)[0]
    free = client.completions.create(model="tiny", prompt=prompt, max_tokens=30, seed=9)
    text = free.choices[0].text
    stop = next(text[i : i + 2] for i in range(2, len(text) - 2) if text[i : i + 2].strip())
    cut = client.completions.create(model="tiny", prompt=prompt, max_tokens=30, seed=9, stop=[stop])
    kept = client.completions.create(
        model="tiny",
        prompt=prompt,
        max_tokens=30,
        seed=9,
        stop=stop,
        extra_body={"include_stop_str_in_output": True},
    )
    assert cut.choices[0].finish_reason == "stop"
    assert cut.choices[0].model_extra["stop_reason"] == stop
    assert stop not in cut.choices[0].text
    assert kept.choices[0].text.startswith(cut.choices[0].text + stop)


def test_chat_completion(client):
    response = client.chat.completions.create(
        model="tiny",
        messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
        max_tokens=6,
        temperature=0,
        logprobs=True,
    )
    (choice,) = response.choices
    assert choice.message.role == "assistant"
    assert isinstance(choice.message.content, str)
    assert len(choice.logprobs.content) == len(choice.model_extra["token_ids"])
    assert choice.finish_reason in ("stop", "length")


def test_errors_follow_openai_shapes(client):
    with pytest.raises(openai.NotFoundError, match="does not exist"):
        client.completions.create(model="gpt-nope", prompt="x", max_tokens=1)
    with pytest.raises(openai.BadRequestError, match="temperature"):
        client.completions.create(model="tiny", prompt="x", max_tokens=1, temperature=-1)
    with pytest.raises(openai.BadRequestError, match="outside"):
        client.completions.create(model="tiny", prompt=[10**7], max_tokens=1)


async def test_openai_policy_round_trip(server, local, chat_prompts):
    remote = OpenAIPolicy(server.url, "tiny", tokenizer=local.tokenizer, max_concurrency=4)
    try:
        prompts = chat_prompts(5)
        sampling = SamplingParams(max_tokens=10, seed=2)
        got = await remote.generate(prompts, sampling)
        want = [
            (await local.generate([p], SamplingParams(max_tokens=10, seed=2 + i)))[0]
            for i, p in enumerate(prompts)
        ]
        assert [c.token_ids for c in got] == [c.token_ids for c in want]
        assert [c.text for c in got] == [c.text for c in want]
        assert [c.finish_reason for c in got] == [c.finish_reason for c in want]
        for a, b in zip(got, want, strict=True):
            np.testing.assert_allclose(a.logprobs, b.logprobs, atol=1e-4)
        scores = await remote.score(prompts, [c.token_ids for c in got])
        for score, completion in zip(scores, got, strict=True):
            np.testing.assert_allclose(score, completion.logprobs, atol=1e-4)
        reply = await remote.chat([{"role": "user", "content": "hello"}], max_tokens=3)
        assert reply["choices"][0]["message"]["role"] == "assistant"
        assert await remote.models() == ["tiny"]
    finally:
        await remote.aclose()


async def test_openai_policy_sends_the_sampling_extras(server, local, chat_prompts):
    remote = OpenAIPolicy(server.url, "tiny", tokenizer=local.tokenizer)
    try:
        (prompt,) = chat_prompts(1)
        (free,) = await remote.generate([prompt], GREEDY)
        banned = SamplingExtras(logit_bias=((free.token_ids[0], -100.0),), ignore_eos=True)
        sampling = SamplingParams(max_tokens=6, temperature=0.0, extras=banned)
        (got,) = await remote.generate([prompt], sampling)
        (want,) = await local.generate([prompt], sampling)
        assert got.token_ids == want.token_ids and got.token_ids[0] != free.token_ids[0]
        assert len(got.token_ids) == 6
    finally:
        await remote.aclose()


async def test_openai_policy_names_a_dead_url():
    remote = OpenAIPolicy("http://127.0.0.1:9", "m", retries=1, backoff=0.01)
    with pytest.raises(PolicyServerError, match=r"127\.0\.0\.1:9/v1/completions.*2 attempt"):
        await remote.generate([[1, 2]], GREEDY)
    await remote.aclose()


def _lora_adapter(tiny_path, out):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(tiny_path)
    config = LoraConfig(
        r=4, lora_alpha=16, target_modules=["q_proj", "v_proj", "up_proj"], init_lora_weights=False
    )
    model = get_peft_model(base, config)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "lora_B" in name:
                parameter.normal_(0, 0.5)
    model.save_pretrained(out)
    return model.eval()


async def test_lora_hot_load_changes_outputs_and_unload_restores(tiny_path, tmp_path, chat_prompts):
    adapter = tmp_path / "adapter"
    peft_model = _lora_adapter(tiny_path, adapter)
    prompts = chat_prompts(3)
    with policy_server(tiny_path) as lora_server:
        remote = OpenAIPolicy(lora_server.url, "tiny")
        try:
            before = await remote.generate(prompts, GREEDY)
            base_scores = await remote.score(prompts, [c.token_ids for c in before])
            response = httpx.post(
                f"{lora_server.url}/v1/load_lora_adapter",
                json={"lora_name": "step-1", "lora_path": str(adapter)},
            )
            assert response.status_code == 200, response.text
            assert "step-1" in await remote.models()
            merged_scores = await remote.score(prompts, [c.token_ids for c in before])
            # the served weights now compute what the peft model computes
            for prompt, completion, served in zip(prompts, before, merged_scores, strict=True):
                ids = torch.tensor([prompt + completion.token_ids])
                with torch.no_grad():
                    logits = peft_model(input_ids=ids).logits[0, len(prompt) - 1 : -1]
                expected = torch.log_softmax(logits, -1).gather(
                    -1, torch.tensor(completion.token_ids)[:, None]
                )[:, 0]
                np.testing.assert_allclose(served, expected.numpy(), atol=1e-4)
            assert any(
                not np.allclose(a, b, atol=1e-3)
                for a, b in zip(base_scores, merged_scores, strict=True)
            )
            remote.model = "step-1"
            after = await remote.generate(prompts, GREEDY)
            assert [c.token_ids for c in after] != [c.token_ids for c in before]
            bad = httpx.post(
                f"{lora_server.url}/v1/load_lora_adapter",
                json={"lora_name": "x", "lora_path": str(tmp_path / "missing")},
            )
            assert bad.status_code == 400 and "adapter_config.json" in bad.text
            response = httpx.post(
                f"{lora_server.url}/v1/unload_lora_adapter", json={"lora_name": "step-1"}
            )
            assert response.status_code == 200, response.text
            remote.model = "tiny"
            restored = await remote.generate(prompts, GREEDY)
            assert [c.token_ids for c in restored] == [c.token_ids for c in before]
            restored_scores = await remote.score(prompts, [c.token_ids for c in before])
            for a, b in zip(base_scores, restored_scores, strict=True):
                np.testing.assert_allclose(a, b, atol=1e-6)
        finally:
            await remote.aclose()


async def test_server_sync_loads_each_step_s_adapter_and_a_refusal_fails_at_once(
    tiny_path, tmp_path
):
    peft_model = _lora_adapter(tiny_path, tmp_path / "adapter")
    with policy_server(tiny_path) as served:
        sync = ServerSync(served.url, tmp_path, name="policy")
        path = await sync.push(peft_model, 3)
        assert path == (tmp_path / "adapters" / "step-000003").resolve()
        assert (path / "adapter_config.json").is_file()
        listed = httpx.get(f"{served.url}/v1/models").json()["data"]
        assert "policy" in [m["id"] for m in listed]
        await sync.push(peft_model, 4)  # the step-3 adapter is unloaded, then step 4's loaded
        gone = httpx.post(f"{served.url}/v1/unload_lora_adapter", json={"lora_name": "policy"})
        assert gone.status_code == 200
        await sync.push(peft_model, 5)  # nothing to unload (HTTP 404) is fine
        listed = httpx.get(f"{served.url}/v1/models").json()["data"]
        assert "policy" in [m["id"] for m in listed]
        clash = ServerSync(served.url, tmp_path, name="tiny")  # the base model's name: HTTP 400
        with pytest.raises(PolicyServerError, match=r"load_lora_adapter failed with HTTP 400"):
            await clash.push(peft_model, 4)


async def test_one_invalid_request_fails_alone(server, chat_prompts):
    """Ten valid requests sent together with one whose top_k cannot be a tensor value: the ten
    are answered, the bad one gets a 400 naming top_k (it never reaches the batcher)."""
    prompts = chat_prompts(10)
    body = {"model": "tiny", "max_tokens": 6, "seed": 3}
    async with httpx.AsyncClient(base_url=server.url, timeout=120) as http:
        responses = await asyncio.gather(
            *(http.post("/v1/completions", json={**body, "prompt": p}) for p in prompts[:5]),
            http.post("/v1/completions", json={**body, "prompt": prompts[0], "top_k": 10**30}),
            *(http.post("/v1/completions", json={**body, "prompt": p}) for p in prompts[5:]),
        )
    bad = responses.pop(5)
    assert [r.status_code for r in responses] == [200] * 10
    assert all(r.json()["choices"][0]["token_ids"] for r in responses)
    assert bad.status_code == 400
    assert "top_k" in bad.json()["error"]["message"]


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"temperature": float("nan")}, "temperature"),
        ({"top_p": float("inf")}, "top_p"),
        ({"top_k": -2}, "top_k"),
        ({"logprobs": 21}, "logprobs"),
        ({"stop": ["x"] * 65}, "stop"),
        ({"stop": "y" * 1025}, "stop"),
        ({"n": 3, "prompt": [[5, 6]] * 400}, "max_rows"),
        ({"max_tokens": 0, "echo": True, "logprobs": 1, "prompt": [5] * 4097}, "echo scoring"),
        ({"prompt": [5] * 4096}, "4095"),
    ],
)
def test_bad_requests_get_a_400_naming_the_field(server, change, field):
    body = {"model": "tiny", "prompt": [5, 6], "max_tokens": 2, **change}
    response = httpx.post(
        f"{server.url}/v1/completions",
        content=json.dumps(body),  # json.dumps writes NaN and Infinity as JavaScript does
        headers={"content-type": "application/json"},
        timeout=60,
    )
    assert response.status_code == 400, response.text[:300]
    assert field in response.json()["error"]["message"]


def test_rows_and_body_size_are_capped(tiny_path):
    config = {
        "spec": str(tiny_path),
        "model_name": "tiny",
        "device": "cpu",
        "max_rows": 4,
        "max_body_bytes": 2000,
    }
    with LocalServer(FACTORY, config) as small:
        body = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "n": 5}
        response = httpx.post(f"{small.url}/v1/chat/completions", json=body, timeout=60)
        assert response.status_code == 400
        assert "max_rows=4" in response.json()["error"]["message"]

        status, answer = declare_body(small.url, "/v1/completions", 10**12)
        assert status == 413
        assert "max_body_bytes=2000" in json.loads(answer)["error"]["message"]

        chunks = (b'{"model": "tiny", "prompt": "', *[b"x" * 900] * 3, b'"}')
        response = httpx.post(
            f"{small.url}/v1/completions",
            content=iter(chunks),  # streamed without a Content-Length
            headers={"content-type": "application/json"},
            timeout=60,
        )
        assert response.status_code == 413
        assert "more than 2000 bytes" in response.json()["error"]["message"]
        response = httpx.post(
            f"{small.url}/v1/completions",
            json={"model": "tiny", "prompt": "x" * 1500, "max_tokens": 1},
            timeout=60,
        )
        assert response.status_code == 200, response.text


def test_the_prefix_cache_serves_a_chat_s_next_turn(tiny_path):
    config = {"spec": str(tiny_path), "model_name": "tiny", "device": "cpu"}
    with LocalServer(FACTORY, {**config, "prefix_cache_mib": 8}) as cached:
        client = openai.OpenAI(base_url=f"{cached.url}/v1", api_key="unused", max_retries=0)
        messages = [{"role": "user", "content": "Question 3: who wrote book 21?"}]
        first = client.chat.completions.create(
            model="tiny", messages=messages, max_tokens=8, temperature=0
        )
        assert first.usage.prompt_tokens_details.cached_tokens == 0
        messages += [
            {"role": "assistant", "content": first.choices[0].message.content},
            {"role": "user", "content": "And book 22?"},
        ]
        second = client.chat.completions.create(
            model="tiny", messages=messages, max_tokens=8, temperature=0
        )
    reused = second.usage.prompt_tokens_details.cached_tokens
    assert first.usage.prompt_tokens <= reused < second.usage.prompt_tokens
