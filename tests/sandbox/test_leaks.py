"""No leaks: 200 sandboxes created, used and destroyed concurrently leave nothing behind.

Measured before, while all are open, while they run (processes) and after: this process's child processes and the host
processes of sandbox uids, mounts (``/proc/self/mountinfo``), folders under the sandbox root and
the temp folder, this process's open fds and threads
(other than the event loop's bounded worker pool). The middle measurement shows the counters
see the sandboxes (so the test can fail); every tenth sandbox runs into its timeout with
background processes, so the kill path is measured too.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import threading
from pathlib import Path

import pytest

from agentenv.sandbox import Sandbox
from tests.sandbox.support import ISOLATING, make, sandbox_pids

COUNT = 200


def children() -> list[int]:
    """pids of this process's children, except Python processes: servers other tests of the
    session keep running (a local tool service, an MCP server) are not the sandboxes'."""
    me, kids = str(os.getpid()), []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                fields = Path(f"/proc/{entry}/stat").read_text().rpartition(")")[2].split()
                argv0 = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")[0].decode()
            except OSError:
                continue
            if fields[1] == me and "python" not in Path(argv0).name:
                kids.append(int(entry))
    return kids


def measure(root: Path) -> dict[str, int]:
    return {
        "processes": measure_processes(),
        "mounts": len(Path("/proc/self/mountinfo").read_text().splitlines()),
        "root_entries": len(list(root.iterdir())) if root.exists() else 0,
        "tmp_entries": len(os.listdir(tempfile.gettempdir())),
        "fds": len(os.listdir("/proc/self/fd")),
        # the loop's default executor keeps up to min(32, cpus + 4) workers: a pool, not a leak
        "threads": sum(not t.name.startswith("asyncio_") for t in threading.enumerate()),
    }


async def use(sb: Sandbox, index: int) -> None:
    await sb.write_file("in.txt", str(index))
    if index % 10 == 0:
        result = await sb.run("sleep 60 & setsid sleep 60 & sleep 60", timeout=0.5)
        assert result.timed_out, result
    else:
        result = await sb.run("cat in.txt")
        assert result.output == str(index), result


async def sample(peak: dict[str, int]) -> None:
    """Record the most processes seen, every 50 ms, until cancelled."""
    while True:
        peak["processes"] = max(peak["processes"], measure_processes())
        await asyncio.sleep(0.05)


def describe(pids: set[int]) -> list[str]:
    """State and command line of each of ``pids`` (what is left over, when something is)."""
    out = []
    for pid in sorted(pids):
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        out.append(f"{pid} {stat.rpartition(')')[2].split()[0]} {cmdline[:120]}")
    return out


def measure_processes() -> int:
    return len(children()) + len(sandbox_pids())


@pytest.mark.parametrize("backend", ISOLATING)
async def test_concurrent_sandboxes_leave_nothing_behind(backend: str, root: Path) -> None:
    count = COUNT if backend == "bwrap" else 20  # a container each: fewer
    async with make(backend, root):  # warm up: thread pools, the root folder
        pass
    await asyncio.sleep(0.2)
    before = measure(root)
    sandboxes = [make(backend, root) for _ in range(count)]
    await asyncio.gather(*(sb.start() for sb in sandboxes))
    during = measure(root)
    peak = {"processes": 0}
    sampler = asyncio.create_task(sample(peak))
    try:
        await asyncio.gather(*(use(sb, i) for i, sb in enumerate(sandboxes)))
    finally:
        sampler.cancel()
        await asyncio.gather(*(sb.aclose() for sb in sandboxes))
    for _ in range(300):  # the child watcher reaps exited processes (slower on a loaded machine)
        after = measure(root)
        if after == before:
            break
        await asyncio.sleep(0.1)
    print(f"\n{backend}: before {before}\n  open {during}\n  running {peak}\n  after {after}")
    assert peak["processes"] > 0  # the commands that run into their timeout were seen
    if backend == "bwrap":
        assert during["root_entries"] == before["root_entries"] + count
        if os.geteuid() == 0:
            assert during["mounts"] == before["mounts"] + count
    assert after == before, describe(set(children()) | set(sandbox_pids()))
