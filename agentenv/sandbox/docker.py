"""The ``docker`` and ``podman`` backends: one container per sandbox, driven by the ``docker`` SDK.

Install with ``pip install 'rl-agentenv[docker]'``; podman serves the same API on its socket
(``podman system service``). The container runs with the network disabled, a memory cap
(``Limits.address_space``, no swap), ``pids_limit`` (``Limits.processes``), a read-only root,
size-capped tmpfs at ``/tmp`` and ``/dev/shm``, all capabilities dropped, ``no-new-privileges``,
and the CPU, file-size and open-file rlimits. Its workspace (``workdir``) is one of:

- ``workspace="tmpfs"`` (the default): a fresh tmpfs of ``Limits.disk`` at ``workdir``
  (``/workspace``); commands run as ``nobody`` (65534).
- ``workspace="image"``: a named volume of this sandbox at ``workdir`` (``/testbed`` for
  SWE-bench images), which the engine fills with the image's content at that path when the
  container is created; commands run as root (uid 0, no capabilities), as the image's files are
  root-owned, with ``HOME=/tmp``. ``Limits.disk`` does not bind the volume (only
  ``Limits.file_size`` per file). The volume is removed with the container.

Its main process (:data:`MAIN_USER`, a uid of its own) waits on stdin, which the engine closes
when this process's attach socket goes (``stdin_once``): if the host process dies the container
stops, killing every process in it. Each command runs under ``timeout`` in the container; after
each one, every process of the command's user is killed (so nothing outlives its command, as
with bwrap); without ``CAP_KILL`` that ``kill -9 -1`` reaches only the command's own uid, never
the main process (were it the same uid, the first command's cleanup would stop the container).
"""

from __future__ import annotations

import asyncio
import functools
import io
import os
import secrets
import shutil
import tarfile
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path, PurePosixPath
from typing import Any, Literal

from agentenv.sandbox.base import Limits, OutputCapture, RunResult, Sandbox, SandboxError

try:
    import docker
    import docker.errors
except ImportError:  # the optional extra
    docker = None

Workspace = Literal["tmpfs", "image"]

DEFAULT_IMAGE = "python:3.11-slim"
WORKDIR = "/workspace"
USER = "65534:65534"
ROOT = "0:0"
MAIN_USER = "65533:65533"
"""The container's own processes: a uid no command runs as, so a command's ``kill -9 -1`` (and
the cleanup after it) cannot reach them."""
LABEL = "agentenv.sandbox.owner"
ENV = {"LANG": "C.UTF-8", "PAGER": "cat", "PIP_PROGRESS_BAR": "off"}
MAIN = ["sh", "-c", "cat > /dev/null"]
"""The container's main process: it waits until the engine closes its stdin."""


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


def container_config(
    image: str,
    workdir: str,
    env: Mapping[str, str],
    limits: Limits,
    *,
    owner: int,
    volume: str | None = None,
) -> dict[str, Any]:
    """The keyword arguments of ``client.containers.create`` for one sandbox container.

    ``volume``: ``None`` for a tmpfs workspace at ``workdir``, else the named volume to mount
    there (read-write). ``owner`` is the pid the container's label names (the orphan cleanup
    removes containers whose owner is gone). Mounts and ulimits are the Engine API's plain
    dicts, so this needs no SDK.
    """
    tmpfs = {"/tmp": f"size={limits.tmp_size},mode=1777"}
    tmpfs["/dev/shm"] = tmpfs["/tmp"]
    mounts: dict[str, Any] = {}
    if volume is None:
        tmpfs[workdir] = f"size={limits.disk},mode=1777"
    else:
        mount = {"Type": "volume", "Source": volume, "Target": workdir, "ReadOnly": False}
        mounts["mounts"] = [mount]
    rlimits = {"cpu": limits.cpu_seconds, "fsize": limits.file_size, "nofile": limits.open_files}
    return {
        "image": image,
        "command": MAIN,
        "user": MAIN_USER,
        "working_dir": workdir,
        "environment": dict(env),
        "labels": {LABEL: str(owner)},
        "stdin_open": True,  # not detached: the SDK sets StdinOnce too
        "init": True,
        "network_disabled": True,
        "mem_limit": limits.address_space,
        "memswap_limit": limits.address_space,
        "pids_limit": limits.processes,
        "read_only": True,
        "tmpfs": tmpfs,
        **mounts,
        "cap_drop": ["ALL"],
        "security_opt": ["no-new-privileges"],
        "ulimits": [{"name": k, "soft": v, "hard": v} for k, v in rlimits.items()],
    }


class DockerSandbox(Sandbox, backend="docker"):
    """A container of ``image`` (it needs ``bash``, ``timeout``, ``kill`` and ``mkdir``).

    ``workdir`` (``/workspace``) is where commands see the workspace; ``workspace`` says what it
    is: ``"tmpfs"`` (a fresh one, commands as ``nobody``) or ``"image"`` (the image's own content
    at ``workdir`` on a volume of this sandbox, commands as uid 0 without capabilities); see the
    module docstring.
    """

    engine = "docker"

    def __init__(
        self,
        limits: Limits,
        *,
        image: str = DEFAULT_IMAGE,
        env: Mapping[str, str] | None = None,
        workdir: str = WORKDIR,
        workspace: Workspace = "tmpfs",
    ) -> None:
        super().__init__(limits)
        if not PurePosixPath(workdir).is_absolute() or workdir == "/":
            raise ValueError(f"workdir must be an absolute path below /, got {workdir!r}")
        if workspace not in ("tmpfs", "image"):
            raise ValueError(f"workspace must be 'tmpfs' or 'image', got {workspace!r}")
        self.image = image
        self.workspace = workspace
        self._workdir = workdir
        home = workdir if workspace == "tmpfs" else "/tmp"
        self.env = {"HOME": home, **ENV, **(env or {})}
        self.user = USER if workspace == "tmpfs" else ROOT
        self._client: Any = None
        self._container: Any = None
        self._volume: Any = None
        self._stdin: Any = None

    @property
    def workdir(self) -> str:
        return self._workdir

    async def _start(self) -> None:
        self._client = await asyncio.to_thread(engine_client, self.engine)
        try:
            await asyncio.to_thread(self._remove_orphans)
            if self.workspace == "image":
                self._volume = await asyncio.to_thread(self._create_volume)
            self._container = await asyncio.to_thread(self._create_container)
        except BaseException:
            await asyncio.to_thread(self._remove_volume)
            self._client.close()
            raise

    def _create_volume(self) -> Any:
        name = f"agentenv-sb-{os.getpid()}-{secrets.token_hex(6)}"
        return self._client.volumes.create(name=name, labels={LABEL: str(os.getpid())})

    def _create_container(self) -> Any:
        volume = self._volume.name if self._volume is not None else None
        config = container_config(
            self.image, self.workdir, self.env, self.limits, owner=os.getpid(), volume=volume
        )
        container = self._client.containers.create(**config)
        try:
            params = {"stdin": 1, "stream": 1}
            self._stdin = self._client.api.attach_socket(container.id, params=params)
            container.start()
        except BaseException:
            container.remove(force=True)
            raise
        return container

    def _remove_orphans(self) -> None:
        """Remove the sandbox containers, then volumes, of processes of this host that died."""
        for container in self._client.containers.list(all=True, filters={"label": LABEL}):
            if _orphaned(container.labels):
                container.remove(force=True)
        for volume in self._client.volumes.list(filters={"label": LABEL}):
            if _orphaned(volume.attrs.get("Labels") or {}):
                volume.remove(force=True)

    def _remove_volume(self) -> None:
        if self._volume is not None:
            self._volume.remove(force=True)
            self._volume = None

    async def _close(self) -> None:
        await asyncio.to_thread(self._container.remove, force=True)
        await asyncio.to_thread(self._remove_volume)
        self._stdin.close()
        self._client.close()

    async def _run(self, command: str, timeout: float) -> RunResult:
        return await asyncio.to_thread(self._exec, command, timeout)

    def _exec(self, command: str, timeout: float) -> RunResult:
        start = time.perf_counter()
        api = self._client.api
        argv = ["timeout", "-s", "KILL", f"{timeout:.3f}", "bash", "-c", command]
        created = api.exec_create(self._container.id, argv, user=self.user, workdir=self.workdir)
        capture = OutputCapture(self.limits.max_output)
        for chunk in api.exec_start(created["Id"], stream=True):
            capture.feed(chunk)
        code = api.exec_inspect(created["Id"])["ExitCode"]
        self._container.exec_run(["sh", "-c", "kill -9 -1"], user=self.user)  # what it left
        seconds = time.perf_counter() - start
        output, truncated = capture.result()
        return RunResult(code, output, truncated, code == 137 and seconds >= timeout, seconds)

    def _uid(self) -> int:
        """The owner of the files the host writes in: the commands' user."""
        return int(self.user.split(":")[0])

    async def _write(self, path: PurePosixPath, data: bytes) -> None:
        await asyncio.to_thread(self._put, path, _tar_bytes(path.name, data, self._uid()))

    def _put(self, path: PurePosixPath, archive: bytes) -> None:
        parent = str(PurePosixPath(self.workdir) / path.parent)
        self._container.exec_run(["mkdir", "-p", parent], user=self.user)
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
            stream, _ = self._container.get_archive(str(PurePosixPath(self.workdir) / path))
        except docker.errors.NotFound:
            raise FileNotFoundError(f"no file {str(path)!r} in the sandbox") from None
        return b"".join(stream)

    async def _copy_in(self, host_path: Path, path: PurePosixPath) -> None:
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w") as tar:
            owned = functools.partial(_owned, uid=self._uid())
            tar.add(host_path, arcname=path.name or ".", filter=owned)
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


def _orphaned(labels: Mapping[str, str]) -> bool:
    """Whether the owner pid in ``labels`` names no live process of this host."""
    pid = labels.get(LABEL, "")
    return pid.isdigit() and not Path(f"/proc/{pid}").exists()


def _tar_bytes(name: str, data: bytes, uid: int) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        info = tarfile.TarInfo(name)
        info.size, info.mode, info.uid, info.gid = len(data), 0o644, uid, uid
        tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def _owned(info: tarfile.TarInfo, *, uid: int) -> tarfile.TarInfo:
    info.uid = info.gid = uid
    info.uname = info.gname = ""
    return info
