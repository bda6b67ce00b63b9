"""Register, make and list agentenv environments on top of Gymnasium's registry.

Every env lives in Gymnasium's registry under the namespace ``agentenv``, so after
``import agentenv`` both ``agentenv.make("search-v0")`` and ``gymnasium.make("agentenv/search-v0")``
work. Third-party packages add envs through the entry-point group ``agentenv.envs``: each entry
point names a zero-argument callable that calls :func:`register`.

An env class needs no registration at all: an id of the form ``module:Class`` (or
``package.module:Class``) imports the module and registers the class under that id on first use,
so :func:`make`, :func:`env_info`, evaluation and training accept it like any other id. (In
Gymnasium's registry such an env is ``agentenv/module.Class``, see :func:`gymnasium_id`:
``gymnasium.make`` reads a colon as "import this module first".)
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import logging
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from types import ModuleType
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
    ``random_action(task, messages, rng) -> str`` (used by ScriptedPolicy and RandomPolicy;
    without it RandomPolicy uses a generic random action), and
    optionally ``closed_book(task, messages) -> str``, a demonstrator that answers without using
    the env's tools (ClosedBookPolicy)."""
    pretraining: str | None = None
    """``"module:function"`` returning warm-up text for a model built from scratch:
    ``function(n, seed=..., **env_kwargs) -> list[str]`` (see :mod:`agentenv.train.pretrain`)."""


_ENVS: dict[str, EnvInfo] = {}


class UnknownEnvError(KeyError):
    """Raised by :func:`make` for an id that is not registered (the message lists the close
    matches), or a ``module:Class`` id whose module or class cannot be found."""

    def __str__(self) -> str:
        return str(self.args[0])


def _short_id(env_id: str) -> str:
    prefix = f"{NAMESPACE}/"
    return env_id[len(prefix) :] if env_id.startswith(prefix) else env_id


def gymnasium_id(env_id: str) -> str:
    """The id of ``env_id`` in Gymnasium's registry: ``agentenv/search-v0``, and
    ``agentenv/module.Class`` for a ``module:Class`` id."""
    return f"{NAMESPACE}/{_short_id(env_id).replace(':', '.')}"


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
        id=gymnasium_id(short),
        entry_point=entry_point,
        kwargs=dict(info.kwargs),
        max_episode_steps=max_episode_steps,
        disable_env_checker=True,
    )


def list_envs() -> list[EnvInfo]:
    """All registered envs, sorted by id."""
    return [_ENVS[k] for k in sorted(_ENVS)]


def env_info(env_id: str) -> EnvInfo:
    """Registry entry of ``env_id``; raises :class:`UnknownEnvError` with close matches.

    A ``module:Class`` id that is not registered yet is registered here (see the module docs).
    """
    short = _short_id(env_id)
    if short not in _ENVS and ":" in short:
        _register_class_id(short)
    if short not in _ENVS:
        matches = difflib.get_close_matches(short, list(_ENVS), n=3)
        hint = f" Did you mean: {', '.join(matches)}?" if matches else ""
        known = ", ".join(sorted(_ENVS)) or "(none)"
        raise UnknownEnvError(f"unknown env id {env_id!r}.{hint} Registered: {known}")
    return _ENVS[short]


def import_env_module(name: str) -> ModuleType:
    """Import module ``name`` (which registers envs, or defines an env class).

    A module that does not exist raises :class:`UnknownEnvError`; one that exists but fails while
    importing raises its own error.
    """
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name is None or not (name == exc.name or name.startswith(f"{exc.name}.")):
            raise
        raise UnknownEnvError(
            f"no module named {exc.name!r} (looked for {name!r} on the Python path; "
            "the agentenv command also looks in the current directory)"
        ) from None


def _register_class_id(env_id: str) -> None:
    """Register the :class:`TextEnv` subclass that ``module:Class`` names under that id."""
    module_name, _, class_name = env_id.partition(":")
    if not module_name or not class_name or ":" in class_name:
        raise UnknownEnvError(f"env id {env_id!r}: expected MODULE:CLASS (e.g. mypkg.envs:MyEnv)")
    module = import_env_module(module_name)
    cls = getattr(module, class_name, None)
    if cls is None:
        envs = [n for n, v in vars(module).items() if _is_env_class(v)]
        listed = ", ".join(envs) or "none"
        raise UnknownEnvError(
            f"env id {env_id!r}: module {module_name!r} has no attribute {class_name!r} "
            f"(TextEnv subclasses in it: {listed})"
        )
    if not _is_env_class(cls):
        kind = f"class {cls.__name__}" if inspect.isclass(cls) else f"{type(cls).__name__} object"
        raise UnknownEnvError(
            f"env id {env_id!r}: {module_name}.{class_name} is not a TextEnv subclass "
            f"(it is a {kind})"
        )
    register(env_id, env_id, description=cls.description)


def _is_env_class(value: Any) -> bool:
    return inspect.isclass(value) and issubclass(value, TextEnv) and value is not TextEnv


def env_class(env_id: str) -> type[TextEnv]:
    """The class (or factory) registered for ``env_id``."""
    return load_env_creator(env_info(env_id).entry_point)


def make(env_id: str, **kwargs: Any) -> TextEnv:
    """Build env ``env_id`` with its registered defaults overridden by ``kwargs``.

    Unlike ``gymnasium.make`` this returns the env itself, not wrapped, so its async API
    (``areset``, ``astep``) and attributes (``tools``, ``stop_strings``) are at hand. A keyword
    the env's constructor does not take is a :class:`ValueError` that lists the ones it takes.
    """
    info = env_info(env_id)
    creator = load_env_creator(info.entry_point)
    kwargs = {**info.kwargs, **kwargs}
    _check_knobs(info.id, creator, kwargs)
    return creator(**kwargs)


def _check_knobs(env_id: str, creator: Any, kwargs: dict[str, Any]) -> None:
    params = inspect.signature(creator).parameters.values()
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return
    knobs = [p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    unknown = [k for k in kwargs if k not in knobs]
    if unknown:
        raise ValueError(
            f"env {env_id!r} takes no argument {', '.join(map(repr, unknown))}; "
            f"its arguments: {', '.join(knobs) or 'none'}"
        )


def load_plugins() -> None:
    """Run every ``agentenv.envs`` entry point; a broken plugin is logged, never fatal."""
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            ep.load()()
        except Exception as exc:  # a third-party plugin must not break agentenv
            log.warning("agentenv env plugin %s failed to load: %s", ep.name, exc)
