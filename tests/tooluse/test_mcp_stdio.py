"""McpEnv over stdio with real server processes: the shipped ``mcp-server-time`` (from PyPI),
a server killed or frozen mid-episode, servers that cannot start, one server per process vs one
per episode, and the shipped example end to end with its expert."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import pytest

pytest.importorskip("mcp")
pytest.importorskip("mcp_server_time")

import agentenv  # noqa: E402
from agentenv.check import check_env  # noqa: E402
from agentenv.envs.tooluse.mcp import expert  # noqa: E402
from agentenv.envs.tooluse.mcp.client import POOL, close_servers  # noqa: E402
from agentenv.envs.tooluse.mcp.env import TIME_SERVER, McpEnv  # noqa: E402
from agentenv.play import play_episode  # noqa: E402
from agentenv.policies.scripted import ScriptedPolicy  # noqa: E402
from agentenv.rollout import EpisodeRequest, RolloutEngine  # noqa: E402
from agentenv.service import EnvServiceError  # noqa: E402

CONVERT = {"source_timezone": "Asia/Tokyo", "time": "09:15", "target_timezone": "Asia/Kolkata"}


def call(name: str, **arguments) -> str:
    return f"<tool_call>\n{json.dumps({'name': name, 'arguments': arguments})}\n</tool_call>"


def marker() -> dict[str, str]:
    """An env var that gives a test its own server process (and finds it in /proc)."""
    return {"AGENTENV_MCP_TEST": uuid.uuid4().hex}


def server_pids(env: dict[str, str]) -> list[int]:
    """Pids of this process's children started with ``env``."""
    needle = "".join(f"{k}={v}" for k, v in env.items()).encode()
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        if parent == os.getpid() and needle in environ:
            pids.append(int(entry.name))
    return pids


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.fixture
def any_tasks(tmp_path: Path) -> Path:
    """One task that shows every tool of the time server."""
    row = {"id": "any", "prompt": "What time is it?", "check": {"answer_contains": [":"]}}
    path = tmp_path / "any.jsonl"
    path.write_text(json.dumps(row) + "\n")
    return path


def time_env(tasks: Path | str, **kwargs) -> tuple[McpEnv, dict[str, str]]:
    env_vars = marker()
    env = McpEnv(list(TIME_SERVER), tasks, server_env=env_vars, **kwargs)
    return env, env_vars


async def test_the_time_server_lists_tools_converts_and_reports_bad_timezones(any_tasks):
    env, env_vars = time_env(any_tasks)
    try:
        start = time.perf_counter()
        await env.areset(seed=0)
        print(f"stdio start + initialize + list_tools: {time.perf_counter() - start:.2f} s")
        assert [t["function"]["name"] for t in env.tools] == ["get_current_time", "convert_time"]
        required = env.tools[1]["function"]["parameters"]["required"]
        assert sorted(required) == ["source_timezone", "target_timezone", "time"]
        assert len(server_pids(env_vars)) == 1

        _, _, _, _, info = await env.astep(call("convert_time", **CONVERT))
        assert info["action_valid"] is True
        result = json.loads(info["messages"][0]["content"])
        assert result["target"]["datetime"][11:16] == "05:45"
        assert result["time_difference"] == "-3.5h"

        bad = {**CONVERT, "target_timezone": "Mars/Olympus_Mons"}
        _, _, done, _, info = await env.astep(call("convert_time", **bad))
        assert not done and info["action_valid"] is False
        assert "Invalid timezone" in info["messages"][0]["content"]
        _, _, _, _, info = await env.astep(call("convert_time", **{**CONVERT, "time": "25:99"}))
        assert info["action_valid"] is False and "HH:MM" in info["messages"][0]["content"]
    finally:
        await env.aclose()


async def test_envs_and_episodes_of_a_process_share_one_server(any_tasks):
    env_vars = marker()
    envs = [McpEnv(list(TIME_SERVER), any_tasks, server_env=env_vars) for _ in range(4)]
    await asyncio.gather(*(e.areset(seed=i) for i, e in enumerate(envs)))
    await envs[0].areset(seed=9)
    assert len(server_pids(env_vars)) == 1
    steps = await asyncio.gather(*(e.astep(call("convert_time", **CONVERT)) for e in envs))
    assert all(info["action_valid"] for *_, info in steps)


async def test_a_killed_server_raises_env_service_error_fast_and_restarts_on_reset(any_tasks):
    env, env_vars = time_env(any_tasks)
    await env.areset(seed=0)
    (pid,) = server_pids(env_vars)
    os.kill(pid, signal.SIGKILL)
    start = time.perf_counter()
    with pytest.raises(EnvServiceError) as caught:
        await env.astep(call("convert_time", **CONVERT))
    elapsed = time.perf_counter() - start
    print(f"killed server → EnvServiceError in {elapsed:.3f} s: {caught.value}")
    assert "mcp_server_time" in str(caught.value)
    assert caught.value.url is not None and "mcp_server_time" in caught.value.url
    assert elapsed < 10, elapsed  # bounded by call_timeout + probe, not hung

    await env.areset(seed=0)  # a new server
    (new_pid,) = [p for p in server_pids(env_vars) if alive(p)]
    assert new_pid != pid
    _, _, _, _, info = await env.astep(call("convert_time", **CONVERT))
    assert info["action_valid"] is True


async def test_a_frozen_server_is_an_env_service_error_after_the_timeouts(any_tasks):
    env, env_vars = time_env(any_tasks, call_timeout=0.5, probe_timeout=0.5)
    await env.areset(seed=0)
    (pid,) = server_pids(env_vars)
    os.kill(pid, signal.SIGSTOP)
    try:
        start = time.perf_counter()
        with pytest.raises(EnvServiceError, match="stopped answering") as caught:
            await env.astep(call("convert_time", **CONVERT))
        assert "mcp_server_time" in str(caught.value)
        assert time.perf_counter() - start < 5
    finally:
        os.kill(pid, signal.SIGKILL)


async def test_servers_that_cannot_start_raise_env_service_error_naming_them(any_tasks, tmp_path):
    missing = McpEnv(["/no/such/mcp-server", "--flag"], any_tasks, connect_timeout=5)
    with pytest.raises(EnvServiceError, match="/no/such/mcp-server --flag could not be started"):
        await missing.areset(seed=0)

    script = "import sys; print('bad config: no token', file=sys.stderr); sys.exit(3)"
    exits = McpEnv(["{python}", "-c", script], any_tasks, connect_timeout=10)
    start = time.perf_counter()
    with pytest.raises(EnvServiceError, match="could not be started") as caught:
        await exits.areset(seed=0)
    assert time.perf_counter() - start < 8
    assert "bad config: no token" in str(caught.value)

    silent = tmp_path / "silent.py"
    silent.write_text("import time\ntime.sleep(60)\n")  # never answers initialize
    hangs = McpEnv(["{python}", str(silent)], any_tasks, connect_timeout=1)
    start = time.perf_counter()
    with pytest.raises(EnvServiceError, match="could not be started: timed out"):
        await hangs.areset(seed=0)
    assert time.perf_counter() - start < 8


COUNTER = textwrap.dedent(
    """
    import anyio
    from mcp.server.mcpserver import MCPServer

    server = MCPServer("counter")
    calls = 0

    @server.tool()
    def count() -> int:
        \"\"\"How many times this tool ran in this server.\"\"\"
        global calls
        calls += 1
        return calls

    anyio.run(server.run_stdio_async)
    """
)


@pytest.mark.parametrize("fresh", [False, True])
async def test_state_is_shared_across_episodes_unless_fresh_server_per_episode(
    tmp_path, any_tasks, fresh
):
    script = tmp_path / "counter.py"
    script.write_text(COUNTER)
    env_vars = marker()
    env = McpEnv(
        ["{python}", str(script)], any_tasks, server_env=env_vars, fresh_server_per_episode=fresh
    )
    counts = []
    for seed in range(3):
        await env.areset(seed=seed)
        _, _, _, _, info = await env.astep(call("count"))
        counts.append(info["messages"][0]["content"])
    assert counts == (["1", "1", "1"] if fresh else ["1", "2", "3"])
    await env.aclose()
    if fresh:
        await asyncio.sleep(0.2)
        assert not [p for p in server_pids(env_vars) if alive(p)]


def test_close_servers_stops_the_processes_and_they_start_again_on_use(any_tasks):
    env, env_vars = time_env(any_tasks)
    env.reset(seed=0)
    (pid,) = server_pids(env_vars)
    close_servers()
    assert not alive(pid)
    assert POOL.connections() == []
    env.reset(seed=0)
    _, _, _, _, info = env.step(call("convert_time", **CONVERT))
    assert info["action_valid"] is True
    env.close()


# ---------------------------------------------------------------------------------------------
# The shipped example
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("protocol", ["native", "text"])
async def test_the_expert_solves_the_time_example(protocol):
    first = agentenv.make("mcp-time-v0", protocol=protocol)
    ids = [i for split in first.splits() for i in first.task_ids(split)]
    assert len(ids) == 64
    envs = [agentenv.make("mcp-time-v0", protocol=protocol) for _ in ids]
    results = await asyncio.gather(
        *(
            play_episode(env, expert.solve, options={"task": i})
            for env, i in zip(envs, ids, strict=True)
        )
    )
    rate = sum(r.success for r in results) / len(results)
    print(f"expert success on mcp-time-v0 ({protocol}): {rate:.1%}")
    assert rate >= 0.99
    assert all(r.final_reward == 1.0 for r in results if r.final_reward)
    for env in [first, *envs]:
        await env.aclose()


def test_the_time_example_through_the_rollout_engine_with_the_scripted_policy():
    engine = RolloutEngine(ScriptedPolicy("mcp-time-v0"))
    env = agentenv.make("mcp-time-v0")
    ids = env.task_ids("test")
    requests = [EpisodeRequest("mcp-time-v0", 0, task=i) for i in ids]
    trajectories = asyncio.run(engine.run(requests))
    assert all(t.status == "done" for t in trajectories), [t.reason for t in trajectories]
    assert sum(t.success for t in trajectories) / len(trajectories) >= 0.99
    assert all(c["ok"] for t in trajectories for turn in t.turns for c in turn.tool_calls)


def test_agentenv_check_passes_on_mcp_time():
    report = check_env("mcp-time-v0")
    assert report.passed, report.summary()


def test_the_registry_imports_without_mcp_and_making_the_env_says_how_to_install():
    script = textwrap.dedent(
        """
        import sys

        class NoMcp:
            def find_spec(self, name, path=None, target=None):
                if name == "mcp" or name.startswith("mcp."):
                    raise ImportError(f"No module named {name!r}")
                return None

        sys.meta_path.insert(0, NoMcp())
        import agentenv
        assert "mcp-time-v0" in [e.id for e in agentenv.list_envs()]
        try:
            agentenv.make("mcp-time-v0")
        except ImportError as exc:
            print("ImportError:", exc)
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert "pip install 'rl-agentenv[mcp]'" in out.stdout
