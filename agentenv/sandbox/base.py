"""The sandbox contract: :class:`Sandbox`, its :class:`Limits`, :class:`RunResult` and the output cap.

A :class:`Sandbox` is one workspace (a directory the commands may write) plus a way to run shell
commands in it under limits. Backends subclass it with a ``backend=`` name
(``class BwrapSandbox(Sandbox, backend="bwrap")``) and :meth:`Sandbox.create` picks one by name.
Commands and file operations of one sandbox run one at a time (an :class:`asyncio.Lock`), so no
command runs while the host reads or writes the workspace.
"""

from __future__ import annotations

import abc
import asyncio
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from types import TracebackType
from typing import Any, ClassVar, Self

KiB = 1 << 10
MiB = 1 << 20
GiB = 1 << 30


class SandboxError(RuntimeError):
    """A sandbox could not be created, used or destroyed."""


class SandboxPathError(SandboxError, ValueError):
    """A path that would leave the workspace (``..``, an absolute path elsewhere, a symlink out)."""


@dataclass(frozen=True)
class Limits:
    """What one sandbox may use. Sizes are bytes; every limit binds each process of a command.

    - ``address_space`` (2 GiB): ``RLIMIT_AS`` of each process (docker: the container's memory).
    - ``cpu_seconds`` (120): ``RLIMIT_CPU`` of each process; past it the process is killed.
    - ``file_size`` (256 MiB): ``RLIMIT_FSIZE``, the largest file a process may write.
    - ``open_files`` (256): ``RLIMIT_NOFILE``.
    - ``processes`` (128): ``RLIMIT_NPROC`` of the sandbox's uid (docker: ``pids_limit``). It
      only binds for a non-root host uid: as root, each sandbox runs as its own uid; otherwise as
      the current user, and then it counts all of that user's processes.
    - ``disk`` (1 GiB): size of the workspace (a tmpfs of its own when the host runs as root).
    - ``tmp_size`` (256 MiB): size of each private tmpfs (``/tmp``, ``/dev/shm``).
    - ``max_output`` (10,000): characters of a command's output kept; longer output keeps the
      first and last half with a note in the middle, as mini-swe-agent does.
    - ``timeout`` (60 s): wall-clock seconds a command may run unless ``run`` says otherwise;
      then its whole process tree is killed.
    """

    address_space: int = 2 * GiB
    cpu_seconds: int = 120
    file_size: int = 256 * MiB
    open_files: int = 256
    processes: int = 128
    disk: int = 1 * GiB
    tmp_size: int = 256 * MiB
    max_output: int = 10_000
    timeout: float = 60.0

    def __post_init__(self) -> None:
        for name, value in vars(self).items():
            if value <= 0:
                raise ValueError(f"Limits.{name} must be > 0, got {value}")


@dataclass(frozen=True)
class RunResult:
    """What a command did.

    ``returncode`` follows the shell: ``128 + N`` when a signal ``N`` killed it (137 after a
    timeout). ``output`` is stdout and stderr interleaved, capped at ``Limits.max_output``
    characters (``truncated`` says whether it was). ``seconds`` is the wall time of the run.
    """

    returncode: int
    output: str
    truncated: bool
    timed_out: bool
    seconds: float


def elision_note(elided: int, total: int) -> str:
    """The note that replaces the middle of a long output (mini-swe-agent's warning, shortened)."""
    return (
        f"\n<warning>The output was too long ({total} characters); {elided} characters in the "
        "middle were elided. Try a command that prints less: head, tail, sed -n or a more "
        "selective grep, or redirect the output to a file and search it.</warning>\n"
    )


def truncate(text: str, limit: int, total: int | None = None) -> tuple[str, bool]:
    """``text`` if it has at most ``limit`` characters, else its first and last ``limit // 2``
    around :func:`elision_note`; and whether it was cut. ``total`` overrides the length the note
    reports (when ``text`` is already a head and tail of something longer)."""
    total = len(text) if total is None else total
    if total <= limit:
        return text, False
    head, tail = limit // 2, limit - limit // 2
    return text[:head] + elision_note(total - head - tail, total) + text[-tail:], True


class OutputCapture:
    """Keeps a bounded head and tail of a byte stream (the memory cost stays ``O(limit)``)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.keep = 2 * limit  # bytes per side: enough for ``limit // 2`` multi-byte characters
        self.head = bytearray()
        self.tail = bytearray()
        self.total = 0

    def feed(self, chunk: bytes) -> None:
        self.total += len(chunk)
        room = self.keep - len(self.head)
        if room > 0:
            self.head += chunk[:room]
            chunk = chunk[room:]
        if chunk:
            self.tail += chunk
            del self.tail[: -self.keep]

    def result(self) -> tuple[str, bool]:
        """The captured text and whether it was truncated."""
        if self.total <= 2 * self.keep:  # nothing was dropped: exact character counts
            return truncate(bytes(self.head + self.tail).decode(errors="replace"), self.limit)
        head = self.head.decode(errors="replace")[: self.limit // 2]
        tail = self.tail.decode(errors="replace")[-(self.limit - self.limit // 2) :]
        # Counted in bytes: the middle was never kept, so its characters are unknown.
        return truncate(head + tail, self.limit, total=self.total)


def exit_status(returncode: int) -> int:
    """A subprocess return code as a shell reports it (``-N`` → ``128 + N``)."""
    return 128 - returncode if returncode < 0 else returncode


def sandbox_path(
    path: str | PurePosixPath, workdir: str, *, allow_root: bool = False
) -> PurePosixPath:
    """``path`` (relative to the workspace, or absolute under ``workdir``) as a relative path.

    Raises :class:`SandboxPathError` for ``..`` components, absolute paths outside ``workdir``,
    and (unless ``allow_root``) the workspace itself.
    """
    pure = PurePosixPath(path)
    if pure.is_absolute():
        try:
            pure = pure.relative_to(workdir)
        except ValueError:
            raise SandboxPathError(f"{str(path)!r} is outside the workspace {workdir}") from None
    if ".." in pure.parts:
        raise SandboxPathError(f"{str(path)!r}: '..' is not allowed in sandbox paths")
    if not allow_root and pure == PurePosixPath("."):
        raise SandboxPathError(f"{str(path)!r} is the workspace itself, not a file in it")
    return pure


class Sandbox(abc.ABC):
    """One workspace and the commands run in it.

    ``async with Sandbox.create("bwrap", limits=Limits(...)) as sb:`` starts it (creates the
    workspace) and destroys it at the end (the workspace and every process left). ``workdir`` is
    the workspace's path as commands see it; file methods take paths relative to it (or absolute
    under it) and refuse anything that leaves it.
    """

    backend: ClassVar[str] = ""
    _backends: ClassVar[dict[str, type[Sandbox]]] = {}

    def __init_subclass__(cls, *, backend: str | None = None, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if backend is not None:
            cls.backend = backend
            Sandbox._backends[backend] = cls

    @staticmethod
    def create(backend: str = "bwrap", limits: Limits | None = None, **options: Any) -> Sandbox:
        """A new, not yet started sandbox of ``backend`` (see :func:`backends`).

        ``options`` go to the backend: ``root`` (host folder of workspaces), ``workdir``, ``env``
        (extra environment variables); bwrap: ``ro_binds`` (host paths shown read-only); docker
        and podman: ``image``, and ``workspace="image"`` to make the image's own ``workdir`` (say
        ``/testbed``) the writable workspace instead of a fresh tmpfs.
        """
        if backend not in Sandbox._backends:
            hint = " (no isolation: name it 'unsafe-local' to opt in)" if backend == "local" else ""
            raise SandboxError(
                f"unknown sandbox backend {backend!r}{hint}; known: {', '.join(backends())}"
            )
        return Sandbox._backends[backend](limits or Limits(), **options)

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self._lock = asyncio.Lock()
        self._state = "new"

    @property
    @abc.abstractmethod
    def workdir(self) -> str:
        """The workspace's path as the sandbox's commands see it."""

    async def start(self) -> Self:
        """Create the workspace (and whatever the backend holds); idempotent."""
        async with self._lock:
            if self._state == "closed":
                raise SandboxError("this sandbox was destroyed; create a new one")
            if self._state == "new":
                await self._start()
                self._state = "open"
        return self

    async def aclose(self) -> None:
        """Destroy the sandbox: kill what still runs, remove the workspace; idempotent."""
        async with self._lock:
            if self._state == "open":
                await self._close()
            self._state = "closed"

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def run(self, command: str, *, timeout: float | None = None) -> RunResult:
        """Run ``command`` with ``bash -c`` in the workspace; kill its process tree after
        ``timeout`` seconds (default ``Limits.timeout``)."""
        timeout = self.limits.timeout if timeout is None else timeout
        if timeout <= 0:
            raise ValueError(f"timeout must be > 0, got {timeout}")
        async with self._opened():
            return await self._run(command, timeout)

    async def write_file(self, path: str | PurePosixPath, content: str | bytes) -> None:
        """Write ``content`` (text is UTF-8 encoded) to ``path``, creating its folders."""
        data = content.encode() if isinstance(content, str) else content
        async with self._opened():
            await self._write(sandbox_path(path, self.workdir), data)

    async def read_bytes(self, path: str | PurePosixPath) -> bytes:
        """The bytes of the regular file ``path``."""
        async with self._opened():
            return await self._read(sandbox_path(path, self.workdir))

    async def read_file(self, path: str | PurePosixPath) -> str:
        """The text of the regular file ``path`` (UTF-8, undecodable bytes replaced)."""
        return (await self.read_bytes(path)).decode(errors="replace")

    async def copy_in(self, host_path: str | Path, path: str | PurePosixPath) -> None:
        """Copy the host file or folder ``host_path`` to ``path`` in the workspace; a folder is
        merged into ``path`` (``"."``: the workspace itself). Symlinks are copied as links."""
        async with self._opened():
            rel = sandbox_path(path, self.workdir, allow_root=True)
            await self._copy_in(Path(host_path), rel)

    async def copy_out(self, path: str | PurePosixPath, host_path: str | Path) -> None:
        """Copy the workspace file or folder ``path`` (``"."``: all of it) to ``host_path``.
        Symlinks are copied as links, never followed; other special files are refused."""
        async with self._opened():
            rel = sandbox_path(path, self.workdir, allow_root=True)
            await self._copy_out(rel, Path(host_path))

    def _opened(self) -> _Opened:
        return _Opened(self)

    @abc.abstractmethod
    async def _start(self) -> None: ...

    @abc.abstractmethod
    async def _close(self) -> None: ...

    @abc.abstractmethod
    async def _run(self, command: str, timeout: float) -> RunResult: ...

    @abc.abstractmethod
    async def _write(self, path: PurePosixPath, data: bytes) -> None: ...

    @abc.abstractmethod
    async def _read(self, path: PurePosixPath) -> bytes: ...

    @abc.abstractmethod
    async def _copy_in(self, host_path: Path, path: PurePosixPath) -> None: ...

    @abc.abstractmethod
    async def _copy_out(self, path: PurePosixPath, host_path: Path) -> None: ...


class _Opened:
    """Holds the sandbox's lock and checks that it is started and not destroyed."""

    def __init__(self, sandbox: Sandbox) -> None:
        self.sandbox = sandbox

    async def __aenter__(self) -> None:
        await self.sandbox._lock.acquire()
        if self.sandbox._state != "open":
            self.sandbox._lock.release()
            state = "not started" if self.sandbox._state == "new" else "destroyed"
            raise SandboxError(f"the sandbox is {state}")

    async def __aexit__(self, *exc: object) -> None:
        self.sandbox._lock.release()


def backends() -> list[str]:
    """Names of the registered backends."""
    return sorted(Sandbox._backends)
