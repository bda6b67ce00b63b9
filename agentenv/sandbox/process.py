"""Running one host command for a sandbox: its own session, a capped output, a wall-clock kill.

The command starts in a new session (its pid is its process group), stdout and stderr share one
pipe read into an :class:`~agentenv.sandbox.base.OutputCapture`, and after ``timeout`` seconds,
when it exits, or when the caller is cancelled, its process group is sent ``SIGKILL``.
A process that left the group and still holds the pipe (possible only without a pid namespace)
is waited for at most :data:`DRAIN_SECONDS` after the command exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Mapping, Sequence

from agentenv.sandbox.base import OutputCapture, RunResult, exit_status

DRAIN_SECONDS = 1.0
"""How long output is still read after the command exited (for what its children print)."""

READ_CHUNK = 1 << 16


async def run_process(
    argv: Sequence[str],
    *,
    env: Mapping[str, str],
    cwd: str | None,
    timeout: float,
    max_output: int,
) -> RunResult:
    """Run ``argv``; see the module docstring for how it is bounded."""
    start = time.perf_counter()
    # Our own pipe, not asyncio's: its wait() would also wait for the pipe to close, which a
    # process that left the group may hold open.
    read_fd, write_fd = os.pipe2(os.O_CLOEXEC)
    os.set_blocking(read_fd, False)  # only our end: the command writes to a blocking pipe
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=write_fd,
            stderr=write_fd,
            env=dict(env),
            cwd=cwd,
            start_new_session=True,
        )
    except BaseException:
        os.close(read_fd)
        raise
    finally:
        os.close(write_fd)
    capture = OutputCapture(max_output)
    reader = asyncio.create_task(_drain(read_fd, capture))
    timed_out = False
    try:
        try:
            await asyncio.wait_for(proc.wait(), timeout)
        except TimeoutError:
            timed_out = True
        kill_group(proc.pid)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(reader), DRAIN_SECONDS)
    finally:
        kill_group(proc.pid)
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reader
        os.close(read_fd)
        await proc.wait()
    output, truncated = capture.result()
    return RunResult(
        exit_status(proc.returncode), output, truncated, timed_out, time.perf_counter() - start
    )


async def _drain(fd: int, capture: OutputCapture) -> None:
    """Feed what the non-blocking pipe ``fd`` carries to ``capture`` until its end."""
    loop = asyncio.get_running_loop()
    ended = loop.create_future()

    def readable() -> None:
        try:
            chunk = os.read(fd, READ_CHUNK)
        except BlockingIOError:
            return
        if chunk:
            capture.feed(chunk)
        elif not ended.done():
            ended.set_result(None)

    loop.add_reader(fd, readable)
    try:
        await ended
    finally:
        loop.remove_reader(fd)


def kill_group(pgid: int) -> None:
    """``SIGKILL`` the process group ``pgid`` (gone already: nothing to do)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)
