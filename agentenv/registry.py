"""Register, make and list agentenv environments on top of Gymnasium's registry.

Every env lives in Gymnasium's registry under the namespace ``agentenv``, so after
``import agentenv`` both ``agentenv.make("search-v0")`` and ``gymnasium.make("agentenv/search-v0")``
work. Third-party packages add envs through the entry-point group ``agentenv.envs``: each entry
point names a zero-argument callable that calls :func:`register`.
"""

from __future__ import annotations

import difflib
import logging
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any

import gymnasium
from gymnasium.envs.registration import load_env_creator

from agentenv.env import TextEnv

NAMESPACE = "agentenv"
ENTRY_POINT_GROUP = "agentenv.envs"

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EnvInfo:
    """What the registry knows about an env besides how to build it."""

    id: str
    entry_point: str
    description: str = ""
    kwargs: dict[str, Any] = field(default_factory=dict)
    expert: str | None = None
    """Module with the family's scripted solver: ``solve(task, messages) -> str`` and
    ``random_action(task, messages, rng) -> str`` (used by ScriptedPolicy and RandomPolicy), and
    optionally ``closed_book(task, messages) -> str``, a demonstrator that answers without using
    the env's tools (ClosedBookPolicy)."""
    pretraining: str | None = None
    """``"module:function"`` returning warm-up text for a model built from scratch:
    ``function(n, seed=..., **env_kwargs) -> list[str]`` (see :mod:`agentenv.train.pretrain`)."""


_ENVS: dict[str, EnvInfo] = {}


class UnknownEnvError(KeyError):
    """Raised by :func:`make` for an id that is not registered; lists the close matches."""

    def __str__(self) -> str:
        return str(self.args[0])


def _short_id(env_id: str) -> str:
    prefix = f"{NAMESPACE}/"
    return env_id[len(prefix) :] if env_id.startswith(prefix) else env_id


def register(
    id: str,
    entry_point: str,
    *,
    description: str = "",
    kwargs: dict[str, Any] | None = None,
    expert: str | None = None,
    pretraining: str | None = None,
    max_episode_steps: int | None = None,
) -> None:
    """Register env ``id`` (e.g. ``"search-v0"``) built by ``entry_point`` (``"pkg.mod:Class"``).

    ``kwargs`` are the defaults passed to the constructor; :func:`make` arguments override them.
    """
    short = _short_id(id)
    info = EnvInfo(short, entry_point, description, dict(kwargs or {}), expert, pretraining)
    _ENVS[short] = info
    gymnasium.register(
        id=f"{NAMESPACE}/{short}",
        entry_point=entry_point,
        kwargs=dict(info.kwargs),
        max_episode_steps=max_episode_steps,
        disable_env_checker=True,
    )


def list_envs() -> list[EnvInfo]:
    """All registered envs, sorted by id."""
    return [_ENVS[k] for k in sorted(_ENVS)]


def env_info(env_id: str) -> EnvInfo:
    """Registry entry of ``env_id``; raises :class:`UnknownEnvError` with close matches."""
    short = _short_id(env_id)
    if short not in _ENVS:
        matches = difflib.get_close_matches(short, list(_ENVS), n=3, cutoff=0.4)
        hint = f" Did you mean: {', '.join(matches)}?" if matches else ""
        known = ", ".join(sorted(_ENVS)) or "(none)"
        raise UnknownEnvError(f"unknown env id {env_id!r}.{hint} Registered: {known}")
    return _ENVS[short]


def env_class(env_id: str) -> type[TextEnv]:
    """The class (or factory) registered for ``env_id``."""
    return load_env_creator(env_info(env_id).entry_point)


def make(env_id: str, **kwargs: Any) -> TextEnv:
    """Build env ``env_id`` with its registered defaults overridden by ``kwargs``.

    Unlike ``gymnasium.make`` this returns the env itself, not wrapped, so its async API
    (``areset``, ``astep``) and attributes (``tools``, ``stop_strings``) are at hand.
    """
    info = env_info(env_id)
    return load_env_creator(info.entry_point)(**{**info.kwargs, **kwargs})


def load_plugins() -> None:
    """Run every ``agentenv.envs`` entry point; a broken plugin is logged, never fatal."""
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            ep.load()()
        except Exception as exc:  # a third-party plugin must not break agentenv
            log.warning("agentenv env plugin %s failed to load: %s", ep.name, exc)
