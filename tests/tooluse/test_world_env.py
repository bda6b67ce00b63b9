"""ToolWorldEnv episodes in both protocols: the expert solves the generated tasks, the random
baseline does not, and the outcome and process rewards say why an episode failed."""

from __future__ import annotations

import copy
import pickle
from collections.abc import Awaitable
from dataclasses import replace
from typing import Any

import numpy as np
import pytest

from agentenv.envs.tooluse.world import expert
from agentenv.envs.tooluse.world.env import SYSTEM_PROMPT, ToolWorldEnv
from agentenv.envs.tooluse.world.tasks import Task
from agentenv.play import Actor, Episode, assistant_message, play_episode
from agentenv.registry import make
from agentenv.rewards.toolcall import toolrl_score


def play(
    env: ToolWorldEnv, task: str | Task | None = None, actor: Actor = expert.solve, seed: int = 0
) -> Awaitable[Episode]:
    return play_episode(env, actor, seed=seed, options={"task": task} if task else None)


@pytest.fixture(params=["native", "text"])
async def env(request: pytest.FixtureRequest):
    environment = ToolWorldEnv(protocol=request.param)
    yield environment
    await environment.aclose()


async def test_the_expert_solves_at_least_99_percent_of_generated_tasks(env) -> None:
    ids = [f"test-{i}" for i in range(150)] + [f"compositional-{i}" for i in range(150)]
    ids += [f"train-{i}" for i in range(100)]
    results = [await play(env, task_id) for task_id in ids]
    solved = sum(r.success for r in results)
    assert solved / len(ids) >= 0.99, [
        i for i, r in zip(ids, results, strict=True) if not r.success
    ][:5]
    for task_id, result in zip(ids, results, strict=True):
        if not result.success:
            continue
        final = result.infos[-1]["reward_components"]
        assert final["state_match"] == final["facts"] == final["outcome"] == 1.0
        assert final["toolrl"] == 3.0
        assert all(i["action_valid"] for i in result.infos[1:])
        assert all(i["reward_components"]["format"] == 1.0 for i in result.infos[1:])
        calls = env.get_task(task_id).num_calls
        assert len(result.rewards) <= calls + 1  # one turn per call at most, then the answer
    parallel = [
        r for i, r in zip(ids, results, strict=True) if len(r.rewards) <= env.get_task(i).num_calls
    ]
    assert len(parallel) > 50  # independent calls go out together


async def test_the_random_baseline_rarely_succeeds(env) -> None:
    rng = np.random.default_rng(0)

    def actor(task: Task, messages: list[dict[str, Any]]) -> str:
        return expert.random_action(task, messages, rng)

    results = [await play(env, f"test-{i}", actor) for i in range(60)]
    assert sum(r.success for r in results) <= 6
    assert any(not i["action_valid"] for r in results for i in r.infos[1:])


async def test_protocols_show_the_tools(env) -> None:
    _, info = await env.areset(options={"task": "test-3"})
    names = list(env.task.tools)
    if env.protocol == "native":
        assert [t["function"]["name"] for t in env.tools] == names
        assert info["system_prompt"] == SYSTEM_PROMPT
    else:
        assert env.tools is None
        assert all(f'"name": "{n}"' in info["system_prompt"] for n in names)
        assert "<tool_call>" in info["system_prompt"]
    truth = info["ground_truth"]
    assert truth["facts"] == list(env.task.facts) and truth["state"] == env.task.gold_state
    assert [c["name"] for c in truth["calls"]] == [c.name for c in env.task.gold_calls]


EXTRA_WRITE = (
    '<tool_call>\n{"name": "update_email", "arguments": {"customer_id": "C1000", '
    '"email": "x@y.org"}}\n</tool_call>'
)


async def test_an_extra_write_fails_the_state_check_but_not_the_facts(env) -> None:
    task = next(env.get_task(f"test-{i}") for i in range(200) if env.get_task(f"test-{i}").plan)
    task = replace(task, tools=(*task.tools, "update_email"))

    def meddler(task: Task, messages: list[dict[str, Any]]) -> str:
        action = expert.solve(task, messages)
        done = any("x@y.org" in str(m.get("content")) for m in messages)
        return action if "<tool_call>" in action or done else EXTRA_WRITE

    result = await play(env, task, meddler)
    final = result.infos[-1]["reward_components"]
    assert final["state_match"] == 0.0 and final["facts"] == 1.0 and not result.success
    assert final["toolrl"] < 3.0 and result.rewards[-1] == 0.0


async def test_a_wrong_answer_or_no_answer_fails(env) -> None:
    def wrong(task: Task, messages: list[dict[str, Any]]) -> str:
        action = expert.solve(task, messages)
        return action if "<tool_call>" in action else "All done!"

    task = env.get_task("test-0")
    result = await play(env, task, wrong)
    final = result.infos[-1]["reward_components"]
    assert final["state_match"] == 1.0 and final["facts"] < 1.0 and result.rewards[-1] == 0.0

    short = ToolWorldEnv(protocol=env.protocol, max_turns=1, min_calls=3, irrelevance=0.0)
    result = await play(short, "test-0")
    assert not result.terminated and not result.success
    assert result.infos[-1]["reward_components"]["outcome"] == 0.0
    await short.aclose()


async def test_irrelevance_tasks_need_silence(env) -> None:
    silent = ToolWorldEnv(protocol=env.protocol, irrelevance=1.0)
    task = silent.get_task("test-1")
    assert task.no_tool
    assert (await play(silent, task)).success

    def busy(task: Task, messages: list[dict[str, Any]]) -> str:
        if len(messages) == 2:
            return '<tool_call>\n{"name": "list_categories", "arguments": {}}\n</tool_call>'
        return expert.solve(task, messages)

    shown = silent.get_task(
        next(
            f"test-{i}"
            for i in range(50)
            if "list_categories" in silent.get_task(f"test-{i}").tools
        )
    )
    result = await play(silent, shown, busy)
    final = result.infos[-1]["reward_components"]
    assert final["state_match"] == final["facts"] == 1.0 and not result.success
    assert final["toolrl"] == -3.0
    await silent.aclose()


async def test_call_credit_sums_to_the_episode_toolrl_score(env) -> None:
    rng = np.random.default_rng(1)

    def mixed(task: Task, messages: list[dict[str, Any]]) -> str:
        if rng.random() < 0.3:
            return expert.random_action(task, messages, rng)
        return expert.solve(task, messages)

    for i in range(20):
        result = await play(env, f"compositional-{i}", mixed)
        credits = [info["reward_components"]["call_credit"] for info in result.infos[1:]]
        final = result.infos[-1]["reward_components"]
        assert sum(credits) == pytest.approx(final["toolrl_score"])
        predicted = [r.call for r in env.call_log]
        assert final["toolrl_score"] == pytest.approx(toolrl_score(env.task.gold_calls, predicted))


async def test_bad_calls_are_invalid_and_explained(env) -> None:
    await env.areset(options={"task": "test-2"})
    name = env.task.tools[0]
    cases = {
        "<tool_call>\n{not json}\n</tool_call>": "could not be read as tool calls",
        '<tool_call>\n{"name": "drop_database", "arguments": {}}\n</tool_call>': "unknown tool 'drop_database'",
        f'<tool_call>\n{{"name": "{name}", "arguments": {{"zzz": 1}}}}\n</tool_call>': "unexpected argument 'zzz'",
        f'<tool_call>\n{{"name": "{name}", "arguments": {{"q": "{"9" * 20000}"}}}}\n</tool_call>': (
            "characters; at most 16384"
        ),
    }
    for action, message in cases.items():
        observation, reward, terminated, truncated, info = await env.astep(action)
        assert message in observation, observation[:200]
        assert info["action_valid"] is False and not terminated
        assert info["reward_components"]["format"] == 0.0


async def test_anchors_name_the_state_and_what_was_read(env) -> None:
    first = await play(env, "test-5")
    second = await play(env, "test-5")
    anchors = [i["anchor"] for i in first.infos]
    assert anchors == [i["anchor"] for i in second.infos]
    assert len(set(anchors)) == len(anchors) - 1  # the answer turn changes nothing
    assert all(hash(a) is not None for a in anchors)


def test_a_copy_taken_mid_episode_replays_its_calls_and_finishes() -> None:
    env = make("tooluse-v0", split="test")
    task = next(
        env.get_task(f"test-{i}") for i in range(100) if env.get_task(f"test-{i}").num_calls >= 3
    )
    observation, info = env.reset(options={"task": task.id})
    messages = [
        {"role": "system", "content": info["system_prompt"]},
        {"role": "user", "content": observation},
    ]
    for turn in range(2):
        action = expert.solve(env.task, messages)
        messages.append(assistant_message(env, action, turn))
        observation, *_, info = env.step(action)
        messages += info["messages"]
    for twin in (pickle.loads(pickle.dumps(env)), copy.deepcopy(env)):
        history = list(messages)
        while True:
            action = expert.solve(twin.task, history)
            history.append(assistant_message(twin, action, len(history)))
            observation, reward, terminated, truncated, info = twin.step(action)
            history += info.get("messages") or []
            if terminated or truncated:
                break
        assert info["success"] and reward == 1.0
        twin.close()
    env.close()
