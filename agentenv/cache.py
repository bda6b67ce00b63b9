"""The one cache root of agentenv: prepared models, search indexes and other built artefacts."""

from __future__ import annotations

import os
from pathlib import Path

CACHE_ENV_VAR = "AGENTENV_CACHE"


def cache_root(override: str | os.PathLike[str] | None = None) -> Path:
    """``override`` if given, else ``$AGENTENV_CACHE``, else ``~/.cache/agentenv``."""
    if override is not None:
        return Path(override)
    env = os.environ.get(CACHE_ENV_VAR)
    return Path(env) if env else Path.home() / ".cache" / "agentenv"
