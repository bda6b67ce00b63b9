"""McpEnv: any MCP server's tools as a tool-use env, with tasks from a task file.

``agentenv.make("mcp-v0", server=..., tasks="tasks.jsonl")``: each episode shows the server's
tools (those the task lists, or all), asks the task's prompt, runs the agent's calls on the
server and scores the episode with the task's declarative check (:mod:`.tasks`). The episode
loop, the two protocols and the handling of bad calls are :class:`ToolEnv`'s.

``server`` is anything :func:`.client.server_spec` reads: a command (``"uvx some-server"``,
``["{python}", "-m", "mcp_server_time"]``), ``{"command", "args", "env", "cwd"}``, or a Python
server in-memory (``"mypkg.tools:server"``, or the object). A stdio server is started once per
process and shared by every env and episode using it, so a stateful server (a git repo, a
database) carries its state across episodes unless ``fresh_server_per_episode=True`` starts one
per episode (seconds each).

Failure behaviour: a tool's error result, a protocol error, a call slower than ``call_timeout``
on a server that still answers, and every bad action come back to the model as text with
``action_valid=False``; a server that cannot be started within ``connect_timeout``, exits, or
stops answering raises :class:`agentenv.EnvServiceError` naming its command (the next reset
starts it again).

``mcp-time-v0`` (:class:`McpTimeEnv`) is the shipped example: ``mcp-server-time`` over stdio
with the timezone-conversion tasks of ``examples/time_tasks.jsonl`` (its ``tasks=`` or
``server=`` may be replaced alone). ``mcp-v0`` without ``server=`` and ``tasks=`` plays the same
tasks on the same server in-memory; given one, it needs the other.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

from agentenv import env as keys
from agentenv.envs.tooluse.base import CallResult, Outcome, Protocol, ToolEnv
from agentenv.envs.tooluse.mcp.client import POOL, McpConnection, server_spec
from agentenv.envs.tooluse.mcp.tasks import CHECKS, McpTask, TaskFile, load_tasks
from agentenv.envs.tooluse.schema import Tool
from agentenv.toolcalls import ToolCall

EXAMPLES = Path(__file__).resolve().parent / "examples"
TIME_TASKS = EXAMPLES / "time_tasks.jsonl"
TIME_SERVER = ("{python}", "-m", "mcp_server_time", "--local-timezone", "UTC")
"""``mcp-server-time`` run by this interpreter, with a fixed local timezone."""
TIME_TARGET = "agentenv.envs.tooluse.mcp.examples.time_server:server"
"""The same server in-memory (``mcp-v0``'s default)."""
DEFAULT_SYSTEM = (
    "You are a helpful assistant with tools. Call the tools you need to answer the user's "
    "question; when you have the answer, reply with it and no tool call."
)
_GRACE = 2.0
"""Seconds a pool hop may add to an MCP call's own bound before the env gives up on it."""


class McpEnv(ToolEnv):
    """An MCP server's tools with a task file's tasks (see the module docs).

    Knobs beyond :class:`ToolEnv`'s: ``server``, ``tasks`` (a task-file path), ``split`` (the
    default split seeds draw from), ``server_env``/``server_cwd`` (for a stdio command),
    ``connect_timeout`` (start + initialize + listing the tools), ``call_timeout`` (one
    ``tools/call``), ``probe_timeout`` (the liveness probe after a slow call),
    ``fresh_server_per_episode``, ``test_fraction``/``split_seed`` (the partition of a file
    whose lines name no split), ``system_prompt``.
    """

    description: ClassVar[str] = "Any MCP server's tools, with tasks from a JSONL task file"
    reward_components: ClassVar[tuple[str, ...]] = CHECKS
    transient_attributes: ClassVar[tuple[str, ...]] = ("_connection",)
    default_server: ClassVar[Any] = TIME_TARGET
    default_tasks: ClassVar[str | Path] = TIME_TASKS
    defaults_in_pairs: ClassVar[bool] = True
    """Whether ``server=`` and ``tasks=`` must be given together (the defaults belong to each
    other)."""

    def __init__(
        self,
        server: Any = None,
        tasks: str | Path | None = None,
        *,
        split: str | None = None,
        protocol: Protocol = "native",
        system_prompt: str = DEFAULT_SYSTEM,
        server_env: Mapping[str, str] | None = None,
        server_cwd: str | None = None,
        connect_timeout: float = 30.0,
        call_timeout: float = 10.0,
        probe_timeout: float = 5.0,
        fresh_server_per_episode: bool = False,
        test_fraction: float = 0.2,
        split_seed: int = 0,
        max_turns: int = 8,
        max_calls_per_turn: int = 8,
        max_argument_chars: int = 16_384,
        max_result_chars: int = 8_192,
        render_mode: str | None = None,
    ) -> None:
        for name, value in (
            ("connect_timeout", connect_timeout),
            ("call_timeout", call_timeout),
            ("probe_timeout", probe_timeout),
        ):
            if not isinstance(value, int | float) or not value > 0:
                raise ValueError(f"{name} must be a positive number of seconds, got {value!r}")
        super().__init__(
            protocol=protocol,
            max_turns=max_turns,
            max_calls_per_turn=max_calls_per_turn,
            max_argument_chars=max_argument_chars,
            max_result_chars=max_result_chars,
            tool_timeout=call_timeout + probe_timeout + _GRACE,
            render_mode=render_mode,
        )
        if self.defaults_in_pairs and (server is None) != (tasks is None):
            raise ValueError(
                "mcp-v0 needs both server= (a command, 'module:attribute' or a server object) "
                "and tasks= (a JSONL task file; see agentenv.envs.tooluse.mcp.tasks); without "
                "either it plays the shipped time example in-memory"
            )
        server = self.default_server if server is None else server
        tasks = self.default_tasks if tasks is None else tasks
        self.mcp_server = server_spec(server, env=server_env, cwd=server_cwd)
        self.task_file: TaskFile = load_tasks(
            tasks, test_fraction=test_fraction, split_seed=split_seed
        )
        self.split = split if split is not None else next(iter(self.task_file.splits))
        self.check_split(self.split)
        self.system_prompt = system_prompt
        self.connect_timeout = float(connect_timeout)
        self.call_timeout = float(call_timeout)
        self.probe_timeout = float(probe_timeout)
        self.fresh_server_per_episode = fresh_server_per_episode
        self._connection: McpConnection | None = None
        self._private = False

    # -- tasks ------------------------------------------------------------------------------
    def splits(self) -> dict[str, int | None]:
        """The task file's splits and their sizes."""
        return {name: len(tasks) for name, tasks in self.task_file.splits.items()}

    def task_ids(self, split: str) -> list[str]:
        """The ids of ``split``'s tasks, in file order."""
        self.check_split(split)
        return [t.id for t in self.task_file.splits[split]]

    def get_task(self, task: str | McpTask) -> McpTask:
        """A task by id (or the task itself)."""
        if isinstance(task, McpTask):
            return task
        try:
            return self.task_file.task(str(task))
        except KeyError as exc:
            raise ValueError(str(exc.args[0])) from None

    def _draw(self, split: str) -> McpTask:
        tasks = self.task_file.splits[split]
        return tasks[int(self.np_random.integers(len(tasks)))]

    # -- the server -------------------------------------------------------------------------
    async def connection(self) -> McpConnection:
        """The connection episodes call tools on (the process's shared one, or this episode's
        own under ``fresh_server_per_episode``)."""
        if self.fresh_server_per_episode:
            if self._connection is None:
                self._connection = await POOL.private(self.mcp_server, self.connect_timeout)
                self._private = True
            return self._connection
        if self._connection is None or self._connection.dead:
            self._connection = await POOL.shared(self.mcp_server, self.connect_timeout)
            self._private = False
        return self._connection

    async def _release(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None and self._private:
            await POOL.release(connection)

    async def aclose(self) -> None:
        """Stop this env's own server (``fresh_server_per_episode``); shared servers stay up
        for the other envs of the process until it exits or :func:`close_servers`."""
        await self._release()

    # -- the episode ------------------------------------------------------------------------
    async def _areset(self, *, seed: int | None, options: dict[str, Any]) -> tuple[str, dict]:
        choice = options.get(keys.TASK_OPTION)
        task = (
            self.get_task(choice)
            if choice is not None
            else self._draw(options.get(keys.SPLIT_OPTION) or self.split)
        )
        self.task = task
        if self.fresh_server_per_episode:
            await self._release()
        connection = await self.connection()
        info = {
            keys.TASK_ID: task.id,
            keys.GROUND_TRUTH: task.answer,
            keys.ANCHOR: (task.id, ()),
        }
        system = task.system or self.system_prompt
        return task.prompt, self.begin(self._task_tools(task, connection.tools), system, info)

    def _task_tools(self, task: McpTask, tools: Sequence[Tool]) -> list[Tool]:
        if task.tools is None:
            return list(tools)
        by_name = {t.name: t for t in tools}
        missing = [name for name in task.tools if name not in by_name]
        if missing:
            raise ValueError(
                f"task {task.id!r} lists tools the server {self.mcp_server.label} does not have: "
                f"{', '.join(missing)} (it has: {', '.join(by_name) or 'none'})"
            )
        return [by_name[name] for name in task.tools]

    async def _astep(self, action: str) -> tuple[str, float, bool, bool, dict]:
        observation, reward, terminated, truncated, info = await super()._astep(action)
        info[keys.ANCHOR] = self.anchor()
        return observation, reward, terminated, truncated, info

    def anchor(self) -> tuple[str, tuple[str, ...]]:
        """The task and the distinct calls that have succeeded so far (order-free)."""
        done = {
            json.dumps([r.call.name, r.call.arguments], sort_keys=True, ensure_ascii=False)
            for r in self.call_log
            if r.ok
        }
        return (self.task.id, tuple(sorted(done)))

    async def call_tool(self, call: ToolCall) -> str:
        """Run ``call`` on the server (bounded; see the module docs for what a failure does)."""
        connection = await self.connection()
        coroutine = connection.call(
            call.name, dict(call.arguments), self.call_timeout, self.probe_timeout
        )
        bound = self.call_timeout + self.probe_timeout + _GRACE / 2
        return await POOL.run(coroutine, bound, self.mcp_server.label)

    async def judge(self, answer: str | None) -> Outcome:
        """Every check of the task passes → reward 1.0 and success; each check is a component."""
        components = self.task.check.evaluate(answer, _succeeded(self.call_log))
        success = all(value == 1.0 for value in components.values())
        return Outcome(1.0 if success else 0.0, success, components)


def _succeeded(results: Sequence[CallResult]) -> list[ToolCall]:
    return [r.call for r in results if r.ok]


class McpTimeEnv(McpEnv):
    """``mcp-time-v0``: ``mcp-server-time`` over stdio (this interpreter, local timezone UTC)
    with the shipped timezone-conversion tasks (``examples/time_tasks.jsonl``)."""

    description: ClassVar[str] = "Timezone conversions with the mcp-server-time MCP server"
    default_server: ClassVar[Any] = list(TIME_SERVER)
    defaults_in_pairs: ClassVar[bool] = False
