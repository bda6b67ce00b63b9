"""Launched services: a service app in a uvicorn subprocess on 127.0.0.1, pools of them (one
server per (factory, config), scoped to a run), and :func:`connect`, which gives an env its client
in any of the three modes of :mod:`agentenv.service`.

- :class:`LocalServer` binds the listening socket itself and hands it to the child, health-waits
  it, stops it cleanly and has it killed with its parent (PR_SET_PDEATHSIG), so it never outlives
  the process; :meth:`LocalServer.astart` starts it without blocking the event loop.
- :class:`ServicePool` owns the servers of one run: the pool :func:`service_scope` opened, else
  the process's own (stopped at interpreter exit). Concurrent first callers for one key await
  the same start.
- :func:`serve` runs an app in the foreground (``agentenv serve NAME``; the child's entry point).
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import contextlib
import ctypes
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextvars import ContextVar
from typing import Any

import httpx
import uvicorn

from agentenv.retry import RetryPolicy
from agentenv.service import (
    BREAKERS,
    EnvServiceError,
    ServiceClient,
    build_served_app,
    config_key,
    shared_app,
    tls_context,
)


async def connect(
    factory: str,
    service: str | Sequence[str] | None = None,
    *,
    config: dict[str, Any] | None = None,
    retry: RetryPolicy | None = None,
    pool: ServicePool | None = None,
) -> ServiceClient:
    """A client for the service built by ``factory``, in the mode ``service`` selects.

    ``service`` is ``None`` or ``"in-process"`` (the embedded app, shared by every env of the same
    config), ``"local"`` (the uvicorn subprocess on 127.0.0.1 that ``pool``, by default
    :func:`current_pool`, runs for this (factory, config); closing the client leaves it to the
    pool), or one or more base URLs (a comma-separated string or a list), used round-robin.
    """
    if service is None or service == "in-process":
        return ServiceClient.in_process(shared_app(factory, config), retry=retry)
    if service == "local":
        server = await (pool or current_pool()).server(factory, config)
        return ServiceClient.remote([server.url], retry=retry)
    return ServiceClient.remote(service, retry=retry)


# ---------------------------------------------------------------------------------------------
# Local subprocess launcher
# ---------------------------------------------------------------------------------------------
_LAUNCHER = ThreadPoolExecutor(max_workers=1, thread_name_prefix="agentenv-launcher")
"""Every server is spawned from this one thread. Linux sends PR_SET_PDEATHSIG when the *thread*
that forked a child ends, so the forking thread must live as long as the process: not a worker
of an event loop that an env may close, nor the thread of a sync env's private loop."""


class LocalServer:
    """A service app in a uvicorn subprocess on ``host`` (127.0.0.1) and a free port.

    The parent binds the listening socket itself and hands the descriptor to the child, so the
    port cannot be taken in between. :meth:`start` (blocking) and :meth:`astart` (async) return
    once ``/health`` answers. The child dies with this process (PR_SET_PDEATHSIG).
    """

    def __init__(
        self,
        factory: str,
        config: dict[str, Any] | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        startup_timeout: float = 120.0,
    ) -> None:
        self.factory = factory
        self.config = dict(config or {})
        self.host = host
        self.port = port
        self.startup_timeout = startup_timeout
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def _spawn(self) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self.port))
        sock.listen(2048)
        self.port = sock.getsockname()[1]
        BREAKERS.forget(self.url)
        cmd = [
            sys.executable, "-c", "from agentenv.launch import main; main()", self.factory,
            "--fd", str(sock.fileno()), "--config", json.dumps(self.config, default=str),
            "--parent-pid", str(os.getpid()),
        ]  # fmt: skip
        try:
            self.process = subprocess.Popen(cmd, pass_fds=(sock.fileno(),))
        finally:
            sock.close()

    def start(self) -> LocalServer:
        """Spawn the server and block until it is healthy."""
        _LAUNCHER.submit(self._spawn).result()
        deadline = time.monotonic() + self.startup_timeout
        while not self._healthy_sync():
            self._check_starting(deadline)
            time.sleep(0.05)
        return self

    async def astart(self) -> LocalServer:
        """Spawn the server and wait until it is healthy, without blocking the event loop."""
        await asyncio.wrap_future(_LAUNCHER.submit(self._spawn))
        deadline = time.monotonic() + self.startup_timeout
        try:
            async with httpx.AsyncClient(timeout=1.0, verify=tls_context()) as probe:
                while not await self._healthy(probe):
                    self._check_starting(deadline)
                    await asyncio.sleep(0.05)
        except BaseException:
            self.kill()
            raise
        return self

    def _healthy_sync(self) -> bool:
        try:
            return (
                httpx.get(f"{self.url}/health", timeout=1.0, verify=tls_context()).status_code
                == 200
            )
        except httpx.TransportError:
            return False

    async def _healthy(self, probe: httpx.AsyncClient) -> bool:
        try:
            return (await probe.get(f"{self.url}/health")).status_code == 200
        except httpx.TransportError:
            return False

    def _check_starting(self, deadline: float) -> None:
        """Raise if the child exited, or (killing it) if it missed the start-up deadline."""
        if self.process is not None and self.process.poll() is not None:
            raise EnvServiceError(
                f"service {self.factory} exited with code {self.process.returncode} "
                f"before answering at {self.url}",
                url=self.url,
            )
        if time.monotonic() > deadline:
            self.kill()
            raise EnvServiceError(
                f"service {self.factory} did not answer {self.url}/health within "
                f"{self.startup_timeout:g}s",
                url=self.url,
            )

    def _terminate(self) -> bool:
        """SIGTERM (and SIGCONT, so a stopped child gets it); False if it was not running."""
        if not self.alive:
            return False
        assert self.process is not None
        self.process.terminate()
        self.process.send_signal(signal.SIGCONT)
        return True

    def kill(self) -> None:
        """SIGKILL at once and reap. Idempotent."""
        if self.alive:
            assert self.process is not None
            self.process.kill()
            self.process.wait()

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM, wait up to ``timeout`` seconds, then SIGKILL. Idempotent."""
        if self._terminate():
            assert self.process is not None
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()

    async def astop(self, timeout: float = 10.0) -> None:
        """:meth:`stop` without blocking the event loop."""
        if self._terminate():
            deadline = time.monotonic() + timeout
            while self.alive and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
            self.kill()

    def __enter__(self) -> LocalServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# ---------------------------------------------------------------------------------------------
# Pools: one launched server per (factory, config)
# ---------------------------------------------------------------------------------------------
class ServicePool:
    """The local servers launched for a run: one per (factory, config), shared, stopped together.

    :meth:`server` starts a server on first use of a key (concurrent first callers, from any
    event loop, await the same start) and relaunches one whose process has died. :meth:`aclose`
    (or leaving ``async with``) stops them all. Thread-safe.
    """

    def __init__(self, *, startup_timeout: float = 120.0) -> None:
        self.startup_timeout = startup_timeout
        self._starts: dict[tuple[str, str], Future[LocalServer | None]] = {}
        self._lock = threading.Lock()

    @property
    def servers(self) -> list[LocalServer]:
        """The servers started and still owned by this pool."""
        with self._lock:
            starts = list(self._starts.values())
        return [s for f in starts if f.done() and not f.exception() and (s := f.result())]

    async def server(self, factory: str, config: dict[str, Any] | None = None) -> LocalServer:
        """The running server of ``(factory, config)``, started if there is none."""
        key = (factory, config_key(config))
        while True:
            future, owner = self._claim(key)
            if owner:
                return await self._launch(key, future, factory, config)
            server = await asyncio.wrap_future(future)  # a failed start raises its error here
            if server is not None and server.alive:
                return server
            self._discard(key, future)  # died, or its starter was cancelled: start anew

    def _claim(self, key: tuple[str, str]) -> tuple[Future[LocalServer | None], bool]:
        with self._lock:
            if key in self._starts:
                return self._starts[key], False
            future: Future[LocalServer | None] = Future()
            future.set_running_or_notify_cancel()  # a cancelled waiter must not cancel the start
            self._starts[key] = future
            return future, True

    def _discard(self, key: tuple[str, str], future: Future[LocalServer | None]) -> None:
        with self._lock:
            if self._starts.get(key) is future:
                del self._starts[key]

    async def _launch(
        self,
        key: tuple[str, str],
        future: Future[LocalServer | None],
        factory: str,
        config: dict[str, Any] | None,
    ) -> LocalServer:
        server = LocalServer(factory, config, startup_timeout=self.startup_timeout)
        try:
            await server.astart()
        except Exception as exc:
            self._discard(key, future)
            future.set_exception(exc)
            raise
        except BaseException:
            self._discard(key, future)
            future.set_result(None)
            raise
        future.set_result(server)
        if self._starts.get(key) is not future:
            await server.astop()
            raise EnvServiceError(f"the service pool closed while {factory} started", server.url)
        return server

    def _take_all(self) -> list[LocalServer]:
        servers = self.servers
        with self._lock:
            self._starts.clear()
        return servers

    async def aclose(self) -> None:
        """Stop every server of the pool (SIGTERM, then SIGKILL after 10 s)."""
        await asyncio.gather(*(s.astop() for s in self._take_all()))

    def close(self) -> None:
        """:meth:`aclose` for sync callers and interpreter exit; never raises."""
        for server in self._take_all():
            with contextlib.suppress(OSError):
                server.stop()

    async def __aenter__(self) -> ServicePool:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


_PROCESS_POOL = ServicePool()
atexit.register(_PROCESS_POOL.close)
_SCOPE: ContextVar[ServicePool | None] = ContextVar("agentenv_service_scope", default=None)


def current_pool() -> ServicePool:
    """The pool of the innermost :func:`service_scope`, else the process's (stopped at exit)."""
    return _SCOPE.get() or _PROCESS_POOL


@contextlib.asynccontextmanager
async def service_scope(pool: ServicePool | None = None) -> AsyncIterator[ServicePool]:
    """Run a block (a rollout, an eval, a training run) with its own :class:`ServicePool`.

    Every ``service="local"`` env connected inside the block, in this task or tasks it starts,
    shares one server per (factory, config); leaving the block stops them all. Sync envs run
    their coroutines on a private loop thread, outside the scope: they use the process pool.
    """
    pool = pool or ServicePool()
    token = _SCOPE.set(pool)
    try:
        yield pool
    finally:
        _SCOPE.reset(token)
        await pool.aclose()


# ---------------------------------------------------------------------------------------------
# Server process
# ---------------------------------------------------------------------------------------------
def _die_with_parent(parent_pid: int) -> None:
    """Ask Linux to SIGTERM this process when its parent's launcher thread ends (no orphans);
    exit now if the parent already died before the request took effect."""
    with contextlib.suppress(OSError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    if os.getppid() != parent_pid:
        sys.exit(1)


def serve(
    factory: str,
    config: dict[str, Any] | None = None,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    fd: int | None = None,
    log_level: str = "warning",
) -> None:
    """Serve the app of ``factory`` with uvicorn in this process until interrupted."""
    app = build_served_app(factory, config)
    if fd is None:
        uvicorn.run(app, host=host, port=port, log_level=log_level)
        return
    # uvicorn's own ``fd=`` treats the descriptor as a Unix socket and leaves Nagle's algorithm
    # on (~40 ms per small response); hand it over as the TCP socket it is.
    sock = socket.socket(fileno=fd)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    uvicorn.Server(uvicorn.Config(app, log_level=log_level)).run(sockets=[sock])


def main() -> None:
    parser = argparse.ArgumentParser(
        description="Run an agentenv service app (used by LocalServer)"
    )
    parser.add_argument("factory")
    parser.add_argument("--fd", type=int, default=None)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--config", default="{}")
    parser.add_argument("--parent-pid", type=int, default=None)
    args = parser.parse_args()
    if args.parent_pid is not None:
        _die_with_parent(args.parent_pid)
    serve(args.factory, json.loads(args.config), host=args.host, port=args.port, fd=args.fd)
