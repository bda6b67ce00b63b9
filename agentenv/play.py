"""One episode of an env played by an actor function, outside the rollout engine.

An actor is what every env family's scripted expert is: ``actor(task, messages) -> action``
(sync or async), reading the chat so far. :func:`play_episode` grows that chat as a chat client
would — the system prompt, each observation as a user message or, where the env answers with
``tool`` messages (``info["messages"]``), those; the assistant's action as text, or as OpenAI
tool calls under a native-tool-call protocol — so tests and benchmarks drive every family the
same way.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from agentenv.toolcalls import decode_action

Actor = Callable[[Any, list[dict[str, Any]]], "str | Awaitable[str]"]


@dataclass
class Episode:
    """What one played episode showed: the chat, the reset info then each step's info, each
    step's reward, and how it ended."""

    messages: list[dict[str, Any]]
    infos: list[dict[str, Any]]
    rewards: list[float]
    terminated: bool
    truncated: bool

    @property
    def info(self) -> dict[str, Any]:
        """The last step's info."""
        return self.infos[-1]

    @property
    def success(self) -> bool:
        return bool(self.info.get("success"))

    @property
    def final_reward(self) -> float:
        return self.rewards[-1] if self.rewards else 0.0

    @property
    def steps(self) -> int:
        return len(self.rewards)


def replay(actions: Sequence[str]) -> Actor:
    """An actor that plays ``actions`` in order; an episode that outlasts them is an error."""
    remaining = iter(actions)

    def actor(task: Any, messages: list[dict[str, Any]]) -> str:
        try:
            return next(remaining)
        except StopIteration:
            raise RuntimeError(f"the episode outlasted the {len(actions)} given actions") from None

    return actor


def assistant_message(env: Any, action: str, turn: int) -> dict[str, Any]:
    """The assistant turn as a rollout records it: OpenAI tool calls (ids ``call_{turn}_N``)
    under a native-tool-call protocol, the text otherwise."""
    if getattr(env, "protocol", None) == "native" and getattr(env, "tools", None):
        return decode_action(action).with_ids(f"call_{turn}_").to_openai()
    return {"role": "assistant", "content": action}


async def play_episode(
    env: Any,
    actor: Actor,
    *,
    seed: int | None = None,
    options: dict[str, Any] | None = None,
    max_steps: int = 1000,
) -> Episode:
    """Reset ``env`` (``seed``, ``options``) and step it with ``actor``'s actions until the
    episode ends; more than ``max_steps`` steps is an error (an env that never ends)."""
    observation, info = await env.areset(seed=seed, options=options)
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": info.get("system_prompt", "")},
        {"role": "user", "content": observation},
    ]
    episode = Episode(messages, [info], [], False, False)
    while episode.steps < max_steps:
        action = actor(env.task, messages)
        if inspect.isawaitable(action):
            action = await action
        messages.append(assistant_message(env, action, episode.steps))
        observation, reward, terminated, truncated, info = await env.astep(action)
        messages += info.get("messages") or [{"role": "user", "content": observation}]
        episode.infos.append(info)
        episode.rewards.append(float(reward))
        if terminated or truncated:
            episode.terminated, episode.truncated = bool(terminated), bool(truncated)
            return episode
    raise RuntimeError(f"the episode did not end within {max_steps} steps")
