"""ToolWorldEnv: requests to an online shop's customer service, solved by calling typed tools on
the shop's database (``tooluse-v0``).

Each episode holds one session of the ``tooluse`` service (:mod:`.server`): a private copy of the
world's database, opened on reset and released when the episode ends. The agent calls tools
(natively, or with ``<tool_call>`` lines under ``protocol="text"``) and ends the episode with a
reply that calls none: its final answer.

Reward (τ-bench, arXiv 2406.12045): ``outcome`` = 1 iff the final database equals the gold
replay's (``state_match``), the answer states every required fact (``facts`` = 1) and, for an
irrelevance task, no tool was called; the env's reward is ``outcome``. Process parts, reported
in ``info["reward_components"]`` for process rewards and G-RA gating (weight 0 in the reward):

- ``format`` (every turn): 1 if the message parsed and each of its calls passed its tool's
  schema check (:func:`agentenv.rewards.toolcall.format_validity`);
- ``call_credit`` (every turn): the turn's increase of the episode's normalized ToolRL score
  against the gold calls (:func:`agentenv.rewards.toolcall.call_credit`; the turns' credits add
  up to the final ``toolrl_score``);
- ``toolrl`` and ``toolrl_score`` (last turn): ToolRL correctness of all the episode's calls,
  in [−3, 3] and normalized to [0, 1] (arXiv 2504.13958);
- ``state_match`` and ``facts`` (last turn): the two halves of the outcome.

The anchor (GiGPO) is the database's state digest and the set of distinct successful read calls
made so far: equal when two episodes of one task hold the same records and have read the same
things, whatever the order.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any, ClassVar, Literal

from agentenv.env import ANCHOR, GROUND_TRUTH, REWARD_COMPONENTS, SPLIT_OPTION, TASK_ID, TASK_OPTION
from agentenv.envs.tooluse.base import CallResult, Outcome, Protocol, ToolEnv, ToolError
from agentenv.envs.tooluse.world.db import WorldConfig, build_world
from agentenv.envs.tooluse.world.tasks import (
    Task,
    TaskConfig,
    generate,
    split_sizes,
    task_by_id,
    task_ids,
)
from agentenv.envs.tooluse.world.tools import TOOLS
from agentenv.launch import connect
from agentenv.retry import DEFAULT_TIMEOUT, RetryPolicy
from agentenv.rewards.toolcall import (
    call_credit,
    facts_in_answer,
    format_validity,
    state_match,
    toolrl_correctness,
    toolrl_score,
)
from agentenv.service import ServiceClient
from agentenv.sessions import ServiceSession, SessionHolder, check_served
from agentenv.toolcalls import ToolCall, decode_action

SERVICE_FACTORY = "agentenv.envs.tooluse.world.server:create_app"
SYSTEM_PROMPT = """\
You are the customer-service agent of an online shop. Handle the customer's request with the \
tools, which read and change the shop's records; their results are JSON.
Change only what the request asks for: the records are checked against the expected ones at \
the end, and any other change fails the request. If a request needs no tool, call none.
When you are done, reply without calling a tool: that reply is your final answer. State in it \
every fact the request asks for (ids, statuses, emails, amounts with two decimals)."""
_CHECKED: set[tuple[tuple[str, ...], str]] = set()
"""(service URLs, world) pairs whose world check passed in this process."""


def _clean(value: Any) -> Any:
    """``value`` with lone surrogates replaced: what a JSON request body can carry."""
    if isinstance(value, str):
        return value.encode("utf-8", "replace").decode("utf-8")
    if isinstance(value, list):
        return [_clean(v) for v in value]
    if isinstance(value, dict):
        return {_clean(k): _clean(v) for k, v in value.items()}
    return value


class ToolWorldEnv(SessionHolder, ToolEnv):
    """Customer-service requests over a shop database, with typed tools (τ-bench-style
    final-state reward, ToolRL per-call credit).

    Args:
        service: where the tool service runs: ``None`` (in-process, shared by the envs of one
            world), ``"local"`` (a uvicorn subprocess on 127.0.0.1 per world) or base URL(s) of
            ``agentenv serve tooluse`` (its world must be this env's: checked on first use).
        split: ``"train"`` (unlimited), ``"test"`` or ``"compositional"`` (finite): what the
            seed draws from when reset gets no ``options={"split": ...}``.
        world_seed, num_customers, num_products, test_fraction, ambiguous_fraction: the world
            (:class:`~agentenv.envs.tooluse.world.db.WorldConfig`).
        min_calls, max_calls, max_parts, distractors, ambiguity, irrelevance, test_size,
            compositional_size: task knobs (:class:`~agentenv.envs.tooluse.world.tasks.TaskConfig`).
        whole_word_facts: a fact counts only as a whole word of the answer (``False``:
            τ-bench's plain substring test).
        protocol, max_turns, max_calls_per_turn, max_argument_chars, max_result_chars,
            tool_timeout: :class:`~agentenv.envs.tooluse.base.ToolEnv`'s knobs.
        timeout: seconds per attempt of a service call.
    """

    description = "Customer-service requests over a shop database with typed tools"
    reward_components: ClassVar[tuple[str, ...]] = (
        "format", "call_credit", "outcome", "state_match", "facts", "toolrl", "toolrl_score",
    )  # fmt: skip
    transient_attributes: ClassVar[tuple[str, ...]] = ("_client", "_session")

    def __init__(
        self,
        *,
        service: str | list[str] | None = None,
        split: Literal["train", "test", "compositional"] = "train",
        world_seed: int = 0,
        num_customers: int = WorldConfig.num_customers,
        num_products: int = WorldConfig.num_products,
        test_fraction: float = WorldConfig.test_fraction,
        ambiguous_fraction: float = WorldConfig.ambiguous_fraction,
        min_calls: int = TaskConfig.min_calls,
        max_calls: int = TaskConfig.max_calls,
        max_parts: int = TaskConfig.max_parts,
        distractors: int = TaskConfig.distractors,
        ambiguity: float = TaskConfig.ambiguity,
        irrelevance: float = TaskConfig.irrelevance,
        test_size: int = TaskConfig.test_size,
        compositional_size: int = TaskConfig.compositional_size,
        whole_word_facts: bool = True,
        protocol: Protocol = "native",
        max_turns: int = 10,
        max_calls_per_turn: int = 8,
        max_argument_chars: int = 16_384,
        max_result_chars: int = 8_192,
        tool_timeout: float = 10.0,
        timeout: float = DEFAULT_TIMEOUT,
        render_mode: str | None = None,
    ) -> None:
        super().__init__(
            protocol=protocol,
            max_turns=max_turns,
            max_calls_per_turn=max_calls_per_turn,
            max_argument_chars=max_argument_chars,
            max_result_chars=max_result_chars,
            tool_timeout=tool_timeout,
            render_mode=render_mode,
        )
        self.world_config = WorldConfig(
            world_seed, num_customers, num_products, test_fraction, ambiguous_fraction
        )
        self.task_config = TaskConfig(
            min_calls, max_calls, max_parts, distractors, ambiguity, irrelevance,
            test_size, compositional_size,
        )  # fmt: skip
        self.check_split(split)
        self.split = split
        self.service = service
        self.whole_word_facts = whole_word_facts
        self.retry = RetryPolicy(timeout=timeout)
        self._state = ""
        self._reads: set[str] = set()
        self._credited: list[ToolCall] = []
        self._checked = 0

    # -- tasks --------------------------------------------------------------------------------
    def splits(self) -> dict[str, int | None]:
        """``train`` unlimited; ``test`` and ``compositional`` finite (``*_size`` knobs)."""
        return split_sizes(self.task_config)

    def task_ids(self, split: str) -> list[str]:
        if self.check_split(split) is None:
            return super().task_ids(split)
        return task_ids(self.task_config, split)

    def get_task(self, task: str | Task) -> Task:
        """The task named ``task`` (a :class:`Task` is returned as is)."""
        if isinstance(task, Task):
            return task
        return task_by_id(self.world_config, self.task_config, str(task))

    def _draw(self, split: str) -> Task:
        index = self.draw_index(split)
        if self.check_split(split) is None:
            return generate(self.world_config, self.task_config, split, index)
        return task_by_id(self.world_config, self.task_config, f"{split}-{index}")

    # -- service ------------------------------------------------------------------------------
    async def _connect(self) -> ServiceClient:
        if self._client is None:
            config = asdict(self.world_config)
            client = await connect(SERVICE_FACTORY, self.service, config=config, retry=self.retry)
            key = (tuple(client.base_urls), json.dumps(config, sort_keys=True))
            if self.service not in (None, "in-process", "local") and key not in _CHECKED:
                await check_served(
                    client,
                    "/world",
                    "fingerprint",
                    build_world(self.world_config).fingerprint,
                    data="world",
                    config=self.world_config,
                )
                _CHECKED.add(key)
            self._client = client
        return self._client

    async def _open_session(self) -> ServiceSession:
        """A fresh session for the running episode, with the episode's successful calls so far
        replayed (an env copied mid-episode gets its database back so)."""
        session = await ServiceSession.open(await self._connect())
        body = await session.reset({"task": self.task.id})
        self._state = body["state"]
        for result in self.call_log:
            if result.ok:
                self._state = (await session.step(self._body(result.call)))["state"]
        self._session = session
        return session

    # -- episode ------------------------------------------------------------------------------
    def _anchor(self) -> tuple[str, tuple[str, ...]]:
        return self._state, tuple(sorted(self._reads))

    async def _areset(self, *, seed: int | None, options: dict[str, Any]) -> tuple[str, dict]:
        task = options.get(TASK_OPTION)
        self.task = (
            self.get_task(task)
            if task is not None
            else self._draw(options.get(SPLIT_OPTION) or self.split)
        )
        await self._release()
        self.call_log, self._reads, self._credited = [], set(), []
        await self._open_session()
        info = {
            TASK_ID: self.task.id,
            GROUND_TRUTH: self.task.ground_truth(),
            ANCHOR: self._anchor(),
        }
        tools = [TOOLS[name].tool for name in self.task.tools]
        return self.task.prompt, self.begin(tools, SYSTEM_PROMPT, info)

    async def _astep(self, action: str) -> tuple[str, float, bool, bool, dict]:
        message = decode_action(action)
        self._checked = 0
        observation, reward, terminated, truncated, info = await super()._astep(action)
        calls = len(message.tool_calls)
        error = message.error or ("too many calls" if calls > self.max_calls_per_turn else "")
        info[REWARD_COMPONENTS]["format"] = format_validity(error, calls, self._checked)
        info[ANCHOR] = self._anchor()
        return observation, reward, terminated, truncated, info

    @staticmethod
    def _body(call: ToolCall) -> dict[str, Any]:
        return {"name": call.name, "arguments": _clean(call.arguments)}

    async def call_tool(self, call: ToolCall) -> str:
        self._checked += 1
        body = self._body(call)
        try:
            json.dumps(body, allow_nan=False)
        except ValueError:
            raise ToolError("arguments hold NaN or Infinity, which JSON does not allow") from None
        session = self._session or await self._open_session()
        reply = await session.step(body)
        self._state = reply["state"]
        if not reply["ok"]:
            raise ToolError(reply["error"])
        if not TOOLS[call.name].writes:
            self._reads.add(json.dumps([call.name, call.arguments], sort_keys=True, default=str))
        return reply["content"]

    def turn_components(self, results: Sequence[CallResult]) -> dict[str, float]:
        calls = [r.call for r in results]
        credit = call_credit(self.task.gold_calls, self._credited, calls)
        self._credited += calls
        return {"call_credit": credit}

    async def judge(self, answer: str | None) -> Outcome:
        session = self._session or await self._open_session()
        final = (await session.post("state"))["state"]
        await self._release()
        task = self.task
        predicted = [r.call for r in self.call_log]
        states = state_match(final, task.gold_state)
        facts = facts_in_answer(answer, task.facts, whole_words=self.whole_word_facts)
        silent = not task.no_tool or not predicted
        success = answer is not None and states == 1.0 and facts == 1.0 and silent
        return Outcome(
            float(success),
            success,
            {
                "outcome": float(success),
                "state_match": states,
                "facts": facts,
                "toolrl": toolrl_correctness(task.gold_calls, predicted),
                "toolrl_score": toolrl_score(task.gold_calls, predicted),
            },
        )
