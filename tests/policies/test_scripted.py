"""ScriptedPolicy and RandomPolicy over the search env's expert, the generic random baseline of
an env without one, and spec parsing."""

from __future__ import annotations

import re
import types

import numpy as np
import pytest

import agentenv
from agentenv.env import TextEnv
from agentenv.policies import EpisodeContext, SamplingParams
from agentenv.policies.hf import HFPolicy
from agentenv.policies.openai import OpenAIPolicy
from agentenv.policies.scripted import (
    ClosedBookPolicy,
    RandomPolicy,
    ScriptedPolicy,
    expert_module,
    generic_random_action,
    protocol_tags,
)
from agentenv.policies.specs import PolicySpecError, load_policy

ENV = "search-v0"
NO_EXPERT = "say-no-expert-test-v0"
SAY_CHAT = [
    {"role": "system", "content": "Say the next number between <say> and </say>."},
    {"role": "user", "content": "Count down from seven."},
]


class SayEnv(TextEnv):
    """An env registered without an expert module (only its registry entry is used here)."""


@pytest.fixture(scope="module")
def no_expert_env() -> str:
    """Registered at test time, not import time: collection-time registry listings stay as
    they are."""
    agentenv.register(NO_EXPERT, f"{__name__}:SayEnv")
    return NO_EXPERT


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


def test_protocol_tags_are_the_closed_ones_in_order():
    text = "Use <search> q </search> or <answer> a </answer>; <information> comes back </b>"
    assert protocol_tags(text) == ["search", "answer"]


async def test_random_policy_without_an_expert_is_generic_and_seeded(tokenizer, no_expert_env):
    contexts = [EpisodeContext(no_expert_env, 7, SAY_CHAT) for _ in range(3)]

    async def texts(policy: RandomPolicy) -> list[str]:
        return [
            c.text
            for seed in range(20)
            for c in await policy.generate([[1]] * 3, SamplingParams(seed=seed), contexts=contexts)
        ]

    actions = await texts(RandomPolicy(tokenizer=tokenizer))
    assert actions == await texts(load_policy(f"random:{no_expert_env}", tokenizer=tokenizer))
    assert len(set(actions)) > 30
    words = set(re.findall(r"\w+", " ".join(m["content"] for m in SAY_CHAT)))
    tagged = [a for a in actions if a.startswith("<say> ") and a.endswith(" </say>")]
    assert len(tagged) > 10 and all(set(a[6:-7].split()) <= words for a in tagged)
    assert any(a.split() and set(a.split()) <= words for a in actions if a not in tagged)
    with pytest.raises(ValueError, match="registers no expert module"):
        ScriptedPolicy(no_expert_env, tokenizer)


def test_generic_random_action_without_tags_is_words_or_junk():
    chat = [{"role": "system", "content": "Reply in words."}, {"role": "user", "content": "hi"}]
    rng = np.random.default_rng(0)
    actions = [generic_random_action(chat, rng) for _ in range(100)]
    rng = np.random.default_rng(0)
    assert actions == [generic_random_action(chat, rng) for _ in range(100)]
    bare = [a for a in actions if a and set(a.split()) <= {"Reply", "in", "words", "hi"}]
    assert 75 <= len(bare) < 100  # 90% words, 10% junk
    assert not any(re.fullmatch(r"<(\w+)> .* </\1>", a) for a in actions)
