"""Built-in environment families. Importing this package registers their envs and services."""

from agentenv.envs import search, swe, tooluse, webshop  # noqa: F401
from agentenv.registry import list_envs

BUILTIN_ENVS: tuple[str, ...] = tuple(info.id for info in list_envs())
"""Ids of the envs that ship with agentenv (registered before any plugin or user env)."""
