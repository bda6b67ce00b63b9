"""Fixtures of the WebShop tests: a private index cache and a small hand-made catalogue."""

from __future__ import annotations

import os

import pytest

from agentenv.envs.webshop.products import Product
from tests.webshop.shop import catalogue


@pytest.fixture(scope="session", autouse=True)
def webshop_cache(tmp_path_factory: pytest.TempPathFactory) -> str:
    """Index cache of this test session (inherited by the uvicorn subprocesses)."""
    previous = os.environ.get("AGENTENV_CACHE")
    path = str(tmp_path_factory.mktemp("agentenv-cache"))
    os.environ["AGENTENV_CACHE"] = path
    yield path
    if previous is None:
        os.environ.pop("AGENTENV_CACHE", None)
    else:
        os.environ["AGENTENV_CACHE"] = previous


@pytest.fixture(scope="session")
def products() -> list[Product]:
    return catalogue()
