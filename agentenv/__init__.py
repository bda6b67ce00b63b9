"""agentenv: multi-turn text environments, rollouts, credit assignment and RL for LLM agents."""

from importlib.metadata import PackageNotFoundError, version

from agentenv.env import INFO_KEYS, TextEnv, UnicodeText
from agentenv.registry import EnvInfo, env_info, list_envs, load_plugins, make, register
from agentenv.service import EnvServiceError

DISTRIBUTION = "rl-agentenv"
"""The name agentenv is installed under (``pip install rl-agentenv``); the import name is
``agentenv``."""

try:
    __version__ = version(DISTRIBUTION)
except PackageNotFoundError:  # imported from a source tree that was never installed
    __version__ = "0+unknown"

__all__ = [
    "DISTRIBUTION",
    "INFO_KEYS",
    "EnvInfo",
    "EnvServiceError",
    "TextEnv",
    "UnicodeText",
    "env_info",
    "list_envs",
    "make",
    "register",
]

import agentenv.envs  # noqa: E402,F401  (registers the built-in envs)

load_plugins()
