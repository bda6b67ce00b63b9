"""BFCLEnv end to end: the expert in both protocols, verdicts, prompts, splits, and a fuzz."""

from __future__ import annotations

import json
import string

import numpy as np
import pytest

from agentenv.envs.tooluse.bfcl import expert
from agentenv.envs.tooluse.bfcl.env import AST_ERROR, SYSTEM_PROMPT, BFCLEnv
from agentenv.evaluate import Suite, SuiteEntry, evaluate
from agentenv.policies.specs import load_policy
from agentenv.registry import make
from agentenv.toolcalls import AssistantMessage, ToolCall, decode_action

CATEGORIES = ("simple", "multiple", "parallel", "parallel_multiple", "irrelevance")


def native(text: str) -> str:
    """The action the rollout sends a native-tools env for ``text``."""
    return decode_action(text).to_action()


def call(name: str, **arguments) -> str:
    return AssistantMessage("", (ToolCall(name, arguments),)).to_action()


@pytest.mark.parametrize("protocol", ["native", "text"])
async def test_the_expert_solves_every_shipped_task(protocol):
    env = BFCLEnv(protocol=protocol)
    assert set(env.splits()) == set(CATEGORIES)
    for split in env.splits():
        for task_id in env.task_ids(split):
            _, info = await env.areset(options={"task": task_id})
            assert info["task_id"] == task_id
            text = expert.solve(env.task, [])
            action = native(text) if protocol == "native" else text
            _, reward, terminated, truncated, info = await env.astep(action)
            assert (reward, terminated, truncated) == (1.0, True, False), (task_id, info)
            assert info["reward_components"] == {"ast": 1.0, "format": 1.0}
            assert info["success"] and info["action_valid"] and info[AST_ERROR] == ""


@pytest.mark.parametrize("protocol", ["native", "text"])
async def test_the_scripted_expert_scores_full_marks_through_the_rollout(protocol):
    entries = [SuiteEntry("bfcl-v0", {"protocol": protocol}, split) for split in CATEGORIES]
    result = await evaluate(load_policy("expert"), Suite("bfcl", entries), progress=False)
    assert len(result.rows) == 63
    assert all(row["status"] == "done" for row in result.rows)
    assert [s.success_rate for s in result.summaries] == [1.0]


async def test_protocols_show_the_tools_their_way():
    native_env, text_env = BFCLEnv(), BFCLEnv(protocol="text")
    _, info = await native_env.areset(options={"task": "simple_0"})
    assert [t["function"]["name"] for t in native_env.tools] == ["geometry_circle_area"]
    parameters = native_env.tools[0]["function"]["parameters"]
    assert parameters["type"] == "object"
    assert parameters["properties"]["radius"]["type"] == "number"
    assert info["system_prompt"] == SYSTEM_PROMPT
    _, info = await text_env.areset(options={"task": "simple_0"})
    assert text_env.tools is None
    assert "<tools>" in info["system_prompt"] and "geometry_circle_area" in info["system_prompt"]


async def test_a_wrong_call_fails_with_the_checkers_reason():
    env = BFCLEnv()
    await env.areset(options={"task": "simple_0"})
    observation, reward, terminated, _, info = await env.astep(
        call("geometry_circle_area", radius=5)
    )
    assert (reward, terminated, info["success"], info["action_valid"]) == (0.0, True, False, True)
    assert info["reward_components"] == {"ast": 0.0, "format": 1.0}
    assert info[AST_ERROR] == "value_error:others" and "radius" in observation


async def test_the_original_dotted_name_is_accepted_too():
    env = BFCLEnv()
    await env.areset(options={"task": "simple_0"})
    assert (await env.astep(call("geometry.circle_area", radius=4.5)))[1] == 1.0


async def test_irrelevance_passes_only_without_a_call():
    env = BFCLEnv()
    await env.areset(options={"task": "irrelevance_0"})
    _, reward, *_, info = await env.astep("I cannot help with that using these functions.")
    assert reward == 1.0 and info["success"]
    await env.areset(options={"task": "irrelevance_0"})
    _, reward, *_, info = await env.astep(call("geometry_circle_area", radius=1))
    assert reward == 0.0 and info[AST_ERROR] == "irrelevance_error:decoder_success"


@pytest.mark.parametrize(
    "action",
    [
        '<tool_call>\n{"name": "geometry_circle_area", "arguments": {"radius": 4.5}\n',
        "<tool_call>\nnot json\n</tool_call>",
        '<tool_call>\n{"arguments": {}}\n</tool_call>',
        "</tool_call>",
    ],
)
async def test_an_unreadable_message_ends_the_episode_invalid(action):
    for task in ("simple_0", "irrelevance_0"):  # a broken call is no abstention either
        env = BFCLEnv()
        await env.areset(options={"task": task})
        observation, reward, terminated, truncated, info = await env.astep(action)
        assert (reward, terminated, truncated) == (0.0, True, False)
        assert info["action_valid"] is False and info["success"] is False
        assert info["reward_components"] == {"ast": 0.0, "format": 0.0}
        assert info[AST_ERROR] == "format" and "could not be read" in observation


async def test_too_many_calls_are_invalid():
    env = BFCLEnv(max_calls_per_turn=2)
    await env.areset(options={"task": "parallel_1"})  # expects 3 calls
    _, reward, *_, info = await env.astep(native(expert.solve(env.task, [])))
    assert reward == 0.0 and not info["action_valid"]


def bfcl_file(folder, category, rows, answers=None):
    path = folder / f"BFCL_v4_{category}.json"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    if answers is not None:
        (folder / "possible_answer").mkdir(exist_ok=True)
        text = "".join(json.dumps(a) + "\n" for a in answers)
        (folder / "possible_answer" / path.name).write_text(text)
    return path


FUNCTION = {
    "name": "is_prime",
    "description": "Tell whether n is prime.",
    "parameters": {"type": "dict", "properties": {"n": {"type": "integer"}}, "required": ["n"]},
}


async def test_system_messages_join_the_prompt_and_other_messages_the_observation(tmp_path):
    messages = [
        {"role": "system", "content": "Answer tersely."},
        {"role": "user", "content": "Is 7 prime?"},
        {"role": "assistant", "content": "Which number?"},
        {"role": "user", "content": "Seven."},
    ]
    rows = [
        {
            "id": "r0",
            "question": [messages, [{"role": "user", "content": "later"}]],
            "function": [FUNCTION],
        }
    ]
    path = bfcl_file(tmp_path, "live_relevance", rows)
    env = BFCLEnv(path=path)
    assert env.splits() == {"live_relevance": 1}
    observation, info = await env.areset(seed=0)
    assert info["system_prompt"] == f"{SYSTEM_PROMPT}\n\nAnswer tersely."
    assert observation == "user: Is 7 prime?\n\nassistant: Which number?\n\nuser: Seven."
    assert (await env.astep(call("is_prime", n=0)))[1] == 1.0  # relevance: any call


async def test_a_folder_a_category_filter_and_a_train_test_split(tmp_path):
    rows = [
        {
            "id": f"p{i}",
            "question": [[{"role": "user", "content": f"Is {i} prime?"}]],
            "function": [FUNCTION],
        }
        for i in range(40)
    ]
    answers = [{"id": f"p{i}", "ground_truth": [{"is_prime": {"n": [i]}}]} for i in range(40)]
    bfcl_file(tmp_path, "live_simple", rows, answers)
    bfcl_file(tmp_path, "irrelevance", [{**r, "id": f"i{n}"} for n, r in enumerate(rows[:3])])
    assert BFCLEnv(path=tmp_path).splits() == {"irrelevance": 3, "live_simple": 40}
    assert BFCLEnv(path=tmp_path, category="live_simple").splits() == {"live_simple": 40}
    env = make("bfcl-v0", path=str(tmp_path), category=["live_simple"], test_fraction=0.25)
    sizes = env.splits()
    assert set(sizes) == {"train", "test"} and sum(sizes.values()) == 40 and sizes["test"] > 0
    again = BFCLEnv(path=tmp_path, category=["live_simple"], test_fraction=0.25)
    assert again.task_ids("test") == env.task_ids("test")
    env = BFCLEnv(path=tmp_path, category="live_simple", test_fraction=0.25, split="test")
    for seed in range(10):
        await env.areset(seed=seed)
        assert env.task.id in again.task_ids("test")
    with pytest.raises(ValueError, match="no split"):
        BFCLEnv(path=tmp_path, split="simple")


# -- fuzz -------------------------------------------------------------------------------------
JUNK = string.printable + '<>{}[]":,/\\\u00e9\u4e2d\U0001f600\x00\ud800'
FRAGMENTS = (
    "<tool_call>",
    "</tool_call>",
    '{"name": ',
    '"arguments": ',
    "{",
    "}",
    "[",
    "]",
    '"',
    ",",
    "null",
    "1e999",
    "-0",
    "true",
    '"role": "assistant"',
    '"tool_calls": ',
    "\n",
)

ODD_CALLS = (
    None,
    "x",
    [],
    [1],
    [{"function": {"name": 3}}],
    [{"function": {"name": "f", "arguments": "{bad"}}],
    [{"function": {"name": "f", "arguments": [1]}}],
)


def fuzz_action(rng: np.random.Generator, good: str) -> str:
    kind = int(rng.integers(6))
    if kind == 0:  # random characters
        return "".join(rng.choice(list(JUNK), size=int(rng.integers(0, 80))))
    if kind == 1:  # random protocol fragments
        return "".join(rng.choice(FRAGMENTS, size=int(rng.integers(1, 12))))
    if kind == 2:  # the expert's answer with a cut or a character dropped
        cut = int(rng.integers(len(good) + 1))
        return good[:cut] if rng.random() < 0.5 else good[:cut] + good[cut + 1 :]
    if kind == 3:  # an OpenAI message with odd fields
        calls = ODD_CALLS[int(rng.integers(len(ODD_CALLS)))]
        content = [None, "", "hi", 5][int(rng.integers(4))]
        return json.dumps({"role": "assistant", "content": content, "tool_calls": calls})
    if kind == 4:  # well-formed calls with random names and values
        values = [None, 1, -2.5, "x", [], {}, [1, "a"], {"k": [1]}, True]
        arguments = {
            str(rng.choice(["n", "radius", "units", "zz"])): values[int(rng.integers(9))]
            for _ in range(int(rng.integers(0, 4)))
        }
        return call(
            str(rng.choice(["geometry_circle_area", "stats_mean", "nope", "a.b"])), **arguments
        )
    return good


async def test_fuzzed_actions_never_raise_and_malformed_ones_are_invalid():
    env = BFCLEnv()
    rng = np.random.default_rng(0)
    ids = [i for split in env.splits() for i in env.task_ids(split)]
    seen = {True: 0, False: 0}
    for n in range(5000):
        await env.areset(options={"task": ids[n % len(ids)]})
        good = expert.solve(env.task, [])
        action = fuzz_action(rng, good if rng.random() < 0.5 else native(good))
        observation, reward, terminated, truncated, info = await env.astep(action)
        message = decode_action(action)
        malformed = bool(message.error) or len(message.tool_calls) > env.max_calls_per_turn
        assert isinstance(observation, str) and terminated and not truncated
        assert info["action_valid"] is not malformed, action
        assert reward in (0.0, 1.0) and (reward == 1.0) == info["success"]
        assert not (malformed and reward), action
        seen[malformed] += 1
    assert min(seen.values()) > 500
