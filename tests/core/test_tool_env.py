"""ToolEnv's shared episode loop: every way a call can go wrong is explained, nothing crashes."""

from __future__ import annotations

import json

import pytest

import agentenv
from agentenv import EnvServiceError
from agentenv.check import check_env
from agentenv.env import MESSAGES, TOOL_CALLS
from agentenv.toolcalls import AssistantMessage, ToolCall

from .tool_env import CalcToolsEnv

ENV = "calc-tools-test-v0"


def _act(*calls: tuple[str, dict], content: str = "") -> str:
    message = AssistantMessage(content, tuple(ToolCall(n, a) for n, a in calls))
    return message.with_ids("c").to_action()


@pytest.fixture
def env():
    env = agentenv.make(ENV, tool_timeout=0.2, max_argument_chars=200)
    env.reset(seed=2)
    yield env
    env.close()


def test_calls_run_in_order_and_answer_as_tool_messages(env):
    obs, reward, terminated, truncated, info = env.step(
        _act(("add", {"a": 2, "b": 3}), ("shout", {"text": "hey"}))
    )
    assert not (terminated or truncated) and info["action_valid"]
    assert [(m["role"], m["tool_call_id"], m["content"]) for m in info[MESSAGES]] == [
        ("tool", "c0", "5"),
        ("tool", "c1", "HEY"),
    ]
    assert obs == "<tool_response>\n5\n</tool_response>\n<tool_response>\nHEY\n</tool_response>"
    _, reward, terminated, _, info = env.step(_act(content="It is 5."))
    assert terminated and reward == 1.0 and info["success"]


@pytest.mark.parametrize(
    "call, says",
    [
        (("mul", {"a": 1}), "unknown tool 'mul'; the tools are: add, shout, nap"),
        (("add", {"a": "2", "b": 3}), "a must be integer, got string '2'"),
        (("add", {"a": 2}), "missing required argument 'b'"),
        (("add", {"a": 2, "b": 3, "c": 1}), "unexpected argument 'c'"),
        (("add", {"a": True, "b": 3}), "a must be integer, got boolean True"),
        (("shout", {"text": "x" * 500}), "at most 200"),
        (("shout", {"text": ""}), "Error: shout needs a non-empty text"),
        (("add", {"a": 10**100, "b": 1}), ""),  # big ints are still ints: runs
        (("nap", {"seconds": 5}), "nap took longer than 0.2 s"),
        (("shout", {"text": "'; DROP TABLE x; --"}), ""),
    ],
)
def test_a_bad_call_is_explained_and_the_episode_goes_on(env, call, says):
    obs, _, terminated, truncated, info = env.step(_act(call))
    assert not (terminated or truncated)
    (record,) = info[TOOL_CALLS]
    if says:
        assert says in obs and not info["action_valid"] and not record["ok"]
    else:
        assert info["action_valid"] and record["ok"]


def test_text_that_does_not_parse_runs_nothing_and_says_why(env):
    obs, _, _, _, info = env.step('<tool_call>{"name": "add", "arguments": {"a": 1,}</tool_call>')
    assert not info["action_valid"] and "not valid JSON" in obs
    assert info[MESSAGES] == [{"role": "user", "content": obs}] and info[TOOL_CALLS] == []
    obs, _, _, _, info = env.step(_act(*[("add", {"a": 1, "b": 1})] * 9))
    assert not info["action_valid"] and "9 calls in one message; at most 8" in obs


def test_a_dead_service_raises_instead_of_being_explained():
    class Outage(CalcToolsEnv):
        async def call_tool(self, call):
            raise EnvServiceError(
                "tool service at http://127.0.0.1:9 is gone", url="http://127.0.0.1:9"
            )

    env = Outage()
    env.reset(seed=0)
    with pytest.raises(EnvServiceError, match="127.0.0.1:9"):
        env.step(_act(("add", {"a": 1, "b": 2})))


def test_the_turn_budget_truncates_and_judges_without_an_answer():
    env = agentenv.make(ENV, max_turns=2)
    env.reset(seed=0)
    env.step(_act(("add", {"a": 0, "b": 1})))
    _, reward, terminated, truncated, info = env.step(_act(("add", {"a": 0, "b": 1})))
    assert truncated and not terminated and reward == 0.0
    assert info["reward_components"] == {"answer": 0.0} and not info["success"]


def test_text_protocol_lists_tools_in_the_system_prompt():
    env = agentenv.make(ENV, protocol="text")
    _, info = env.reset(seed=1)
    assert env.tools is None and "<tools>" in info["system_prompt"]
    schema = json.loads(info["system_prompt"].split("<tools>\n")[1].split("\n")[0])
    assert schema["function"]["name"] == "add"
    obs, *_, info = env.step(
        '<tool_call>\n{"name": "add", "arguments": {"a": 1, "b": 2}}\n</tool_call>'
    )
    assert obs == "<tool_response>\n3\n</tool_response>"
    assert info[MESSAGES] == [{"role": "user", "content": obs}]


@pytest.mark.parametrize("protocol", ["native", "text"])
def test_the_contract_checker_passes(protocol):
    report = check_env(ENV, env_kwargs={"protocol": protocol})
    assert report.passed, report.failures


def test_bad_knobs_are_refused():
    with pytest.raises(ValueError, match="protocol must be one of"):
        CalcToolsEnv(protocol="xml")
    with pytest.raises(ValueError, match="max_calls_per_turn must be a positive integer"):
        CalcToolsEnv(max_calls_per_turn=0)


class SubmitEnv(CalcToolsEnv):
    """Ends through a ``shout`` call (the episode's submit); a bare reply is invalid."""

    ends_on_reply = False

    async def call_tool(self, call: ToolCall) -> str:
        result = await super().call_tool(call)
        self.finished = call.name == "shout"
        return result


def test_an_env_can_end_through_a_tool_and_refuse_bare_replies():
    env = SubmitEnv()
    env.reset(seed=1)
    obs, _, terminated, _, info = env.step("The sum is 3.")
    assert not terminated and not info["action_valid"] and "called no tool" in obs
    action = _act(("shout", {"text": "done"}), ("add", {"a": 1, "b": 2}))
    _, reward, terminated, truncated, info = env.step(action)
    assert terminated and not truncated and reward == 0.0
    assert [c["name"] for c in info[TOOL_CALLS]] == ["shout"]  # the call after it did not run
    env.close()
