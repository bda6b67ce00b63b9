"""Native tool calls through the rollout: render → generate → parse → render, per template family.

For each tool-capable template (the tiny model's, and test templates in the style of Qwen2.5,
Qwen3, Llama-3.1 JSON and pythonic tool use) a scripted model writes tool calls the way that
family does. The trajectory must hold exactly the ids the policy was fed and produced, the loss
mask must cover exactly the generated tokens (tool-call tokens included), and the prompt fed at
each turn must be the template's own rendering of the conversation so far (train/inference
parity: the parsed calls, rendered back by the template, give the text the model wrote).
"""

from __future__ import annotations

import asyncio
import functools
import json
import types

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from transformers import AutoTokenizer

import agentenv
from agentenv.models import tiny
from agentenv.policies.base import SamplingParams
from agentenv.policies.hf import HFPolicy
from agentenv.policies.scripted import ScriptedPolicy
from agentenv.rollout import EpisodeRequest, RolloutConfig, RolloutEngine
from agentenv.toolcalls import detect_parser, template_messages

from . import tool_env  # noqa: F401  (registers calc-tools-test-v0)
from .tool_templates import LLAMA31, LLAMA_SPECIAL_TOKENS, PYTHONIC, QWEN3, QWEN25

ENV = "calc-tools-test-v0"


def _json(value) -> str:
    return json.dumps(value, ensure_ascii=False)  # as templates' tojson writes it


def _hermes(calls: list[tuple[str, dict]]) -> str:
    return "\n".join(
        f"<tool_call>\n{_json({'name': n, 'arguments': a})}\n</tool_call>" for n, a in calls
    )


def _plan(task: dict, text: str) -> list[tuple[str, dict]]:
    return [("add", {"a": task["a"], "b": task["b"]}), ("shout", {"text": text})]


def _answer(task: dict) -> str:
    return f"The sum is {task['a'] + task['b']}."


def _turn(messages: list[dict]) -> int:
    return sum(m["role"] == "assistant" for m in messages)


def hermes_solve(task, messages, text="ok"):
    turn = _turn(messages)
    return _hermes(_plan(task, text)) if turn == 0 else _answer(task)


def qwen3_solve(task, messages, text="ok"):
    turn = _turn(messages)
    body = _hermes(_plan(task, text)) if turn == 0 else _answer(task)
    return f"<think>\nStep {turn}.\n</think>\n\n{body}"


def llama_solve(task, messages, text="ok"):
    turn = _turn(messages)
    calls = _plan(task, text)
    if turn < len(calls):  # Llama-3.1 templates take one call per turn
        name, args = calls[turn]
        return _json({"name": name, "parameters": args})
    return _answer(task)


def pythonic_solve(task, messages, text="ok"):
    if _turn(messages) == 0:
        calls = ", ".join(
            f"{n}({', '.join(f'{k}={_json(v)}' for k, v in a.items())})"
            for n, a in _plan(task, text)
        )
        return f"[{calls}]"
    return _answer(task)


FAMILIES = {
    "tiny": (None, hermes_solve, "hermes"),
    "qwen2.5": (QWEN25, hermes_solve, "hermes"),
    "qwen3": (QWEN3, qwen3_solve, "hermes"),
    "llama3.1": (LLAMA31, llama_solve, "llama3_json"),
    "pythonic": (PYTHONIC, pythonic_solve, "pythonic"),
}


@functools.cache
def _tokenizer(template: str | None):
    tokenizer = AutoTokenizer.from_pretrained(tiny())
    if template is not None:
        tokenizer.chat_template = template
    if template in (LLAMA31, PYTHONIC):
        tokenizer.add_special_tokens({"additional_special_tokens": list(LLAMA_SPECIAL_TOKENS)})
        tokenizer.eos_token = "<|eot_id|>"
    return tokenizer


class Recording(ScriptedPolicy):
    """The scripted model, keeping every prompt and episode context it was given."""

    def __init__(self, solve, tokenizer):
        super().__init__(types.ModuleType("solver"), tokenizer)
        self._fixed.solve = solve
        self.seen: list[tuple[list[int], list[dict]]] = []

    async def generate(self, prompts, sampling, *, contexts=None):
        self.seen += [(list(p), list(c.messages)) for p, c in zip(prompts, contexts, strict=True)]
        return await super().generate(prompts, sampling, contexts=contexts)


def _tools(seed: int) -> list[dict]:
    env = agentenv.make(ENV)
    try:
        env.reset(seed=seed)
        return env.tools
    finally:
        env.close()


# Any text a tool is sent and sends back, except what would close the call's own markup.
tool_text = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=30
).filter(lambda t: "tool_call" not in t and "think>" not in t)


@pytest.mark.parametrize("family", list(FAMILIES))
@settings(max_examples=8, deadline=None)
@given(text=tool_text, seed=st.integers(0, 1000))
def test_tool_calls_are_token_faithful_and_render_back(family, text, seed):
    template, solve, parser = FAMILIES[family]
    tokenizer = _tokenizer(template)
    assert detect_parser(tokenizer) == parser
    policy = Recording(lambda task, messages: solve(task, messages, text), tokenizer)
    engine = RolloutEngine(policy, RolloutConfig(max_tokens_per_turn=256))
    (traj,) = asyncio.run(engine.run([EpisodeRequest(ENV, seed, sample_seed=0)]))

    assert traj.status == "done" and traj.success, traj.reason
    assert all(t.action_valid for t in traj.turns)
    calls = [c["name"] for t in traj.turns for c in t.tool_calls]
    assert sorted(calls) == ["add", "shout"] and all(
        c["ok"] for t in traj.turns for c in t.tool_calls
    )
    arr = traj.arrays()
    # every prompt is a prefix of the record: the policy was fed exactly what is stored
    for prompt, _ in policy.seen:
        assert traj.token_ids[: len(prompt)] == prompt
    # the loss mask covers exactly the generated ids, turn by turn, tool-call tokens included
    generated = [
        policy.encode_action(t.action, SamplingParams(max_tokens=256)).token_ids for t in traj.turns
    ]
    assert arr["token_ids"][arr["loss_mask"] == 1].tolist() == sum(generated, [])
    for turn, ids in zip(traj.turns, generated, strict=True):
        mask = arr["loss_mask"][arr["turn_ids"] == turn.index]
        assert int(mask.sum()) == len(ids) == turn.action_tokens
    # parity: each prompt is the template's rendering of the conversation the policy saw
    tools = _tools(seed)
    for prompt, messages in policy.seen:
        rendered = tokenizer.apply_chat_template(
            template_messages(messages), tools=tools, tokenize=False, add_generation_prompt=True
        )
        assert tokenizer.decode(prompt, skip_special_tokens=False) == rendered


def test_qwen25_string_arguments_are_not_double_encoded():
    tokenizer = _tokenizer(QWEN25)
    history = [
        {"role": "user", "content": "u"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "c",
                    "type": "function",
                    "function": {"name": "add", "arguments": '{"a": 1}'},
                }
            ],
        },
    ]
    raw = tokenizer.apply_chat_template(history, tokenize=False)
    fixed = tokenizer.apply_chat_template(template_messages(history), tokenize=False)
    assert '"arguments": "{\\"a\\": 1}"' in raw  # the template's quirk, left alone
    assert '"arguments": {"a": 1}' in fixed


def test_parallel_calls_a_template_refuses_end_the_episode_with_its_reason():
    tokenizer = _tokenizer(LLAMA31)
    policy = Recording(hermes_solve, tokenizer)  # two calls in one turn, in hermes blocks
    engine = RolloutEngine(policy, RolloutConfig(tool_parser="hermes"))
    (traj,) = asyncio.run(engine.run([EpisodeRequest(ENV, 1)]))
    assert traj.status == "error" and "single tool-calls" in traj.reason


def test_a_template_without_tools_names_the_ways_out():
    tokenizer = AutoTokenizer.from_pretrained(tiny())
    tokenizer.chat_template = (
        "{% for m in messages %}{{ m['role'] + ': ' + m['content'] + '\\n' }}{% endfor %}"
    )
    engine = RolloutEngine(Recording(hermes_solve, tokenizer))
    (traj,) = asyncio.run(engine.run([EpisodeRequest(ENV, 1)]))
    assert traj.status == "error"
    assert "tool_parser=" in traj.reason and "protocol='text'" in traj.reason


def test_a_sampled_model_on_a_tool_env_stays_token_faithful():
    """The untrained tiny model writes no valid calls: every turn is an explained invalid action
    or a final answer, and the record still holds exactly what was generated and fed."""
    policy = HFPolicy.from_pretrained(tiny(), device="cpu")
    engine = RolloutEngine(policy, RolloutConfig(max_tokens_per_turn=24, max_turns=3))
    requests = [EpisodeRequest(ENV, s, sample_seed=s) for s in range(4)]
    trajectories = asyncio.run(engine.run(requests))
    for traj in trajectories:
        assert traj.status in ("done", "truncated"), traj.reason
        arr = traj.arrays()
        assert np.all(arr["logprobs"][arr["loss_mask"] == 0] == 0.0)
        assert int(arr["loss_mask"].sum()) == sum(t.action_tokens for t in traj.turns)
