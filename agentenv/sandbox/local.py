"""The ``unsafe-local`` backend: commands run directly on the host, **without any isolation**.

Only a workspace folder, a wall-clock timeout with a process-group kill, and the output cap.
No rlimits, no namespaces: the command can read and write whatever the host user can, reach the
network, and leave processes behind (anything that calls ``setsid``). Use it only for trusted
commands, or to compare against a real sandbox (the escape suite shows every escape succeeding
here). Choosing it logs a warning.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

from agentenv.sandbox.base import Limits
from agentenv.sandbox.host import HostSandbox

log = logging.getLogger(__name__)


class UnsafeLocalSandbox(HostSandbox, backend="unsafe-local"):
    """No isolation at all: see the module docstring. ``workdir`` is the host workspace path."""

    own_uid = False

    def __init__(
        self,
        limits: Limits,
        *,
        root: str | Path | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(limits, root=root, env=env)
        log.warning("sandbox backend 'unsafe-local': commands run on the host WITHOUT isolation")

    @property
    def workdir(self) -> str:
        return str(self.host_path) if self._workspace is not None else ""

    def argv(self, command: str) -> list[str]:
        return ["bash", "-c", command]

    def cwd(self) -> str:
        return str(self.host_path)

    def host_env(self) -> dict[str, str]:
        return self.command_env()
