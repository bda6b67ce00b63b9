"""ToolEnv: the episode loop every tool-use env shares.

Each turn the agent either calls tools or replies without a call; the reply is its final answer
and ends the episode. A turn's calls run in order, each checked first against its tool's schema;
whatever goes wrong (text that does not parse, an unknown tool, arguments of the wrong type or
size, a tool that raises or times out) comes back as an explanation the model can read, with
``action_valid=False``. Only a dead backing service (:class:`agentenv.EnvServiceError`) raises.

Two protocols, same episode:

- ``native`` (default): ``env.tools`` holds the OpenAI schemas, the chat template renders them,
  the action is the assistant message the rollout parsed (:mod:`agentenv.toolcalls`), and results
  go back as one ``tool`` message per call (``info["messages"]``).
- ``text``: for models without a tool template. ``env.tools`` is ``None``; the system prompt lists
  the tools and asks for ``<tool_call>`` lines (ToolRL's and Hermes' format); results go back in
  one user message of ``<tool_response>`` blocks.

A subclass sets up an episode with :meth:`ToolEnv.begin` inside ``_areset``, runs calls in
:meth:`ToolEnv.call_tool`, and scores the episode in :meth:`ToolEnv.judge`.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar, Literal

from agentenv import env as keys
from agentenv.env import TextEnv
from agentenv.envs.tooluse.schema import Tool, check_arguments
from agentenv.service import EnvServiceError
from agentenv.toolcalls import AssistantMessage, ToolCall, decode_action

Protocol = Literal["native", "text"]
PROTOCOLS: tuple[str, ...] = ("native", "text")


class ToolError(Exception):
    """Raised by a tool for a failure the model should read (no such order, bad state, …)."""


@dataclass
class Outcome:
    """How an episode ended: its reward, whether it solved the task, and the named parts."""

    reward: float
    success: bool
    components: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class CallResult:
    """What one call returned: ``content`` for the model, ``error`` when it failed."""

    call: ToolCall
    content: str
    error: str = ""

    @property
    def ok(self) -> bool:
        return not self.error


TEXT_PROTOCOL = """\
# Tools

You may call one or more functions to help with the task. Their signatures, one JSON object per \
line:
<tools>
{tools}
</tools>

To call functions, write each call on its own line inside one block:
<tool_call>
{{"name": <function-name>, "arguments": <arguments-json-object>}}
</tool_call>
The results come back inside <tool_response></tool_response> blocks, in the order of the calls. \
When you have what you need, reply without any tool call: that reply is your final answer."""


def text_protocol(tools: Sequence[Tool]) -> str:
    """The system-prompt section that describes ``tools`` to a model without a tool template."""
    lines = "\n".join(json.dumps(t.schema(), ensure_ascii=False) for t in tools)
    return TEXT_PROTOCOL.format(tools=lines)


def tool_responses(results: Sequence[CallResult]) -> str:
    """Results as ``<tool_response>`` blocks (the text protocol's observation)."""
    return "\n".join(f"<tool_response>\n{r.content}\n</tool_response>" for r in results)


class ToolEnv(TextEnv):
    """Base of tool-use envs. See the module docstring for the episode and the protocols.

    Knobs (constructor arguments, all with defaults):

    - ``protocol``: ``"native"`` or ``"text"``.
    - ``max_turns``: agent turns before the episode is truncated (and judged without an answer).
    - ``max_calls_per_turn``: more calls than this in one message is an invalid action.
    - ``max_argument_chars``: the JSON size of one call's arguments.
    - ``max_result_chars``: a tool result longer than this is cut, with a note saying so.
    - ``tool_timeout``: seconds one call may take.
    """

    observation_role: ClassVar[str] = "user"  # the task's request; results go in info["messages"]
    ends_on_reply: ClassVar[bool] = True
    """Whether a message without tool calls is the final answer (else it is an invalid action:
    an env whose episodes end through a tool sets :attr:`finished` from :meth:`call_tool`)."""
    no_call_message: ClassVar[str] = "your message called no tool"
    invalid_message: ClassVar[str] = (
        "Your last message could not be read as tool calls: {error}. Nothing was run. "
        'Write each call as a JSON object with a "name" and an "arguments" object.'
    )

    def __init__(
        self,
        *,
        protocol: Protocol = "native",
        max_turns: int = 8,
        max_calls_per_turn: int = 8,
        max_argument_chars: int = 16_384,
        max_result_chars: int = 8_192,
        tool_timeout: float = 10.0,
        render_mode: str | None = None,
    ) -> None:
        super().__init__(render_mode=render_mode)
        if protocol not in PROTOCOLS:
            raise ValueError(f"protocol must be one of {PROTOCOLS}, got {protocol!r}")
        for name, value in (
            ("max_turns", max_turns),
            ("max_calls_per_turn", max_calls_per_turn),
            ("max_argument_chars", max_argument_chars),
            ("max_result_chars", max_result_chars),
        ):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if not tool_timeout > 0:
            raise ValueError(f"tool_timeout must be positive, got {tool_timeout!r}")
        self.protocol = protocol
        self.max_turns = max_turns
        self.max_calls_per_turn = max_calls_per_turn
        self.max_argument_chars = max_argument_chars
        self.max_result_chars = max_result_chars
        self.tool_timeout = tool_timeout
        self.episode_tools: dict[str, Tool] = {}
        self.call_log: list[CallResult] = []
        self.finished = False
        self.tools = None

    # -- to implement -----------------------------------------------------------------------
    async def call_tool(self, call: ToolCall) -> str:
        """Run one checked call and return its result text; raise :class:`ToolError` (or any
        exception but :class:`EnvServiceError`) for a failure the model should read."""
        raise NotImplementedError

    async def judge(self, answer: str | None) -> Outcome:
        """Score the episode once it ends: ``answer`` is the final reply, ``None`` when the turn
        budget ran out first."""
        raise NotImplementedError

    def turn_components(self, results: Sequence[CallResult]) -> dict[str, float]:
        """Named reward parts of a turn that made ``results`` (none by default)."""
        return {}

    def anchor(self) -> Hashable:
        """The episode's state for anchor-state grouping: by default the task and the calls
        that succeeded so far, in order (an env with inspectable state hashes that instead)."""
        done = tuple(
            (r.call.name, json.dumps(r.call.arguments, sort_keys=True))
            for r in self.call_log
            if r.ok
        )
        return (self._task_id or "", done)

    # -- episode set-up ---------------------------------------------------------------------
    def begin(self, tools: Sequence[Tool], system: str, info: Mapping[str, Any]) -> dict[str, Any]:
        """Open an episode with ``tools``; returns ``info`` with the system prompt (the tool
        list appended under the text protocol)."""
        self.episode_tools = {t.name: t for t in tools}
        self.call_log = []
        self.finished = False
        if self.protocol == "native":
            self.tools = [t.schema() for t in tools]
        else:
            self.tools = None
            system = f"{system}\n\n{text_protocol(tools)}" if tools else system
        self._task_id = str(info.get(keys.TASK_ID, ""))
        return {**info, keys.SYSTEM_PROMPT: system, keys.ANCHOR: self.anchor()}

    # -- the turn ---------------------------------------------------------------------------
    async def _astep(self, action: str) -> tuple[str, float, bool, bool, dict]:
        message = decode_action(action)
        if message.error or len(message.tool_calls) > self.max_calls_per_turn:
            return await self._invalid(message)
        if not message.tool_calls:
            if not self.ends_on_reply:
                return await self._invalid(replace(message, error=self.no_call_message))
            return await self._end(message.content, terminated=True, valid=True, results=[])
        message = message.with_ids(f"call_{self.turn}_")
        results = []
        for call in message.tool_calls:
            if not self.finished:  # the calls after one that ended the episode do not run
                results.append(await self._run(call))
        self.call_log += results
        valid = all(r.ok for r in results)
        if self.finished:
            return await self._end(None, terminated=True, valid=valid, results=results)
        if self.turn + 1 >= self.max_turns:
            return await self._end(None, terminated=False, valid=valid, results=results)
        observation, messages = self._answer(results)
        info = {
            keys.ACTION_VALID: valid,
            keys.REWARD_COMPONENTS: self.turn_components(results),
            keys.MESSAGES: messages,
            keys.TOOL_CALLS: _call_records(results),
            keys.ANCHOR: self.anchor(),
        }
        return observation, 0.0, False, False, info

    async def _invalid(self, message: AssistantMessage) -> tuple[str, float, bool, bool, dict]:
        error = message.error or (
            f"{len(message.tool_calls)} calls in one message; at most {self.max_calls_per_turn}"
        )
        text = self.invalid_message.format(error=error)
        if self.turn + 1 >= self.max_turns:
            return await self._end(None, terminated=False, valid=False, results=[], text=text)
        info = {
            keys.ACTION_VALID: False,
            keys.REWARD_COMPONENTS: self.turn_components([]),
            keys.MESSAGES: [{"role": "user", "content": text}],
            keys.TOOL_CALLS: [],
            keys.ANCHOR: self.anchor(),
        }
        return text, 0.0, False, False, info

    async def _end(
        self,
        answer: str | None,
        *,
        terminated: bool,
        valid: bool,
        results: list[CallResult],
        text: str = "",
    ) -> tuple[str, float, bool, bool, dict]:
        outcome = await self.judge(answer)
        components = {**self.turn_components(results), **outcome.components}
        observation = text or (self._answer(results)[0] if results else "")
        info = {
            keys.ACTION_VALID: valid,
            keys.REWARD_COMPONENTS: components,
            keys.SUCCESS: outcome.success,
            keys.TOOL_CALLS: _call_records(results),
            keys.ANCHOR: self.anchor(),
        }
        return observation, outcome.reward, terminated, not terminated, info

    def _answer(self, results: Sequence[CallResult]) -> tuple[str, list[dict[str, Any]]]:
        text = tool_responses(results)
        if self.protocol == "text":
            return text, [{"role": "user", "content": text}]
        messages = [
            {"role": "tool", "tool_call_id": r.call.id, "name": r.call.name, "content": r.content}
            for r in results
        ]
        return text, messages

    async def _run(self, call: ToolCall) -> CallResult:
        tool = self.episode_tools.get(call.name)
        if tool is None:
            known = ", ".join(self.episode_tools) or "none"
            return _failed(call, f"unknown tool {call.name!r}; the tools are: {known}")
        size = len(json.dumps(call.arguments, ensure_ascii=False))
        if size > self.max_argument_chars:
            return _failed(
                call,
                f"the arguments of {call.name} are {size} characters; "
                f"at most {self.max_argument_chars}",
            )
        problems = check_arguments(tool, call.arguments)
        if problems:
            return _failed(call, f"bad arguments for {call.name}: " + "; ".join(problems))
        try:
            content = await asyncio.wait_for(self.call_tool(call), self.tool_timeout)
        except EnvServiceError:
            raise
        except TimeoutError:
            return _failed(call, f"{call.name} took longer than {self.tool_timeout:g} s")
        except ToolError as exc:
            return _failed(call, str(exc))
        except Exception as exc:  # a tool's own failure is the model's to read, not a crash
            return _failed(call, f"{call.name} failed: {type(exc).__name__}: {exc}")
        return CallResult(call, self._cut(str(content)))

    def _cut(self, text: str) -> str:
        if len(text) <= self.max_result_chars:
            return text
        cut = len(text) - self.max_result_chars
        return f"{text[: self.max_result_chars]}\n[… {cut} more characters cut]"


def _failed(call: ToolCall, error: str) -> CallResult:
    return CallResult(call, f"Error: {error}", error)


def _call_records(results: Sequence[CallResult]) -> list[dict[str, Any]]:
    return [{"name": r.call.name, "ok": r.ok, "error": r.error} for r in results]
