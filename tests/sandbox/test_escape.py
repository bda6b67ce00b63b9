"""The escape suite: every isolating backend must pass all of it.

Each test also runs on ``unsafe-local`` as a strict xfail: there the escape succeeds, so the
test is shown to fail when a backend does not block it (an XPASS would fail the suite). The
bombs are small and bounded (a hundred forks, half a GiB, 48 MiB per folder, a few seconds of
CPU), so even the unsandboxed runs stay light; heartbeats end by themselves after ~5 s.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import sys
import tempfile
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from agentenv.sandbox import MiB, Sandbox, remove_orphans
from agentenv.sandbox.docker import engine_client
from tests.sandbox.support import ENGINES, ISOLATING, UNSAFE_LOCAL, make, py

pytestmark = pytest.mark.parametrize("backend", [*ISOLATING, UNSAFE_LOCAL])

REPO = Path(__file__).resolve().parents[2]
LIMITS = {
    "address_space": 256 * MiB,
    "cpu_seconds": 1,
    "file_size": 8 * MiB,
    "processes": 24,
    "disk": 32 * MiB,
    "tmp_size": 16 * MiB,
    "timeout": 30.0,
}
BEAT = "for i in $(seq 100); do echo $i > {path}; sleep 0.05; done"
"""A heartbeat of ~5 s: it ends by itself, so an escaped one does not outlive the test long."""


@pytest.fixture
async def sb(backend: str, root: Path) -> AsyncIterator[Sandbox]:
    async with make(backend, root, **LIMITS) as sandbox:
        yield sandbox


async def stopped(sb: Sandbox, name: str) -> bool:
    """Whether the heartbeat file ``name`` stays the same for a second."""
    first = await _read(sb, name)
    await asyncio.sleep(1.0)
    return await _read(sb, name) == first


async def _read(sb: Sandbox, name: str) -> str:
    try:
        return await sb.read_file(name)
    except FileNotFoundError:
        return ""


def tag() -> str:
    return f"agentenv-escape-{uuid.uuid4().hex[:8]}"


# -- network ---------------------------------------------------------------------------------
async def test_cannot_reach_host_servers(sb: Sandbox, tmp_path: Path) -> None:
    """A TCP server on the host's 127.0.0.1, an abstract and a path unix socket: none answer."""
    accepted: list[str] = []

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append("x")
        writer.close()

    tcp = await asyncio.start_server(on_connect, "127.0.0.1", 0)
    port = tcp.sockets[0].getsockname()[1]
    abstract = f"\0{tag()}"
    unix_abstract = await asyncio.start_unix_server(on_connect, abstract)
    folder = Path(tempfile.mkdtemp(prefix="agentenv-escape-"))
    folder.chmod(0o777)
    path = str(folder / "sock")
    unix_path = await asyncio.start_unix_server(on_connect, path)
    os.chmod(path, 0o777)
    code = f"""
import socket
targets = [("tcp", socket.AF_INET, ("127.0.0.1", {port})),
           ("abstract", socket.AF_UNIX, {abstract!r}), ("path", socket.AF_UNIX, {path!r})]
for name, family, address in targets:
    s = socket.socket(family)
    s.settimeout(3)
    try:
        s.connect(address)
        print("OPEN", name)
    except OSError as e:
        print("closed", name, e)
print("DONE")
"""
    try:
        result = await sb.run(py(code))
    finally:
        for server in (tcp, unix_abstract, unix_path):
            server.close()
        shutil.rmtree(folder, ignore_errors=True)
    assert "DONE" in result.output, result.output
    assert "OPEN" not in result.output and not accepted, result.output


# -- filesystem ------------------------------------------------------------------------------
async def test_cannot_write_outside_workspace(sb: Sandbox) -> None:
    """The host's home, the checkout, the venv, the host /tmp, / and the workspace's parent."""
    name = tag()
    targets = [Path.home(), REPO, Path(sys.prefix), Path(tempfile.gettempdir()), Path("/")]
    host_paths = [t / name for t in targets]
    inside = [str(p) for p in host_paths] + [f"../{name}"]
    if hasattr(sb, "host_path"):
        host_paths.append(sb.host_path.parent / name)
    code = f"""
for path in {inside!r}:
    try:
        open(path, "w").write("escaped")
        print("WROTE", path)
    except OSError as e:
        print("refused", path, e.strerror)
print("DONE")
"""
    try:
        result = await sb.run(py(code))
        leaked = [str(p) for p in host_paths if p.exists()]
    finally:
        for path in host_paths:
            path.unlink(missing_ok=True)
    assert "DONE" in result.output, result.output
    assert leaked == [], result.output


async def test_cannot_read_host_files(sb: Sandbox) -> None:
    """A file in the host's home and /tmp, the checkout's pyproject.toml, /etc/shadow."""
    secrets = []
    for folder in (Path.home(), Path(tempfile.gettempdir())):
        path = folder / tag()
        path.write_text("secret")
        path.chmod(0o644)
        secrets.append(path)
    paths = [str(p) for p in (*secrets, REPO / "pyproject.toml", Path("/etc/shadow"))]
    code = f"""
for path in {paths!r}:
    try:
        open(path).read()
        print("READ", path)
    except OSError as e:
        print("hidden", path, e.strerror)
print("DONE")
"""
    try:
        result = await sb.run(py(code))
    finally:
        for path in secrets:
            path.unlink()
    assert "DONE" in result.output, result.output
    assert "READ" not in result.output, result.output


async def test_runs_without_privileges(sb: Sandbox) -> None:
    """Not root, no capabilities (as root on the host: a uid of its own)."""
    if os.geteuid() != 0 and sb.backend == "unsafe-local":
        pytest.skip(reason="the host user is unprivileged already")
    result = await sb.run("id -u; grep -E '^Cap(Eff|Prm|Bnd)' /proc/self/status")
    uid, *caps = result.output.split("\n")
    assert result.returncode == 0, result.output
    assert int(uid) != 0, result.output
    assert all(line.split()[1] == "0000000000000000" for line in caps if line), result.output


# -- resources -------------------------------------------------------------------------------
async def test_fork_bomb_is_capped(sb: Sandbox) -> None:
    """A hundred forks stop at ``processes`` (24)."""
    code = """
import os, time
n = 0
for _ in range(100):
    try:
        pid = os.fork()
    except OSError:
        break
    if pid == 0:
        time.sleep(30)
        os._exit(0)
    n += 1
print("forked", n, flush=True)
"""
    result = await sb.run(py(code))
    match = re.search(r"forked (\d+)", result.output)
    assert match, result.output
    assert int(match.group(1)) < LIMITS["processes"], result.output


async def test_memory_bomb_is_capped(sb: Sandbox) -> None:
    """Filling 512 MiB with a 256 MiB cap fails."""
    result = await sb.run(py('b = b"x" * (512 << 20)\nprint("ALLOCATED", len(b))'))
    assert "ALLOCATED" not in result.output, result.output
    assert result.returncode != 0, result.output


async def test_disk_fill_is_capped(sb: Sandbox) -> None:
    """Writing 48 MiB into the workspace, /tmp and /dev/shm, and one 16 MiB file: each stops at
    its cap (workspace 32 MiB, tmpfs 16 MiB, file 8 MiB)."""
    folder = f"/tmp/{tag()}"  # on unsafe-local this is the host's /tmp: removed below
    code = f"""
import os
def fill(folder, total, per_file):
    os.makedirs(folder, exist_ok=True)
    written, chunk = 0, b"x" * (1 << 20)
    try:
        while written < total:
            with open(os.path.join(folder, f"f{{written}}"), "wb") as f:
                for _ in range(per_file):
                    f.write(chunk)
                    f.flush()
                    written += len(chunk)
    except OSError as e:
        pass
    return written
print("ws", fill("fill", 48 << 20, 4))
print("tmp", fill({folder!r}, 48 << 20, 4))
print("shm", fill("/dev/shm/{tag()}", 48 << 20, 4))
print("big", fill("big", 16 << 20, 16))
"""
    try:
        result = await sb.run(py(code))
    finally:
        shutil.rmtree(folder, ignore_errors=True)
        for leftover in Path("/dev/shm").glob("agentenv-escape-*"):
            shutil.rmtree(leftover, ignore_errors=True)
    written = dict(re.findall(r"^(ws|tmp|shm|big) (\d+)$", result.output, re.M))
    assert set(written) == {"ws", "tmp", "shm", "big"}, result.output
    assert int(written["ws"]) <= LIMITS["disk"], result.output
    assert int(written["tmp"]) <= LIMITS["tmp_size"], result.output
    assert int(written["shm"]) <= LIMITS["tmp_size"], result.output
    assert int(written["big"]) <= LIMITS["file_size"], result.output


async def test_runaway_cpu_is_killed(sb: Sandbox) -> None:
    """A busy loop dies at ``cpu_seconds`` (1 s of CPU), long before the wall timeout."""
    result = await sb.run("while :; do :; done", timeout=8)
    assert not result.timed_out, result
    assert result.returncode in (128 + signal.SIGKILL, 128 + signal.SIGXCPU), result


# -- processes -------------------------------------------------------------------------------
async def test_nothing_runs_past_the_timeout(sb: Sandbox) -> None:
    """A command that ignores SIGTERM and starts a heartbeat in a new session: after the
    timeout, the heartbeat has stopped too."""
    beat = BEAT.format(path="beat")
    command = f"echo 0 > beat; setsid bash -c 'trap \"\" TERM HUP; {beat}' & trap '' TERM; sleep 60"
    result = await sb.run(command, timeout=1.5)
    assert result.timed_out, result
    assert await stopped(sb, "beat")


async def test_orphans_do_not_survive_the_command(sb: Sandbox) -> None:
    """A heartbeat left behind in its own session (setsid, nohup, no pipe held) stops when the
    command returns."""
    beat = BEAT.format(path="orphan")
    started = 'until [ "$(cat orphan)" != 0 ]; do sleep 0.01; done'  # it left the group
    command = f"echo 0 > orphan; setsid nohup bash -c '{beat}' >/dev/null 2>&1 & {started}"
    result = await sb.run(command)
    assert result.returncode == 0 and not result.timed_out, result
    assert await stopped(sb, "orphan")


HELPER = """
import asyncio, json, os, sys
from agentenv.sandbox import Limits, Sandbox
async def main():
    backend, root = sys.argv[1], sys.argv[2]
    options = {} if backend in ("docker", "podman") else {"root": root}
    sb = await Sandbox.create(backend, limits=Limits(timeout=60), **options).start()
    print(json.dumps({"host": str(getattr(sb, "host_path", "")),
                      "container": getattr(getattr(sb, "_container", None), "id", "")}), flush=True)
    await sb.run("for i in $(seq 100); do echo $i > beat; sleep 0.05; done")
asyncio.run(main())
"""


async def test_killing_the_parent_kills_the_sandbox(backend: str, root: Path) -> None:
    """SIGKILL the process that owns a running sandbox: the sandbox's heartbeat stops, and the
    next cleanup removes (and unmounts) its workspace."""
    helper = await asyncio.create_subprocess_exec(
        sys.executable, "-c", HELPER, backend, str(root), stdout=asyncio.subprocess.PIPE
    )
    try:
        info = json.loads(await asyncio.wait_for(helper.stdout.readline(), 60))
        if backend in ENGINES:
            return await _engine_stopped(backend, info["container"], helper)
        beat = Path(info["host"]) / "beat"
        for _ in range(200):
            if beat.exists():
                break
            await asyncio.sleep(0.05)
        assert beat.exists(), "the heartbeat never started"
        helper.kill()
        await helper.communicate()
        first = beat.read_text()
        await asyncio.sleep(1.0)
        assert beat.read_text() == first, "the sandbox outlived its parent"
    finally:
        if helper.returncode is None:
            helper.kill()
            await helper.communicate()
    removed = remove_orphans(root)
    assert Path(info["host"]).parent in removed
    assert not Path(info["host"]).exists()
    assert info["host"] not in Path("/proc/self/mountinfo").read_text()


async def _engine_stopped(
    backend: str, container_id: str, helper: asyncio.subprocess.Process
) -> None:
    client = engine_client(backend)
    await asyncio.sleep(1.0)
    helper.kill()
    await helper.communicate()
    container = client.containers.get(container_id)
    for _ in range(100):
        container.reload()
        if container.status != "running":
            break
        await asyncio.sleep(0.1)
    try:
        assert container.status != "running", "the container outlived its parent"
    finally:
        container.remove(force=True)
        client.close()
