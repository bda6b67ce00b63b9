"""Fixtures of the search env tests: a private index cache and an episode runner."""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from agentenv.envs.search import expert
from agentenv.envs.search.env import SearchEnv
from agentenv.envs.search.tasks import Task
from agentenv.play import Actor, Episode, play_episode


@pytest.fixture(scope="session", autouse=True)
def search_cache(tmp_path_factory: pytest.TempPathFactory) -> str:
    """Index cache of this test session (inherited by the uvicorn subprocesses)."""
    previous = os.environ.get("AGENTENV_CACHE")
    path = str(tmp_path_factory.mktemp("agentenv-cache"))
    os.environ["AGENTENV_CACHE"] = path
    yield path
    if previous is None:
        os.environ.pop("AGENTENV_CACHE", None)
    else:
        os.environ["AGENTENV_CACHE"] = previous


def play(
    env: SearchEnv, task: Task | str | None = None, actor: Actor = expert.solve, seed: int = 0
) -> Awaitable[Episode]:
    """One episode of ``task`` (or the seed's task)."""
    return play_episode(env, actor, seed=seed, options=None if task is None else {"task": task})


@pytest.fixture
def run_episode() -> Callable[..., Any]:
    return play
