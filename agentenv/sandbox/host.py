"""Sandboxes whose workspace is a host folder (bwrap, unsafe-local): the shared plumbing.

A subclass says how a command is wrapped (:meth:`HostSandbox.argv`), where the commands see the
workspace (``workdir``) and whether the sandbox gets a uid of its own; file operations are the
host's (:class:`~agentenv.sandbox.workspace.Workspace`) and run in a worker thread.
"""

from __future__ import annotations

import abc
import asyncio
import os
import sys
from collections.abc import Mapping
from pathlib import Path, PurePosixPath

from agentenv.sandbox.base import Limits, RunResult, Sandbox, SandboxError
from agentenv.sandbox.process import run_process
from agentenv.sandbox.workspace import Workspace, default_root, remove_orphans

BASE_ENV = {
    "LANG": "C.UTF-8",
    "TMPDIR": "/tmp",
    "PAGER": "cat",
    "MANPAGER": "cat",
    "LESS": "-R",
    "PIP_PROGRESS_BAR": "off",
    "TQDM_DISABLE": "1",
}
"""The environment of every command (mini-swe-agent's), plus ``PATH`` and ``HOME``."""

SYSTEM_PATH = "/usr/local/bin:/usr/bin:/bin"

_cleaned_roots: set[Path] = set()


def python_bin() -> str:
    """The folder of this interpreter's scripts (a venv's ``bin``): first on the sandbox PATH."""
    return str(Path(sys.prefix) / "bin")


class HostSandbox(Sandbox):
    """A sandbox over a host workspace folder. ``root``: the folder of workspaces
    (:func:`~agentenv.sandbox.workspace.default_root`); ``env``: extra environment variables."""

    own_uid: bool = False

    def __init__(
        self,
        limits: Limits,
        *,
        root: str | Path | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(limits)
        self.root = Path(root) if root is not None else default_root()
        self.extra_env = dict(env or {})
        self._workspace: Workspace | None = None

    @property
    def workspace(self) -> Workspace:
        """The host workspace (only while the sandbox is open)."""
        if self._workspace is None:
            raise SandboxError("the sandbox is not started")
        return self._workspace

    @property
    def host_path(self) -> Path:
        """The workspace's folder on the host."""
        return self.workspace.path

    def command_env(self) -> dict[str, str]:
        """The environment a command sees."""
        path = f"{python_bin()}:{SYSTEM_PATH}"
        return {**BASE_ENV, "PATH": path, "HOME": self.workdir, **self.extra_env}

    @abc.abstractmethod
    def argv(self, command: str) -> list[str]:
        """The host command line that runs ``command`` in this sandbox."""

    def cwd(self) -> str | None:
        """The host folder the wrapped command starts in (``None``: the caller's)."""
        return None

    async def _start(self) -> None:
        if self.root not in _cleaned_roots:
            _cleaned_roots.add(self.root)
            await asyncio.to_thread(remove_orphans, self.root)
        disk = self.limits.disk if self.own_uid else None
        self._workspace = Workspace.claim(self.root, own_uid=self.own_uid, disk=disk)

    async def _close(self) -> None:
        workspace, self._workspace = self._workspace, None
        if workspace is not None:
            workspace.destroy()

    async def _run(self, command: str, timeout: float) -> RunResult:
        return await run_process(
            self.argv(command),
            env=self.host_env(),
            cwd=self.cwd(),
            timeout=timeout,
            max_output=self.limits.max_output,
        )

    def host_env(self) -> dict[str, str]:
        """The environment of the wrapper on the host (the command's, unless it clears it)."""
        return {"PATH": os.environ.get("PATH", SYSTEM_PATH)}

    async def _write(self, path: PurePosixPath, data: bytes) -> None:
        await asyncio.to_thread(self.workspace.write, path, data)

    async def _read(self, path: PurePosixPath) -> bytes:
        return await asyncio.to_thread(self.workspace.read, path)

    async def _copy_in(self, host_path: Path, path: PurePosixPath) -> None:
        await asyncio.to_thread(self.workspace.copy_in, host_path, path)

    async def _copy_out(self, path: PurePosixPath, host_path: Path) -> None:
        await asyncio.to_thread(self.workspace.copy_out, path, host_path)
