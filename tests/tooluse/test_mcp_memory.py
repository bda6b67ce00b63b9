"""McpEnv on Python MCP servers connected in-memory: tools from ``list_tools``, results, tool
errors, timeouts, server specs, and a fuzz of malformed actions."""

from __future__ import annotations

import copy
import json
import pickle
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("mcp")

import anyio  # noqa: E402
from mcp.server.mcpserver import MCPServer  # noqa: E402
from mcp.server.mcpserver.exceptions import ToolError as McpToolError  # noqa: E402

import agentenv  # noqa: E402
from agentenv.envs.tooluse.mcp import expert  # noqa: E402
from agentenv.envs.tooluse.mcp.client import (  # noqa: E402
    PYTHON,
    ServerSpec,
    resolve_target,
    server_spec,
)
from agentenv.envs.tooluse.mcp.env import TIME_TARGET, McpEnv  # noqa: E402
from agentenv.service import EnvServiceError  # noqa: E402


def make_server() -> MCPServer:
    """Typed tools, one that raises, one the server refuses with a message, one that naps."""
    server = MCPServer("test-tools")

    @server.tool()
    def add(a: int, b: int) -> int:
        """Add two integers."""
        return a + b

    @server.tool()
    def shout(text: str) -> str:
        """The text in capitals."""
        return text.upper()

    @server.tool()
    def crash(reason: str) -> str:
        """Always raises."""
        raise ValueError(reason)

    @server.tool()
    def refuse(order_id: str) -> str:
        """Fails with a message for the model."""
        raise McpToolError(f"no such order: {order_id}")

    @server.tool()
    async def nap(seconds: float) -> str:
        """Sleeps."""
        await anyio.sleep(seconds)
        return "rested"

    return server


SERVER = make_server()


def call(name: str, **arguments) -> str:
    return f"<tool_call>\n{json.dumps({'name': name, 'arguments': arguments})}\n</tool_call>"


@pytest.fixture
def tasks(tmp_path: Path) -> Path:
    rows = [
        {
            "id": f"add-{a}-{b}",
            "prompt": f"What is {a} + {b}?",
            "answer": str(a + b),
            "check": {
                "answer_equals": str(a + b),
                "calls_include": [{"name": "add", "arguments": {"a": a, "b": b}}],
            },
        }
        for a in range(5)
        for b in range(4)
    ]
    path = tmp_path / "add.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


@pytest.fixture
def env(tasks):
    env = McpEnv(SERVER, tasks, call_timeout=0.5, probe_timeout=2.0)
    yield env
    env.close()


async def test_tools_come_from_list_tools_with_their_schemas(env):
    _, info = await env.areset(options={"task": "add-2-3"})
    names = [t["function"]["name"] for t in env.tools]
    assert names == ["add", "shout", "crash", "refuse", "nap"]
    add = env.tools[0]["function"]
    assert add["description"] == "Add two integers."
    assert add["parameters"]["properties"]["a"]["type"] == "integer"
    assert sorted(add["parameters"]["required"]) == ["a", "b"]
    assert info["task_id"] == "add-2-3" and info["ground_truth"] == "5"
    assert info["anchor"] == ("add-2-3", ())


async def test_a_solved_task_scores_every_check(env):
    await env.areset(options={"task": "add-2-3"})
    obs, reward, done, _, info = await env.astep(call("add", a=2, b=3))
    assert (reward, done, info["action_valid"]) == (0.0, False, True)
    assert info["messages"][0]["content"] == "5"  # structured {"result": 5}, unwrapped
    assert info["anchor"] != ("add-2-3", ())
    obs, reward, done, _, info = await env.astep(" 5 ")
    assert (reward, done, info["success"]) == (1.0, True, True)
    assert info["reward_components"] == {"answer_equals": 1.0, "calls_include": 1.0}


async def test_a_wrong_answer_and_a_missing_call_fail_their_checks(env):
    await env.areset(options={"task": "add-2-3"})
    await env.astep(call("add", a=3, b=2))
    _, reward, done, _, info = await env.astep("6")
    assert (reward, done, info["success"]) == (0.0, True, False)
    assert info["reward_components"] == {"answer_equals": 0.0, "calls_include": 0.0}


async def test_tool_errors_come_back_as_tool_messages(env):
    await env.areset(options={"task": "add-0-0"})
    _, _, done, _, info = await env.astep(call("crash", reason="disk on fire"))
    assert not done and info["action_valid"] is False
    assert info["messages"][0]["content"].startswith("Error: ")
    assert "crash" in info["messages"][0]["content"]
    _, _, _, _, info = await env.astep(call("refuse", order_id="A-17"))
    assert info["action_valid"] is False
    assert "no such order: A-17" in info["messages"][0]["content"]
    # a bad argument type never reaches the server; the server still works after errors
    _, _, _, _, info = await env.astep(call("add", a="two", b=3))
    assert info["action_valid"] is False and "must be integer" in info["tool_calls"][0]["error"]
    _, _, _, _, info = await env.astep(call("shout", text="ok"))
    assert info["action_valid"] is True and info["messages"][0]["content"] == "OK"


async def test_a_call_past_the_timeout_is_a_tool_message_and_the_server_goes_on(env):
    await env.areset(options={"task": "add-0-0"})
    start = time.perf_counter()
    _, _, done, _, info = await env.astep(call("nap", seconds=30))
    elapsed = time.perf_counter() - start
    assert not done and info["action_valid"] is False
    assert "nap took longer than 0.5 s" in info["messages"][0]["content"]
    assert elapsed < 5, elapsed
    _, _, _, _, info = await env.astep(call("nap", seconds=0.01))
    assert info["action_valid"] is True and info["messages"][0]["content"] == "rested"


async def test_parallel_calls_share_one_session(env):
    await env.areset(options={"task": "add-1-1"})
    action = "\n".join(call("add", a=i, b=1) for i in range(6))
    _, _, _, _, info = await env.astep(action)
    assert [m["content"] for m in info["messages"]] == [str(i) for i in range(1, 7)]


async def test_a_module_attribute_names_an_in_memory_server(tmp_path):
    rows = [
        {
            "id": "t",
            "prompt": "09:15 in Tokyo is what in Kolkata?",
            "check": {"answer_contains": ["05:45"]},
            "gold_calls": [
                {
                    "name": "convert_time",
                    "arguments": {
                        "source_timezone": "Asia/Tokyo",
                        "time": "09:15",
                        "target_timezone": "Asia/Kolkata",
                    },
                }
            ],
        }
    ]
    path = tmp_path / "t.jsonl"
    path.write_text(json.dumps(rows[0]) + "\n")
    env = agentenv.make("mcp-v0", server=TIME_TARGET, tasks=str(path))
    try:
        assert env.mcp_server == ServerSpec(target=TIME_TARGET)
        obs, info = await env.areset(seed=0)
        messages = [{"role": "user", "content": obs}]
        action = expert.solve(env.task, messages)
        _, _, _, _, info = await env.astep(action)
        messages += [{"role": "assistant", "content": action}, *info["messages"]]
        _, reward, done, _, _ = await env.astep(expert.solve(env.task, messages))
        assert (reward, done) == (1.0, True)
    finally:
        await env.aclose()


def test_server_specs_from_what_users_write():
    assert server_spec("uvx mcp-server-time --local-timezone UTC").command == (
        "uvx",
        "mcp-server-time",
        "--local-timezone",
        "UTC",
    )
    spec = server_spec([PYTHON, "-m", "x"], env={"B": "2", "A": "1"}, cwd="/tmp")
    assert spec.command[0].endswith("python") or "python" in spec.command[0]
    assert spec.env == (("A", "1"), ("B", "2")) and spec.cwd == "/tmp"
    assert spec.transport == "stdio" and "-m x" in spec.label
    mapped = server_spec({"command": "node", "args": ["srv.js"], "env": {"K": "v"}})
    assert mapped.command == ("node", "srv.js") and mapped.env == (("K", "v"),)
    assert server_spec("pkg.mod:attr").transport == "memory"
    assert server_spec(SERVER).target.startswith("object:")
    for bad in ([], "", [1, 2], {"cmd": "x"}, 3):
        with pytest.raises(ValueError):
            server_spec(bad)
    with pytest.raises(ValueError, match="not an MCP server"):
        resolve_target("json:decoder")
    assert isinstance(resolve_target(TIME_TARGET), MCPServer)


def test_a_server_without_tasks_is_a_clear_error_and_neither_plays_the_example(tasks):
    with pytest.raises(ValueError, match="mcp-v0 needs both server="):
        agentenv.make("mcp-v0", tasks=str(tasks))
    with pytest.raises(ValueError, match="mcp-v0 needs both server="):
        agentenv.make("mcp-v0", server=SERVER)
    example = agentenv.make("mcp-v0")
    assert example.mcp_server == ServerSpec(target=TIME_TARGET)
    assert example.splits() == {"train": 48, "test": 16}
    example.reset(seed=0)
    assert [t["function"]["name"] for t in example.tools] == ["convert_time"]
    example.close()
    with pytest.raises(ValueError, match="call_timeout"):
        McpEnv(SERVER, tasks, call_timeout=0)
    with pytest.raises(ValueError, match="no split 'dev'"):
        McpEnv(SERVER, tasks, split="dev")


async def test_an_in_memory_target_that_fails_to_import_is_a_service_error(tasks):
    env = McpEnv("no_such_module_xyz:server", tasks, connect_timeout=5)
    with pytest.raises(EnvServiceError, match="no_such_module_xyz:server could not be started"):
        await env.areset(seed=0)


async def test_a_task_naming_tools_the_server_lacks_is_a_clear_error(tmp_path):
    path = tmp_path / "t.jsonl"
    row = {"id": "x", "prompt": "p", "tools": ["add", "teleport"], "check": {"answer_equals": "1"}}
    path.write_text(json.dumps(row) + "\n")
    env = McpEnv(SERVER, path)
    with pytest.raises(ValueError, match="does not have: teleport"):
        await env.areset(seed=0)


def test_a_copied_env_steps_on_with_the_shared_session(env):
    env.reset(options={"task": "add-1-2"})
    for clone in (pickle.loads(pickle.dumps(env)), copy.deepcopy(env)):
        _, _, _, _, info = clone.step(call("add", a=1, b=2))
        assert info["action_valid"] is True
        _, reward, done, _, _ = clone.step("3")
        assert (reward, done) == (1.0, True)
        clone.close()


# ---------------------------------------------------------------------------------------------
# Fuzz
# ---------------------------------------------------------------------------------------------
JUNK = ["", " ", "\x00", "\ud800", "<tool_call>", "</tool_call>", "{", "null", "🙂" * 50]


def fuzz_action(rng: np.random.Generator) -> tuple[str, bool | None]:
    """A random action and whether it must be valid (``None``: either)."""
    kind = int(rng.integers(9))
    if kind == 0:  # a valid call
        return call("add", a=int(rng.integers(-9, 9)), b=int(rng.integers(9))), True
    if kind == 1:  # an unknown tool
        return call(str(rng.choice(["del", "ad", "ADD", "x" * 70])), a=1), False
    if kind == 2:  # arguments of the wrong type, missing, or extra
        args = rng.choice(
            [{"a": "1", "b": 2}, {"a": 1}, {"a": 1, "b": 2.5}, {"a": [1], "b": {}}, {"b": None}]
        )
        return call("add", **args), False
    if kind == 3:  # malformed call text
        body = str(rng.choice(['{"name": "add", "arguments": {', "[1, 2]", '{"arguments": {}}']))
        return f"<tool_call>\n{body}\n</tool_call>", False
    if kind == 4:  # unclosed block
        return "<tool_call>\n" + call("add", a=1, b=2)[12:-12], False
    if kind == 5:  # OpenAI-shaped messages, valid and not
        calls = [
            {"id": "c1", "type": "function", "function": {"name": "add", "arguments": "{bad"}},
            {"id": "c2", "type": "function", "function": {"name": "add", "arguments": '"str"'}},
        ]
        pick = calls[int(rng.integers(len(calls)))]
        return json.dumps({"role": "assistant", "content": None, "tool_calls": [pick]}), False
    if kind == 6:  # too many calls in one message
        return "\n".join(call("add", a=1, b=1) for _ in range(9)), False
    if kind == 7:  # random junk text: a final answer, or a broken call
        length = int(rng.integers(1, 40))
        text = "".join(rng.choice(JUNK, size=length))
        return text, None
    return expert.random_action(None, [], rng), None  # the expert's random baseline


async def test_fuzz_5000_actions_never_raise_and_invalid_ones_are_marked(env):
    rng = np.random.default_rng(0)
    steps = invalid = episodes = 0
    done = True
    while steps < 5000:
        if done:
            await env.areset(seed=int(rng.integers(1 << 30)))
            episodes += 1
        action, valid = fuzz_action(rng)
        obs, reward, terminated, truncated, info = await env.astep(action)
        steps += 1
        done = terminated or truncated
        assert isinstance(obs, str) and np.isfinite(reward)
        if valid is not None:
            assert info["action_valid"] is valid, (action, obs)
        invalid += not info["action_valid"]
    assert invalid > 2000 and episodes > 100
