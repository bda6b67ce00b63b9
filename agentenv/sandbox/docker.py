"""The ``docker`` and ``podman`` backends: one container per sandbox, driven by the ``docker`` SDK.

Install with ``pip install 'rl-agentenv[docker]'``; podman serves the same API on its socket
(``podman system service``). The container runs as ``nobody`` (65534) with the network disabled,
a memory cap (``Limits.address_space``, no swap), ``pids_limit`` (``Limits.processes``), a
read-only root, size-capped tmpfs at ``/tmp``, ``/dev/shm`` and the workspace (``Limits.disk``),
all capabilities dropped, ``no-new-privileges``, and the CPU, file-size and open-file rlimits.

Its main process waits on stdin, which the engine closes when this process's attach socket goes
(``stdin_once``): if the host process dies the container stops, killing every process in it.
Each command runs under ``timeout`` in the container; after each one, every process of the
sandbox user is killed (so nothing outlives its command, as with bwrap).
"""

from __future__ import annotations

import asyncio
import io
import os
import shutil
import tarfile
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path, PurePosixPath
from typing import Any

from agentenv.sandbox.base import Limits, OutputCapture, RunResult, Sandbox, SandboxError

try:
    import docker
    import docker.errors
    import docker.types
except ImportError:  # the optional extra
    docker = None

DEFAULT_IMAGE = "python:3.11-slim"
WORKDIR = "/workspace"
USER = "65534:65534"
LABEL = "agentenv.sandbox.owner"
ENV = {"HOME": WORKDIR, "LANG": "C.UTF-8", "PAGER": "cat", "PIP_PROGRESS_BAR": "off"}


def podman_url() -> str:
    """The podman socket: ``$CONTAINER_HOST``, the user's, or the system's."""
    if url := os.environ.get("CONTAINER_HOST"):
        return url
    runtime = os.environ.get("XDG_RUNTIME_DIR", f"/run/user/{os.getuid()}")
    path = f"{runtime}/podman/podman.sock" if os.getuid() else "/run/podman/podman.sock"
    return f"unix://{path}"


def engine_client(backend: str = "docker") -> Any:
    """A connected SDK client for ``backend``, or a :class:`SandboxError` saying why not."""
    if docker is None:
        raise SandboxError(
            "no Docker/podman engine: the docker package is missing (pip install 'rl-agentenv[docker]')"
        )
    try:
        client = docker.from_env() if backend == "docker" else docker.DockerClient(podman_url())
        client.ping()
    except Exception as exc:
        raise SandboxError(f"no Docker/podman engine ({backend}): {exc}") from exc
    return client


def unavailable(backend: str = "docker") -> str | None:
    """Why ``backend`` cannot run here (``None``: it can)."""
    try:
        engine_client(backend).close()
    except SandboxError as exc:
        return str(exc)
    return None


class DockerSandbox(Sandbox, backend="docker"):
    """A container of ``image`` (it needs ``bash``, ``timeout`` and ``sleep``)."""

    engine = "docker"

    def __init__(
        self,
        limits: Limits,
        *,
        image: str = DEFAULT_IMAGE,
        env: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(limits)
        self.image = image
        self.env = {**ENV, **(env or {})}
        self._client: Any = None
        self._container: Any = None
        self._stdin: Any = None

    @property
    def workdir(self) -> str:
        return WORKDIR

    async def _start(self) -> None:
        self._client = await asyncio.to_thread(engine_client, self.engine)
        await asyncio.to_thread(self._remove_orphans)
        self._container = await asyncio.to_thread(self._create_container)

    def _create_container(self) -> Any:
        lim = self.limits
        tmpfs = f"size={lim.tmp_size},mode=1777"
        container = self._client.containers.create(
            self.image,
            ["sh", "-c", "cat > /dev/null"],
            user=USER,
            working_dir=WORKDIR,
            environment=self.env,
            labels={LABEL: str(os.getpid())},
            stdin_open=True,  # not detached: the SDK sets StdinOnce too
            init=True,
            network_disabled=True,
            mem_limit=lim.address_space,
            memswap_limit=lim.address_space,
            pids_limit=lim.processes,
            read_only=True,
            tmpfs={"/tmp": tmpfs, "/dev/shm": tmpfs, WORKDIR: f"size={lim.disk},mode=1777"},
            cap_drop=["ALL"],
            security_opt=["no-new-privileges"],
            ulimits=[
                docker.types.Ulimit(name="cpu", soft=lim.cpu_seconds, hard=lim.cpu_seconds),
                docker.types.Ulimit(name="fsize", soft=lim.file_size, hard=lim.file_size),
                docker.types.Ulimit(name="nofile", soft=lim.open_files, hard=lim.open_files),
            ],
        )
        self._stdin = self._client.api.attach_socket(container.id, params={"stdin": 1, "stream": 1})
        container.start()
        return container

    def _remove_orphans(self) -> None:
        """Remove the sandbox containers of processes of this host that died."""
        for container in self._client.containers.list(all=True, filters={"label": LABEL}):
            pid = container.labels.get(LABEL, "")
            if pid.isdigit() and not Path(f"/proc/{pid}").exists():
                container.remove(force=True)

    async def _close(self) -> None:
        await asyncio.to_thread(self._container.remove, force=True)
        self._stdin.close()
        self._client.close()

    async def _run(self, command: str, timeout: float) -> RunResult:
        return await asyncio.to_thread(self._exec, command, timeout)

    def _exec(self, command: str, timeout: float) -> RunResult:
        start = time.perf_counter()
        api = self._client.api
        argv = ["timeout", "-s", "KILL", f"{timeout:.3f}", "bash", "-c", command]
        exec_id = api.exec_create(self._container.id, argv, user=USER, workdir=WORKDIR)["Id"]
        capture = OutputCapture(self.limits.max_output)
        for chunk in api.exec_start(exec_id, stream=True):
            capture.feed(chunk)
        code = api.exec_inspect(exec_id)["ExitCode"]
        self._container.exec_run(["sh", "-c", "kill -9 -1"], user=USER)  # what it left running
        seconds = time.perf_counter() - start
        output, truncated = capture.result()
        return RunResult(code, output, truncated, code == 137 and seconds >= timeout, seconds)

    async def _write(self, path: PurePosixPath, data: bytes) -> None:
        await asyncio.to_thread(self._put, path, _tar_bytes(path.name, data))

    def _put(self, path: PurePosixPath, archive: bytes) -> None:
        parent = str(PurePosixPath(WORKDIR) / path.parent)
        self._container.exec_run(["mkdir", "-p", parent], user=USER)
        if not self._container.put_archive(parent, archive):
            raise SandboxError(f"could not write into {parent}")

    async def _read(self, path: PurePosixPath) -> bytes:
        archive = await asyncio.to_thread(self._get, path)
        with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
            member = tar.next()
            if member is None or not member.isfile():
                raise SandboxError(f"{str(path)!r} is not a regular file")
            return tar.extractfile(member).read()

    def _get(self, path: PurePosixPath) -> bytes:
        try:
            stream, _ = self._container.get_archive(str(PurePosixPath(WORKDIR) / path))
        except docker.errors.NotFound:
            raise FileNotFoundError(f"no file {str(path)!r} in the sandbox") from None
        return b"".join(stream)

    async def _copy_in(self, host_path: Path, path: PurePosixPath) -> None:
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w") as tar:
            tar.add(host_path, arcname=path.name or ".", filter=_owned)
        await asyncio.to_thread(self._put, path, buffer.getvalue())

    async def _copy_out(self, path: PurePosixPath, host_path: Path) -> None:
        archive = await asyncio.to_thread(self._get, path)
        with tempfile.TemporaryDirectory() as tmp, tarfile.open(fileobj=io.BytesIO(archive)) as tar:
            tar.extractall(tmp, filter="data")  # refuses absolute paths, '..' and links out
            (root,) = os.listdir(tmp)
            shutil.move(Path(tmp, root), host_path)


class PodmanSandbox(DockerSandbox, backend="podman"):
    """The docker backend against podman's Docker-compatible socket (:func:`podman_url`)."""

    engine = "podman"


def _tar_bytes(name: str, data: bytes) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        info = tarfile.TarInfo(name)
        info.size, info.mode, info.uid, info.gid = len(data), 0o644, 65534, 65534
        tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def _owned(info: tarfile.TarInfo) -> tarfile.TarInfo:
    info.uid = info.gid = 65534
    info.uname = info.gname = ""
    return info
