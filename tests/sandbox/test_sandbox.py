"""The Sandbox API: runs, files, copies, the output cap, timeouts, cleanup (bwrap, unsafe-local)."""

from __future__ import annotations

import asyncio
import os
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from agentenv.sandbox import (
    Limits,
    Sandbox,
    SandboxError,
    SandboxPathError,
    backends,
    remove_orphans,
)
from agentenv.sandbox.base import OutputCapture, exit_status, truncate
from tests.sandbox.support import make, py, sandbox_pids

BOTH = pytest.mark.parametrize("backend", ["bwrap", "unsafe-local"])
BEAT = "for i in $(seq 100); do echo $i > beat; sleep 0.05; done"


@pytest.fixture
async def sb(root: Path) -> AsyncIterator[Sandbox]:
    async with make("bwrap", root, timeout=30.0) as sandbox:
        yield sandbox


async def beat_stopped(path: Path) -> bool:
    first = path.read_text() if path.exists() else ""
    await asyncio.sleep(1.0)
    return (path.read_text() if path.exists() else "") == first


# -- running ---------------------------------------------------------------------------------
@BOTH
async def test_run_returns_code_and_combined_output(backend: str, root: Path) -> None:
    async with make(backend, root) as sb:
        result = await sb.run("echo out; echo err >&2; exit 3")
    assert (result.returncode, result.output) == (3, "out\nerr\n")
    assert not result.truncated and not result.timed_out and result.seconds > 0


async def test_commands_see_a_minimal_environment(sb: Sandbox) -> None:
    result = await sb.run("env; pwd")
    env = dict(line.split("=", 1) for line in result.output.splitlines() if "=" in line)
    assert env["HOME"] == sb.workdir == "/workspace"
    assert result.output.splitlines()[-1] == "/workspace"
    assert not set(env) & (set(os.environ) - {"PATH", "HOME", "LANG", "PWD", "SHLVL", "_"})


async def test_python_and_pytest_run_inside(sb: Sandbox) -> None:
    await sb.write_file("test_ok.py", "def test_ok():\n    assert 1 + 1 == 2\n")
    result = await sb.run("python -m pytest -q -p no:cacheprovider test_ok.py")
    assert result.returncode == 0, result.output
    assert "1 passed" in result.output


async def test_sandboxes_have_their_own_uid_and_workspace(root: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip(reason="without root, every sandbox runs as the current user")
    async with make("bwrap", root) as a, make("bwrap", root) as b:
        await a.write_file("mine", "a")
        ids = [(await s.run("id -u; ls")).output for s in (a, b)]
    assert ids[0].split()[0] != ids[1].split()[0]
    assert ids[0].split()[1:] == ["mine"] and ids[1].split()[1:] == []


# -- files -----------------------------------------------------------------------------------
@BOTH
async def test_write_and_read_files(backend: str, root: Path) -> None:
    async with make(backend, root) as sb:
        await sb.write_file("a/b/c.txt", "héllo")
        await sb.write_file(f"{sb.workdir}/d.bin", b"\x00\x01")
        assert await sb.read_file("a/b/c.txt") == "héllo"
        assert await sb.read_bytes("d.bin") == b"\x00\x01"
        result = await sb.run("cat a/b/c.txt; echo more >> a/b/c.txt")
        assert result.output == "héllo" and result.returncode == 0
        assert await sb.read_file("a/b/c.txt") == "héllomore\n"
        with pytest.raises(FileNotFoundError):
            await sb.read_file("missing")


@pytest.mark.parametrize("path", ["../x", "a/../../x", "/etc/passwd", "/workspace/../x", "."])
async def test_paths_outside_the_workspace_are_refused(sb: Sandbox, path: str) -> None:
    with pytest.raises(SandboxPathError):
        await sb.write_file(path, "x")
    with pytest.raises(SandboxPathError):
        await sb.read_file(path)


async def test_symlinks_made_inside_cannot_lead_the_host_out(sb: Sandbox, tmp_path: Path) -> None:
    """The sandbox plants symlinks to host paths; host-side file operations refuse them."""
    outside = tmp_path / "host"
    outside.mkdir()
    (outside / "secret").write_text("secret")
    await sb.run(f"ln -s {outside}/secret file; ln -s {outside} folder; mkfifo fifo")
    for path in ("file", "folder/secret"):
        with pytest.raises(SandboxPathError):
            await sb.read_file(path)
    for path in ("file", "folder/new"):
        with pytest.raises(SandboxPathError):
            await sb.write_file(path, "x")
    with pytest.raises(SandboxPathError):
        await sb.copy_in(tmp_path / "host", "folder")
    with pytest.raises(SandboxPathError):
        await sb.read_file("fifo")  # refused, not blocked on
    assert sorted(p.name for p in outside.iterdir()) == ["secret"]
    assert (outside / "secret").read_text() == "secret"


async def test_copy_in_and_out(sb: Sandbox, tmp_path: Path) -> None:
    src = tmp_path / "repo"
    (src / "pkg").mkdir(parents=True)
    (src / "pkg" / "mod.py").write_text("X = 1\n")
    (src / "link").symlink_to("pkg/mod.py")
    (tmp_path / "single.txt").write_text("one")
    await sb.copy_in(src, ".")
    await sb.copy_in(tmp_path / "single.txt", "extra/single.txt")
    result = await sb.run(
        "cat link extra/single.txt; echo 'Y = 2' >> pkg/mod.py; ln -s /etc/hostname host"
    )
    assert result.output == "X = 1\none" and result.returncode == 0
    out = tmp_path / "out"
    await sb.copy_out(".", out)
    assert (out / "pkg" / "mod.py").read_text() == "X = 1\nY = 2\n"
    assert (out / "link").is_symlink() and os.readlink(out / "link") == "pkg/mod.py"
    assert (out / "host").is_symlink()  # copied as a link, never followed
    await sb.copy_out("extra/single.txt", tmp_path / "single-out.txt")
    assert (tmp_path / "single-out.txt").read_text() == "one"


# -- output cap ------------------------------------------------------------------------------
@BOTH
async def test_long_output_keeps_head_and_tail_with_a_note(backend: str, root: Path) -> None:
    async with make(backend, root, max_output=1000) as sb:
        result = await sb.run("echo START; head -c 50000 /dev/zero | tr '\\0' a; echo; echo END")
        huge = await sb.run("yes | head -c 50000000; echo END")
    assert result.truncated and result.output.startswith("START\naaa")
    assert result.output.endswith("aaa\nEND\n")
    assert "characters in the middle were elided" in result.output
    assert len(result.output) < 1000 + 400
    assert huge.truncated and huge.output.endswith("y\nEND\n") and len(huge.output) < 1400


def test_output_capture_and_truncate() -> None:
    capture = OutputCapture(10)
    for chunk in (b"01234", b"56789"):
        capture.feed(chunk)
    assert capture.result() == ("0123456789", False)
    capture.feed(b"X")
    text, cut = capture.result()
    assert cut and text.startswith("01234") and text.endswith("789X") and "1 characters" in text
    assert truncate("abc", 3) == ("abc", False)
    assert exit_status(-9) == 137 and exit_status(2) == 2


# -- timeouts and processes ------------------------------------------------------------------
@BOTH
async def test_timeout_kills_the_whole_process_group(backend: str, root: Path) -> None:
    async with make(backend, root) as sb:
        result = await sb.run(f"({BEAT}) & sleep 60", timeout=1.0)
        assert result.timed_out and result.returncode == 137
        assert await beat_stopped(sb.host_path / "beat")


async def test_nothing_of_the_sandbox_uid_is_left_after_a_command(sb: Sandbox) -> None:
    if os.geteuid() != 0:
        pytest.skip(reason="sandbox uids exist only when the host runs as root")
    result = await sb.run("setsid nohup sleep 60 >/dev/null 2>&1 & sleep 60 & echo started")
    assert result.output == "started\n"
    assert [pid for pid in sandbox_pids() if _uid(pid) == sb.workspace.uid] == []


def _uid(pid: int) -> int | None:
    try:
        return os.stat(f"/proc/{pid}").st_uid
    except FileNotFoundError:
        return None


async def test_cancelling_a_run_kills_it(sb: Sandbox) -> None:
    task = asyncio.create_task(sb.run(BEAT))
    beat = sb.host_path / "beat"
    for _ in range(200):
        if beat.exists():
            break
        await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await beat_stopped(beat)


# -- lifecycle -------------------------------------------------------------------------------
async def test_destroy_removes_the_workspace_and_its_mount(root: Path) -> None:
    sb = make("bwrap", root)
    with pytest.raises(SandboxError, match="not started"):
        await sb.run("true")
    await sb.start()
    host = sb.host_path
    assert host.is_dir()
    await sb.aclose()
    await sb.aclose()  # idempotent
    assert not host.parent.exists()
    assert str(host) not in Path("/proc/self/mountinfo").read_text()
    with pytest.raises(SandboxError, match="destroyed"):
        await sb.run("true")
    with pytest.raises(SandboxError, match="destroyed"):
        await sb.start()


async def test_stale_workspaces_of_dead_processes_are_removed(root: Path) -> None:
    dead = subprocess.Popen(["true"])
    dead.wait()
    stale = root / "sb-stale"
    (stale / "ws").mkdir(parents=True)
    (stale / "owner").write_text(f"{dead.pid} 1\n")
    async with make("bwrap", root) as live:
        assert remove_orphans(root) == []  # the one above went when this sandbox started
        assert not stale.exists()
        assert live.host_path.exists()


def test_unknown_and_unsafe_backend_names() -> None:
    assert {"bwrap", "docker", "podman", "unsafe-local"} <= set(backends())
    with pytest.raises(SandboxError, match="unsafe-local"):
        Sandbox.create("local")
    with pytest.raises(SandboxError, match="unknown sandbox backend"):
        Sandbox.create("chroot")
    with pytest.raises(ValueError):
        Limits(timeout=0)


async def test_python_cannot_allocate_past_the_address_space(root: Path) -> None:
    async with make("bwrap", root, address_space=512 << 20) as sb:
        small = await sb.run(py("b = bytearray(100 << 20); print('ok')"))
        big = await sb.run(py("b = bytearray(1 << 30)"))
    assert small.output == "ok\n"
    assert "MemoryError" in big.output
