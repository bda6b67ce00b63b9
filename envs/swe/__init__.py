"""SWE environment family: bug fixing in a sandboxed repository, graded as SWE-bench grades.

``packages`` pins PyPI sdists that ship their tests, ``mutations`` injects bugs into one function
(SWE-smith's procedural families, Yang et al. 2025, arXiv 2504.21798), ``factory`` validates them
in a bwrap sandbox as SWE-bench-format instances, ``tasks`` loads SWE-bench/SWE-smith rows,
``grading`` grades a diff in a fresh sandbox, ``tools`` are the agent's bash/editor/submit,
``server`` the session service and ``env`` the ``swe-v0`` env (docs/envs/swe.md). Registered by
string: nothing is imported until the env is made.
"""

from agentenv.registry import register
from agentenv.service import register_service

register(
    "swe-v0",
    "agentenv.envs.swe.env:SWEEnv",
    description="Fix a bug in a real Python package in a sandbox (SWE-bench grading)",
    expert="agentenv.envs.swe.expert",
)
register_service(
    "swe",
    "agentenv.envs.swe.server:create_app",
    description="Sandboxed workspaces (bubblewrap by default), one per session; grading in fresh ones",
)
