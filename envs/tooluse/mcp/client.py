"""MCP servers as tool sets: which server, one bounded connection to it, and the process's pool.

- :func:`server_spec` reads what a user writes for a server: a command (string or list; a
  ``{python}`` first word is this interpreter), an object ``{"command", "args", "env", "cwd"}``,
  a ``module:attribute`` naming a Python server (an ``MCPServer``, a low-level ``Server``, or a
  function returning one) to connect to in-memory, or such a server object itself.
- :class:`McpConnection` is one ``mcp.Client`` session. Every ``initialize``/``list_tools``/
  ``call_tool`` is bounded (``anyio.fail_after`` plus the SDK's ``read_timeout_seconds``): the SDK
  can hang on a dead server. A call that times out is followed by a short liveness probe: if the
  server still answers, the call failed (:class:`ToolError`, for the model to read); if not, or if
  the connection closed, the server is dead (:class:`EnvServiceError`, naming the command and the
  last lines it wrote to stderr). An ``is_error`` result is a :class:`ToolError` with its text.
- :class:`McpPool` owns every connection of the process on one event loop of its own (a daemon
  thread), so envs on different loops share one session per server and a blocked server never
  blocks an env's loop. A stdio server is started on first use, once per process for one
  (command, args, env, cwd), and stopped at interpreter exit (:func:`close_servers` stops them
  sooner). A connection found dead is replaced on the next request for it.

The SDK is ``mcp>=2.3,<3`` (snake_case attributes; 1.x spelt them in camelCase, which
:func:`_field` also reads). A server built on ``mcp<2`` (``mcp-server-sqlite``) runs over stdio
from its own virtualenv: the protocol, not the Python package, is what the client shares with it.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import contextlib
import importlib
import json
import logging
import os
import re
import shlex
import sys
import threading
from collections import deque
from collections.abc import Coroutine, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn, TypeVar

from agentenv.envs.tooluse.base import ToolError
from agentenv.envs.tooluse.schema import Tool
from agentenv.service import EnvServiceError

INSTALL_HINT = "MCP envs need the mcp extra: pip install 'rl-agentenv[mcp]'"
try:
    import anyio
    from mcp import Client, StdioServerParameters
    from mcp.client.stdio import stdio_client
    from mcp.server import Server
    from mcp.server.mcpserver import MCPServer
    from mcp.shared.exceptions import MCPError
except ImportError as exc:  # the optional extra is not installed
    raise ImportError(f"{INSTALL_HINT} ({exc})") from exc

log = logging.getLogger(__name__)
T = TypeVar("T")

CONNECTION_CLOSED = -32000
REQUEST_TIMEOUT = -32001
"""JSON-RPC error codes the SDK raises for a closed connection and a read timeout."""
PYTHON = "{python}"
"""A command's first word that stands for the interpreter running agentenv."""
STDERR_LINES = 20
"""Lines of a stdio server's stderr kept for error messages."""
_TARGET = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")
_DEAD = (anyio.ClosedResourceError, anyio.BrokenResourceError, anyio.EndOfStream, OSError)
_OBJECTS: dict[str, Any] = {}
"""In-memory server objects given directly, by the key their :class:`ServerSpec` carries."""


# ---------------------------------------------------------------------------------------------
# Which server
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ServerSpec:
    """A server to connect to: a stdio ``command`` (with ``env`` and ``cwd``), or an in-memory
    ``target`` (``module:attribute``, or ``object:<key>`` for a server object given directly).
    Hashable and picklable: it is the pool's key."""

    command: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = ()
    cwd: str | None = None
    target: str = ""

    @property
    def transport(self) -> str:
        """``"stdio"`` or ``"memory"``."""
        return "memory" if self.target else "stdio"

    @property
    def label(self) -> str:
        """The server as error messages name it: its command line, or its target."""
        if self.target:
            return f"in-memory {self.target}"
        return shlex.join(self.command)


def server_spec(
    server: Any, *, env: Mapping[str, str] | None = None, cwd: str | None = None
) -> ServerSpec:
    """The :class:`ServerSpec` of ``server`` (see the module docs for the accepted forms);
    ``env`` and ``cwd`` apply to a stdio command."""
    if isinstance(server, ServerSpec):
        return server
    if isinstance(server, Server | MCPServer):
        key = f"object:{id(server):x}"
        _OBJECTS[key] = server
        return ServerSpec(target=key)
    if isinstance(server, str) and _TARGET.match(server.strip()):
        return ServerSpec(target=server.strip())
    if isinstance(server, Mapping):
        return _mapping_spec(server, env, cwd)
    return _command_spec(server, env, cwd)


def _mapping_spec(server: Mapping[str, Any], env: Any, cwd: Any) -> ServerSpec:
    unknown = [k for k in server if k not in ("command", "args", "env", "cwd")]
    if unknown or "command" not in server:
        raise ValueError(
            f"a server object has the keys command, args, env, cwd; got {sorted(server)}"
        )
    command = server["command"]
    words = shlex.split(command) if isinstance(command, str) else list(command)
    args = server.get("args") or []
    merged = {**(server.get("env") or {}), **(env or {})}
    return _command_spec([*words, *args], merged, cwd or server.get("cwd"))


def _command_spec(server: Any, env: Mapping[str, str] | None, cwd: str | None) -> ServerSpec:
    words = shlex.split(server) if isinstance(server, str) else server
    if not isinstance(words, Sequence) or not words or not all(isinstance(w, str) for w in words):
        raise ValueError(
            "server must be a command (string or list of strings), an object with a "
            f"'command', a 'module:attribute' naming a Python MCP server, or a server object; "
            f"got {server!r:.120}"
        )
    words = [sys.executable if i == 0 and w == PYTHON else w for i, w in enumerate(words)]
    env_items = tuple(sorted((str(k), str(v)) for k, v in (env or {}).items()))
    return ServerSpec(command=tuple(words), env=env_items, cwd=None if cwd is None else str(cwd))


def resolve_target(target: str) -> Server[Any] | MCPServer:
    """The server object an in-memory ``target`` names (a function is called once)."""
    if target in _OBJECTS:
        return _OBJECTS[target]
    if target.startswith("object:"):
        raise ValueError(
            f"server {target} was a Python object given in another process; give it as "
            "'module:attribute' to use it here"
        )
    module_name, _, attribute = target.partition(":")
    value: Any = importlib.import_module(module_name)
    for part in attribute.split("."):
        value = getattr(value, part)
    if callable(value) and not isinstance(value, Server | MCPServer):
        value = value()
    if not isinstance(value, Server | MCPServer):
        raise ValueError(
            f"{target} is a {type(value).__name__}, not an MCP server "
            "(mcp.server.mcpserver.MCPServer or mcp.server.Server, or a function returning one)"
        )
    return value


# ---------------------------------------------------------------------------------------------
# Results and tools
# ---------------------------------------------------------------------------------------------
def _field(obj: Any, snake: str, camel: str) -> Any:
    """``obj.snake`` (mcp 2.x), else ``obj.camel`` (mcp 1.x)."""
    return getattr(obj, snake, getattr(obj, camel, None))


def mcp_tool(tool: Any) -> Tool:
    """Our :class:`Tool` of an MCP ``Tool`` (``name``, ``description``, ``input_schema``)."""
    schema = _field(tool, "input_schema", "inputSchema") or {}
    parameters = dict(schema) if schema else {"type": "object", "properties": {}}
    return Tool(tool.name, tool.description or "", parameters)


def content_text(content: Sequence[Any]) -> str:
    """The text of a result's content blocks, joined by newlines (non-text blocks are named)."""
    parts = []
    for block in content:
        text = getattr(block, "text", None)
        resource = getattr(block, "resource", None)
        if text is None and resource is not None:
            text = getattr(resource, "text", None) or f"[resource {resource.uri}]"
        if text is None:
            kind = getattr(block, "type", type(block).__name__)
            mime = _field(block, "mime_type", "mimeType")
            uri = getattr(block, "uri", None)
            text = f"[{kind}{' ' + mime if mime else ''}{' ' + str(uri) if uri else ''}]"
        parts.append(text)
    return "\n".join(parts)


def result_text(result: Any) -> str:
    """What the model reads of a ``CallToolResult``: its structured content as compact JSON
    when it has one, else its text blocks joined; an ``is_error`` result raises
    :class:`ToolError` with its text.

    Structured content that is only ``{"result": value}`` (how Python servers wrap a primitive
    or list return value) reads as the value itself: ``5``, ``OK``, ``[1, 2]``.
    """
    text = content_text(result.content or [])
    if _field(result, "is_error", "isError"):
        raise ToolError(text or "the tool reported an error")
    structured = _field(result, "structured_content", "structuredContent")
    if structured is None:
        return text
    if isinstance(structured, dict) and list(structured) == ["result"]:
        structured = structured["result"]
        if isinstance(structured, str):
            return structured
    return json.dumps(structured, ensure_ascii=False)


# ---------------------------------------------------------------------------------------------
# One connection
# ---------------------------------------------------------------------------------------------
class StderrTail:
    """A pipe a stdio server writes its stderr to; a thread keeps the last lines (and logs them
    at debug level)."""

    def __init__(self, label: str) -> None:
        read_fd, write_fd = os.pipe()
        self.file = os.fdopen(write_fd, "w")
        self._reader = os.fdopen(read_fd, "r", errors="replace")
        self.lines: deque[str] = deque(maxlen=STDERR_LINES)
        self._label = label
        self._thread = threading.Thread(target=self._drain, name="mcp-stderr", daemon=True)
        self._thread.start()

    def _drain(self) -> None:
        with contextlib.suppress(OSError, ValueError), self._reader:
            for line in self._reader:
                self.lines.append(line.rstrip())
                log.debug("%s: %s", self._label, line.rstrip())

    def close_writer(self) -> None:
        """Drop this process's end of the pipe (the server holds its own)."""
        with contextlib.suppress(OSError):
            self.file.close()

    def settle(self, timeout: float) -> None:
        """Wait up to ``timeout`` seconds for the server's last lines (its end of the pipe
        closes when it exits)."""
        self._thread.join(timeout)

    def text(self) -> str:
        """The last lines, joined by `` | `` (at most 1,500 characters)."""
        return " | ".join(line for line in self.lines if line)[-1500:]


class McpConnection:
    """One client session to one server, living on :class:`McpPool`'s loop: every method but
    :attr:`tools` and :attr:`dead` runs there.

    ``tools`` are listed once at :meth:`open`. ``dead`` says why the connection is unusable
    (empty while it works).
    """

    def __init__(self, spec: ServerSpec, connect_timeout: float) -> None:
        self.spec = spec
        self.connect_timeout = connect_timeout
        self.tools: tuple[Tool, ...] = ()
        self.dead = ""
        self._client: Client | None = None
        self._stderr: StderrTail | None = None
        self._stop: asyncio.Event | None = None
        self._owner: asyncio.Task[None] | None = None

    # -- lifetime ---------------------------------------------------------------------------
    async def open(self) -> McpConnection:
        """Start the server (stdio) or attach to it (in-memory), initialize, list its tools."""
        loop = asyncio.get_running_loop()
        ready: asyncio.Future[None] = loop.create_future()
        ready.add_done_callback(_retrieve)
        self._stop = asyncio.Event()
        self._owner = loop.create_task(self._own(ready), name=f"mcp {self.spec.label}")
        try:
            with anyio.fail_after(self.connect_timeout):
                await asyncio.shield(ready)
                self.tools = await self._list_tools()
        except asyncio.CancelledError:
            await self.close()
            raise
        except Exception as exc:
            await self.close()
            if self._stderr is not None:
                await asyncio.to_thread(self._stderr.settle, 0.5)
            raise self._service_error("could not be started", exc) from None
        return self

    async def _own(self, ready: asyncio.Future[None]) -> None:
        """Hold the client's context (anyio needs one task to enter and exit it)."""
        try:
            async with self._make_client() as client:
                self._client = client
                if self._stderr is not None:
                    self._stderr.close_writer()
                ready.set_result(None)
                assert self._stop is not None
                await self._stop.wait()
        except BaseException as exc:
            if not ready.done():
                ready.set_exception(exc if isinstance(exc, Exception) else RuntimeError(exc))
            self.dead = self.dead or f"the connection ended ({_describe(exc)})"
            if not isinstance(exc, Exception):
                raise
        finally:
            self.dead = self.dead or "the connection was closed"
            if self._stderr is not None:
                self._stderr.close_writer()

    def _make_client(self) -> Client:
        timeout = self.connect_timeout
        if self.spec.target:
            return Client(
                resolve_target(self.spec.target), read_timeout_seconds=timeout, cache=None
            )
        params = StdioServerParameters(
            command=self.spec.command[0],
            args=list(self.spec.command[1:]),
            env=dict(self.spec.env) or None,
            cwd=self.spec.cwd,
        )
        self._stderr = StderrTail(self.spec.label)
        transport = stdio_client(params, errlog=self._stderr.file)
        return Client(transport, read_timeout_seconds=timeout, cache=None)

    async def _list_tools(self) -> tuple[Tool, ...]:
        assert self._client is not None
        tools: list[Tool] = []
        cursor = None
        for _ in range(100):
            page = await self._client.list_tools(cursor=cursor)
            for tool in page.tools:
                try:
                    tools.append(mcp_tool(tool))
                except ValueError as exc:
                    log.warning("MCP server %s: tool skipped: %s", self.spec.label, exc)
            cursor = _field(page, "next_cursor", "nextCursor")
            if not cursor:
                break
        return tuple(tools)

    async def close(self) -> None:
        """Stop the session (and a stdio server: stdin closed, then SIGTERM, then SIGKILL, each
        bounded by the SDK). Idempotent."""
        self.dead = self.dead or "the connection was closed"
        if self._stop is not None:
            self._stop.set()
        owner = self._owner
        if owner is None or owner.done():
            return
        if self._client is None:  # still starting: cancel the start (the SDK's stop is shielded)
            owner.cancel()
        with contextlib.suppress(BaseException), anyio.move_on_after(10):
            await asyncio.shield(owner)
        if not owner.done():
            owner.cancel()

    # -- calls ------------------------------------------------------------------------------
    async def call(self, name: str, arguments: dict[str, Any], timeout: float, probe: float) -> str:
        """Run tool ``name``: its result text, :class:`ToolError` for a failure the model reads
        (an error result, a protocol error, a call slower than ``timeout`` seconds on a server
        that still answers within ``probe``), :class:`EnvServiceError` for a dead server."""
        self._check_alive()
        assert self._client is not None
        try:
            with anyio.fail_after(timeout):
                result = await self._client.call_tool(name, arguments, read_timeout_seconds=timeout)
        except TimeoutError:
            await self._probe(name, timeout, probe)
        except MCPError as exc:
            if exc.code == REQUEST_TIMEOUT:
                await self._probe(name, timeout, probe)
            if exc.code == CONNECTION_CLOSED:
                raise self._die("closed the connection", exc) from None
            raise ToolError(f"{name}: {exc.message}") from None
        except _DEAD as exc:
            raise self._die("closed the connection", exc) from None
        return result_text(result)

    async def _probe(self, name: str, timeout: float, probe: float) -> NoReturn:
        """After a timed-out call: raise :class:`ToolError` if the server still lists its
        tools within ``probe`` seconds, else :class:`EnvServiceError`."""
        assert self._client is not None
        try:
            with anyio.fail_after(probe):
                await self._client.list_tools()
        except (TimeoutError, MCPError, *_DEAD) as exc:
            raise self._die(
                f"stopped answering ({name} took over {timeout:g} s, a probe {probe:g} s)", exc
            ) from None
        raise ToolError(f"{name} took longer than {timeout:g} s")

    def _check_alive(self) -> None:
        if self.dead or self._client is None:
            raise EnvServiceError(
                f"MCP server {self.spec.label} is not running: {self.dead or 'never opened'}"
                + self._stderr_note(),
                url=self.spec.label,
            )

    def _die(self, what: str, exc: BaseException) -> EnvServiceError:
        error = self._service_error(what, exc)
        self.dead = self.dead or str(error)
        if self._stop is not None:
            self._stop.set()  # the owner task winds the transport down (bounded by the SDK)
        return error

    def _service_error(self, what: str, exc: BaseException) -> EnvServiceError:
        return EnvServiceError(
            f"MCP server {self.spec.label} {what}: {_describe(exc)}{self._stderr_note()}",
            url=self.spec.label,
        )

    def _stderr_note(self) -> str:
        text = self._stderr.text() if self._stderr is not None else ""
        return f"; its stderr: {text}" if text else ""


def _retrieve(future: asyncio.Future[None]) -> None:
    """Mark a start's outcome as seen (a failed start nobody awaits any more is not an error)."""
    if not future.cancelled():
        future.exception()


def _describe(exc: BaseException) -> str:
    if isinstance(exc, BaseExceptionGroup):
        return "; ".join(_describe(e) for e in exc.exceptions)
    if isinstance(exc, TimeoutError):
        return "timed out"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


# ---------------------------------------------------------------------------------------------
# The pool
# ---------------------------------------------------------------------------------------------
class McpPool:
    """Every MCP connection of this process, on one event loop in a daemon thread.

    :meth:`shared` gives the one connection per :class:`ServerSpec` (concurrent first callers
    await the same start; a dead one is replaced); :meth:`private` a connection of its own.
    :meth:`run` awaits a coroutine on the pool's loop from any other loop, with a timeout.
    """

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._reset()

    def _reset(self) -> None:
        self._pid = os.getpid()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._shared: dict[ServerSpec, concurrent.futures.Future[McpConnection]] = {}
        self._private: set[McpConnection] = set()

    def _ensure_loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._pid != os.getpid():  # a forked child: the parent's thread is not here
                self._reset()
            if self._loop is None:
                self._loop = asyncio.new_event_loop()
                self._thread = threading.Thread(
                    target=self._loop.run_forever, name="mcp-pool", daemon=True
                )
                self._thread.start()
            return self._loop

    def submit(self, coroutine: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        """Schedule ``coroutine`` on the pool's loop."""
        return asyncio.run_coroutine_threadsafe(coroutine, self._ensure_loop())

    async def run(self, coroutine: Coroutine[Any, Any, T], timeout: float, label: str) -> T:
        """Await ``coroutine`` on the pool's loop; past ``timeout`` seconds it is cancelled and
        :class:`EnvServiceError` names ``label``."""
        future = asyncio.wrap_future(self.submit(coroutine))
        try:
            return await asyncio.wait_for(future, timeout)
        except TimeoutError:
            raise EnvServiceError(
                f"MCP server {label} did not answer within {timeout:g} s", url=label
            ) from None

    async def shared(self, spec: ServerSpec, connect_timeout: float) -> McpConnection:
        """The process's connection to ``spec`` (started on first use)."""
        self._ensure_loop()
        with self._lock:
            future = self._shared.get(spec)
            if future is None or _unusable(future):
                future = self.submit(McpConnection(spec, connect_timeout).open())
                self._shared[spec] = future
        return await self._await_open(future, spec, connect_timeout)

    async def private(self, spec: ServerSpec, connect_timeout: float) -> McpConnection:
        """A new connection to ``spec`` (a new stdio server), closed by :meth:`release`."""
        future = self.submit(McpConnection(spec, connect_timeout).open())
        connection = await self._await_open(future, spec, connect_timeout)
        with self._lock:
            self._private.add(connection)
        return connection

    async def _await_open(
        self, future: concurrent.futures.Future[McpConnection], spec: ServerSpec, timeout: float
    ) -> McpConnection:
        try:
            return await asyncio.wait_for(asyncio.shield(asyncio.wrap_future(future)), timeout + 15)
        except TimeoutError:
            raise EnvServiceError(
                f"MCP server {spec.label} did not start within {timeout:g} s", url=spec.label
            ) from None

    async def release(self, connection: McpConnection) -> None:
        """Close a :meth:`private` connection."""
        with self._lock:
            self._private.discard(connection)
        await self.run(connection.close(), 30, connection.spec.label)

    def close(self, timeout: float = 20.0) -> None:
        """Close every connection (stdio servers stop) and the pool's loop. Idempotent; the
        pool starts again on next use."""
        with self._lock:
            if self._pid != os.getpid() or self._loop is None:
                return
            loop, thread = self._loop, self._thread
            connections = list(self._private) + [
                f.result() for f in self._shared.values() if f.done() and not f.exception()
            ]
            self._shared, self._private = {}, set()
            self._loop = self._thread = None
        closing = [asyncio.run_coroutine_threadsafe(c.close(), loop) for c in connections]
        concurrent.futures.wait(closing, timeout=timeout)
        loop.call_soon_threadsafe(loop.stop)
        if thread is not None:
            thread.join(timeout=5)
        if not loop.is_running():
            loop.close()

    def connections(self) -> list[McpConnection]:
        """The open shared connections (for inspection and tests)."""
        with self._lock:
            return [f.result() for f in self._shared.values() if f.done() and not f.exception()]


def _unusable(future: concurrent.futures.Future[McpConnection]) -> bool:
    if not future.done():
        return False
    return future.cancelled() or future.exception() is not None or bool(future.result().dead)


POOL = McpPool()
"""The process's pool (closed at interpreter exit)."""
atexit.register(POOL.close)


def close_servers() -> None:
    """Stop every MCP server this process started (they start again on next use)."""
    POOL.close()
