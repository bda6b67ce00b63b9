"""Isolated command execution: bubblewrap (the default), docker/podman, and unsafe-local.

::

    async with Sandbox.create("bwrap", limits=Limits(timeout=30)) as sb:
        await sb.write_file("test_x.py", "def test_x():\n    assert True\n")
        result = await sb.run("python -m pytest -q")

See ``docs/sandbox.md`` for the threat model and what each backend blocks.
"""

from agentenv.sandbox.base import (
    GiB,
    KiB,
    Limits,
    MiB,
    RunResult,
    Sandbox,
    SandboxError,
    SandboxPathError,
    backends,
)
from agentenv.sandbox.bwrap import BwrapSandbox
from agentenv.sandbox.docker import DockerSandbox, PodmanSandbox
from agentenv.sandbox.docker import unavailable as engine_unavailable
from agentenv.sandbox.local import UnsafeLocalSandbox
from agentenv.sandbox.workspace import default_root, remove_orphans

__all__ = [
    "BwrapSandbox",
    "DockerSandbox",
    "GiB",
    "KiB",
    "Limits",
    "MiB",
    "PodmanSandbox",
    "RunResult",
    "Sandbox",
    "SandboxError",
    "SandboxPathError",
    "UnsafeLocalSandbox",
    "backends",
    "default_root",
    "engine_unavailable",
    "remove_orphans",
]
