"""ScriptedPolicy and RandomPolicy over the search env's expert, and spec parsing."""

from __future__ import annotations

import types

import pytest

import agentenv
from agentenv.policies import EpisodeContext, SamplingParams
from agentenv.policies.hf import HFPolicy
from agentenv.policies.openai import OpenAIPolicy
from agentenv.policies.scripted import (
    ClosedBookPolicy,
    RandomPolicy,
    ScriptedPolicy,
    expert_module,
)
from agentenv.policies.specs import PolicySpecError, load_policy

ENV = "search-v0"


@pytest.fixture(scope="module")
def contexts() -> list[EpisodeContext]:
    env = agentenv.make(ENV)
    out = []
    for seed in range(3):
        observation, info = env.reset(seed=seed)
        messages = [
            {"role": "system", "content": info["system_prompt"]},
            {"role": "user", "content": observation},
        ]
        out.append(EpisodeContext(ENV, env.task, messages, info))
    env.close()
    return out


async def test_expert_actions_are_tokenized_with_eos(tokenizer, contexts):
    policy = ScriptedPolicy(tokenizer=tokenizer)
    expert = expert_module(ENV)
    completions = await policy.generate([[1]] * 3, SamplingParams(), contexts=contexts)
    for completion, context in zip(completions, contexts, strict=True):
        action = expert.solve(context.task, context.messages)
        assert completion.token_ids == [
            *tokenizer.encode(action, add_special_tokens=False),
            tokenizer.eos_token_id,
        ]
        assert completion.text == action
        assert completion.finish_reason == "eos"
        assert completion.logprobs == [0.0] * len(completion.token_ids)


async def test_stop_strings_and_max_tokens_cut_actions(tokenizer, contexts):
    policy = ScriptedPolicy(ENV, tokenizer)
    action = expert_module(ENV).solve(contexts[0].task, contexts[0].messages)
    stop = action[len(action) // 2 : len(action) // 2 + 3]
    (cut,) = await policy.generate([[1]], SamplingParams(stop=(stop,)), contexts=contexts[:1])
    assert cut.finish_reason == "stop" and cut.stop_string == stop
    assert cut.text == action[: action.find(stop) + len(stop)]
    (short,) = await policy.generate([[1]], SamplingParams(max_tokens=2), contexts=contexts[:1])
    assert short.finish_reason == "length" and len(short.token_ids) == 2


async def test_a_module_can_be_given_directly(tokenizer, contexts):
    module = types.ModuleType("counting_expert")
    module.solve = lambda task, messages: f"<answer>{len(messages)}</answer>"
    policy = ScriptedPolicy(module, tokenizer)
    (completion,) = await policy.generate([[1]], SamplingParams(), contexts=contexts[:1])
    assert completion.text == "<answer>2</answer>"


async def test_random_policy_is_seeded(tokenizer, contexts):
    policy = RandomPolicy(tokenizer=tokenizer, seed=0)
    sampling = SamplingParams(seed=5)
    first = await policy.generate([[1]] * 3, sampling, contexts=contexts)
    second = await RandomPolicy(tokenizer=tokenizer, seed=1).generate(
        [[1]] * 3, sampling, contexts=contexts
    )
    assert [c.token_ids for c in first] == [c.token_ids for c in second]
    stream = [
        c.text
        for _ in range(5)
        for c in await policy.generate([[1]] * 3, SamplingParams(), contexts=contexts)
    ]
    assert len(set(stream)) > 1


async def test_scripted_policies_need_contexts_and_cannot_score(tokenizer):
    policy = ScriptedPolicy(tokenizer=tokenizer)
    with pytest.raises(ValueError, match="one EpisodeContext per prompt"):
        await policy.generate([[1]], SamplingParams())
    with pytest.raises(NotImplementedError, match="scripted policy"):
        await policy.score([[1]], [[2]])


def test_unknown_expert_source():
    with pytest.raises(ValueError, match="neither a registered env id nor an importable"):
        ScriptedPolicy("no-such-env-v9", tokenizer=object())


def test_specs(tiny_path, tokenizer):
    assert isinstance(load_policy("expert", tokenizer=tokenizer), ScriptedPolicy)
    assert isinstance(load_policy(f"random:{ENV}", tokenizer=tokenizer), RandomPolicy)
    assert isinstance(load_policy("closed-book", tokenizer=tokenizer), ClosedBookPolicy)
    policy = load_policy(str(tiny_path), device="cpu")
    assert isinstance(policy, HFPolicy) and policy.name == "tiny"
    remote = load_policy("openai:http://127.0.0.1:1#served-model", tokenizer=tokenizer)
    assert isinstance(remote, OpenAIPolicy)
    assert (remote.base_url, remote.model) == ("http://127.0.0.1:1/v1", "served-model")
    served_tiny = load_policy(f"openai:http://127.0.0.1:1#{tiny_path}")
    assert served_tiny.tokenizer.chat_template


def test_openai_spec_without_a_known_tokenizer_says_how_to_give_one():
    with pytest.raises(PolicySpecError, match="--tokenizer PATH"):
        load_policy("openai:http://127.0.0.1:1#served-model")


@pytest.mark.parametrize(
    ("spec", "why"),
    [
        ("gpt-17", "no such model folder"),
        ("openai:http://x", "needs both a URL and '#MODEL'"),
        ("openai:#m", "needs both a URL and '#MODEL'"),
    ],
)
def test_bad_specs_list_the_accepted_forms(spec, why):
    with pytest.raises(PolicySpecError) as info:
        load_policy(spec)
    message = str(info.value)
    assert why in message and "openai:URL#MODEL" in message and "expert" in message


def test_folder_without_config_is_rejected(tmp_path):
    with pytest.raises(PolicySpecError, match="holds no config.json"):
        load_policy(str(tmp_path))
