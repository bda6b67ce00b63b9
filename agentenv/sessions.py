"""Stateful tool services: one session per episode, many sessions per async process.

A family whose episodes hold state (a shop session, a database, a sandboxed workspace) writes a
:class:`SessionBackend` (create / reset / step / close of one session's state, over whatever the
backend shares: an index, a catalogue) and builds its app with :func:`session_app`, which adds

- ``POST /sessions`` → ``{"session_id": id}`` (HTTP 429 past ``max_sessions``);
- ``POST /sessions/{id}/reset`` and ``POST /sessions/{id}/step`` → what the backend returns;
- ``DELETE /sessions/{id}`` → ``{"closed": id}``;
- ``GET /health`` with the session counts and the cap.

Request bodies are JSON objects of at most ``max_body_bytes`` (HTTP 413 beyond). Calls on one
session run one at a time. A session idle (no call running or made) for ``idle_timeout``
seconds is reaped by a background task; its id then answers 404 saying so. An unknown id
answers 404. Leaving the server's lifespan closes every open session.

An env holds a :class:`ServiceSession` for one episode: opened on reset, released on
``aclose``, at the episode's end, or when it is garbage-collected.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import time
import weakref
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

from fastapi import FastAPI, HTTPException, Request

from agentenv.service import MAX_BODY_BYTES, EnvServiceError, ServiceClient, service_app

StateT = TypeVar("StateT")
SessionCall = Callable[[StateT, dict[str, Any]], Awaitable[dict[str, Any]]]
log = logging.getLogger(__name__)

MAX_SESSIONS = 1024
"""Default cap on open sessions: 4x the rollout engine's default concurrent episodes."""
IDLE_TIMEOUT = 600.0
"""Default idle seconds before a session is reaped: far above the time a policy takes to
generate one turn, short enough that sessions of crashed clients do not pile up."""
_REAPED_MEMORY = 65536  # reaped ids remembered, to tell "reaped" from "unknown"


class SessionBackend(Protocol[StateT]):
    """The per-session logic of a stateful service; one instance serves every session.

    Each method gets the request body (a JSON object). Raise ``fastapi.HTTPException`` for a
    malformed request; never for a bad action in the env's protocol (answer it instead).
    """

    async def create(self, options: dict[str, Any]) -> StateT:
        """The state of a new session (built from what the backend shares)."""
        ...

    async def reset(self, state: StateT, options: dict[str, Any]) -> dict[str, Any]:
        """Start an episode in the session; return the response body."""
        ...

    async def step(self, state: StateT, action: dict[str, Any]) -> dict[str, Any]:
        """Apply one action; return the response body."""
        ...

    async def close(self, state: StateT) -> None:
        """Release the session's resources."""
        ...


@dataclass
class _Session(Generic[StateT]):
    state: StateT
    last_used: float = field(default_factory=time.monotonic)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class SessionStore(Generic[StateT]):
    """The open sessions of one app: ids, the cap, idle reaping and counts."""

    def __init__(
        self,
        name: str,
        backend: SessionBackend[StateT],
        *,
        max_sessions: int = MAX_SESSIONS,
        idle_timeout: float = IDLE_TIMEOUT,
    ) -> None:
        if max_sessions < 1 or idle_timeout <= 0:
            raise ValueError(
                f"need max_sessions >= 1 and idle_timeout > 0, got {max_sessions}, {idle_timeout}"
            )
        self.name = name
        self.backend = backend
        self.max_sessions = max_sessions
        self.idle_timeout = idle_timeout
        self.counts = {"created": 0, "closed": 0, "reaped": 0}
        self._sessions: dict[str, _Session[StateT]] = {}
        self._creating = 0
        self._reaped: OrderedDict[str, float] = OrderedDict()
        self._reaper: asyncio.Task[None] | None = None

    # -- sessions ----------------------------------------------------------------------------
    async def create(self, options: dict[str, Any]) -> str:
        self.ensure_reaper()
        if len(self._sessions) + self._creating >= self.max_sessions:
            raise HTTPException(
                status_code=429,
                detail=(
                    f"session cap reached: {len(self._sessions) + self._creating} sessions of "
                    f"the {self.name} service are open or opening, max_sessions="
                    f"{self.max_sessions}. Close sessions (DELETE /sessions/{{id}}) or restart "
                    f"the service with a higher cap, e.g. `agentenv serve {self.name} --option "
                    f"max_sessions={2 * self.max_sessions}`"
                ),
            )
        self._creating += 1
        try:
            state = await self.backend.create(options)
        finally:
            self._creating -= 1
        session_id = secrets.token_hex(12)
        self._sessions[session_id] = _Session(state)
        self.counts["created"] += 1
        return session_id

    def _get(self, session_id: str) -> _Session[StateT]:
        session = self._sessions.get(session_id)
        if session is None:
            raise self._missing(session_id)
        return session

    def _missing(self, session_id: str) -> HTTPException:
        if session_id in self._reaped:
            return HTTPException(
                status_code=404,
                detail=(
                    f"session {session_id} was reaped for idleness after "
                    f"{self._reaped[session_id]:.1f}s without a call (idle_timeout="
                    f"{self.idle_timeout:g}s); open a new one with POST /sessions"
                ),
            )
        return HTTPException(
            status_code=404,
            detail=(
                f"no session {session_id} on the {self.name} service: it was never opened "
                f"here, or it was closed; open one with POST /sessions"
            ),
        )

    async def call(self, session_id: str, method: SessionCall[StateT], body: dict[str, Any]) -> Any:
        """``await method(state, body)`` on the session's state (``backend.reset``/``step``)."""
        session = self._get(session_id)
        async with session.lock:
            if self._sessions.get(session_id) is not session:  # closed or reaped meanwhile
                raise self._missing(session_id)
            try:
                return await method(session.state, body)
            finally:
                session.last_used = time.monotonic()

    async def close(self, session_id: str) -> None:
        session = self._get(session_id)
        async with session.lock:  # a call in flight finishes first
            if self._sessions.pop(session_id, None) is not session:
                raise self._missing(session_id)
            self.counts["closed"] += 1
            await self.backend.close(session.state)

    async def close_all(self) -> None:
        sessions, self._sessions = self._sessions, {}
        for session in sessions.values():
            await self._close_quietly(session)

    async def _close_quietly(self, session: _Session[StateT]) -> None:
        try:
            await self.backend.close(session.state)
        except Exception:  # one failing close must not stop the reaper or the shutdown
            log.exception("closing a session of the %s service failed", self.name)

    # -- reaping -----------------------------------------------------------------------------
    async def reap_idle(self) -> int:
        """Close the sessions idle for ``idle_timeout``; return how many."""
        now = time.monotonic()
        idle = [
            (sid, s)
            for sid, s in list(self._sessions.items())
            if not s.lock.locked() and now - s.last_used >= self.idle_timeout
        ]
        reaped = 0
        for session_id, session in idle:
            if self._sessions.pop(session_id, None) is not session:
                continue
            self._reaped[session_id] = now - session.last_used
            while len(self._reaped) > _REAPED_MEMORY:
                self._reaped.popitem(last=False)
            self.counts["reaped"] += 1
            reaped += 1
            await self._close_quietly(session)
        return reaped

    async def _reap_forever(self) -> None:
        interval = self.idle_timeout / 4
        while True:
            await asyncio.sleep(interval)
            await self.reap_idle()

    def ensure_reaper(self) -> None:
        """Run the reaper on this event loop unless it already runs here.

        Uvicorn starts it in the lifespan; in-process apps (``httpx.ASGITransport``) get no
        lifespan and may serve several loops in turn, so session creation calls this too.
        """
        loop = asyncio.get_running_loop()
        if self._reaper is None or self._reaper.done() or self._reaper.get_loop() is not loop:
            self._reaper = loop.create_task(self._reap_forever())

    @contextlib.asynccontextmanager
    async def lifespan(self, app: FastAPI) -> AsyncIterator[None]:
        """Reap while the server runs; close every session when it stops."""
        self.ensure_reaper()
        try:
            yield
        finally:
            if self._reaper is not None:
                self._reaper.cancel()
            await self.close_all()

    def health(self) -> dict[str, Any]:
        return {
            "sessions": {"open": len(self._sessions), "max": self.max_sessions, **self.counts},
            "idle_timeout": self.idle_timeout,
        }


async def read_json_object(request: Request) -> dict[str, Any]:
    """The request's JSON object body (``{}`` if empty); its size is capped by the app's
    :class:`~agentenv.limits.BodyLimit`."""
    body = await request.body()
    if not body:
        return {}
    try:
        value = json.loads(body)
    except ValueError as exc:
        raise HTTPException(status_code=422, detail=f"body is not JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise HTTPException(status_code=422, detail="body must be a JSON object")
    return value


def session_app(
    name: str,
    backend: SessionBackend[Any],
    *,
    max_sessions: int = MAX_SESSIONS,
    idle_timeout: float = IDLE_TIMEOUT,
    max_body_bytes: int = MAX_BODY_BYTES,
    version: str = "0",
) -> FastAPI:
    """A :func:`~agentenv.service.service_app` serving sessions of ``backend``.

    The :class:`SessionStore` is ``app.state.sessions``; add the family's other routes to the
    returned app.
    """
    store = SessionStore(name, backend, max_sessions=max_sessions, idle_timeout=idle_timeout)
    app = service_app(
        name,
        version=version,
        health=store.health,
        lifespan=store.lifespan,
        max_body_bytes=max_body_bytes,
    )
    app.state.sessions = store

    @app.post("/sessions")
    async def open_session(request: Request) -> dict[str, str]:
        options = await read_json_object(request)
        return {"session_id": await store.create(options)}

    @app.post("/sessions/{session_id}/reset")
    async def reset(session_id: str, request: Request) -> dict[str, Any]:
        return await store.call(session_id, backend.reset, await read_json_object(request))

    @app.post("/sessions/{session_id}/step")
    async def step(session_id: str, request: Request) -> dict[str, Any]:
        return await store.call(session_id, backend.step, await read_json_object(request))

    @app.delete("/sessions/{session_id}")
    async def close(session_id: str) -> dict[str, str]:
        await store.close(session_id)
        return {"closed": session_id}

    return app


# ---------------------------------------------------------------------------------------------
# Client
# ---------------------------------------------------------------------------------------------
_RELEASES: set[asyncio.Task[Any]] = set()  # DELETEs scheduled by finalizers, until they end


def _forget_release(task: asyncio.Task[Any]) -> None:
    _RELEASES.discard(task)
    if not task.cancelled():
        task.exception()  # retrieved: a failed release is the server's to reap


def _release_on_loop(client: ServiceClient, base_url: str, path: str) -> None:
    task = asyncio.ensure_future(client.request("DELETE", path, base_url=base_url))
    _RELEASES.add(task)
    task.add_done_callback(_forget_release)


def _release_later(
    loop: asyncio.AbstractEventLoop, client: ServiceClient, base_url: str, path: str
) -> None:
    """Finalizer of a garbage-collected :class:`ServiceSession`: schedule its DELETE on the loop
    it was opened on, from whatever thread collected it. Never raises."""
    if loop.is_closed():
        return
    with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
        loop.call_soon_threadsafe(_release_on_loop, client, base_url, path)


class ServiceSession:
    """One session of a stateful service, held by an env for one episode.

    Made by :meth:`open`; every call goes to the server that opened it. :meth:`aclose`
    releases it (idempotent; a session already gone counts as released). A session dropped
    without ``aclose`` is released when garbage-collected: the DELETE is scheduled on the event
    loop it was opened on (nothing happens at interpreter exit; the server reaps it).
    A dead service raises :class:`~agentenv.service.EnvServiceError` naming the URL.
    """

    def __init__(self, client: ServiceClient, base_url: str, session_id: str) -> None:
        self.client = client
        self.base_url = base_url
        self.id = session_id
        self._finalizer = weakref.finalize(
            self, _release_later, asyncio.get_running_loop(), client, base_url, self.path
        )
        self._finalizer.atexit = False

    @classmethod
    async def open(
        cls, client: ServiceClient, options: dict[str, Any] | None = None
    ) -> ServiceSession:
        """Open a session (``POST /sessions`` with ``options``) on one of the client's URLs."""
        base_url, body = await client.exchange(
            "POST", "/sessions", json=options or {}, idempotent=False
        )
        return cls(client, base_url, body["session_id"])

    @property
    def path(self) -> str:
        return f"/sessions/{self.id}"

    @property
    def url(self) -> str:
        return f"{self.base_url}{self.path}"

    @property
    def closed(self) -> bool:
        return not self._finalizer.alive

    async def reset(self, options: dict[str, Any] | None = None) -> Any:
        """``POST /sessions/{id}/reset``: start an episode in this session."""
        return await self.client.request(
            "POST", f"{self.path}/reset", json=options or {}, base_url=self.base_url
        )

    async def step(self, action: dict[str, Any]) -> Any:
        """``POST /sessions/{id}/step``; never retried once sent (a step is not idempotent)."""
        return await self.client.request(
            "POST", f"{self.path}/step", json=action, idempotent=False, base_url=self.base_url
        )

    async def post(self, route: str, body: dict[str, Any] | None = None) -> Any:
        """``POST /sessions/{id}/{route}``: a route a family's app adds to a session (never
        retried: it may change the session's state)."""
        return await self.client.request(
            "POST",
            f"{self.path}/{route}",
            json=body or {},
            idempotent=False,
            base_url=self.base_url,
        )

    async def aclose(self) -> None:
        """``DELETE /sessions/{id}``, once."""
        if self._finalizer.detach() is None:
            return
        try:
            await self.client.request("DELETE", self.path, base_url=self.base_url)
        except EnvServiceError as exc:
            if exc.status != 404:
                raise


async def release(session: ServiceSession | None) -> None:
    """Close ``session`` if there is one; a session the service cannot be told about (it is
    dead or unreachable) is left to its idle reaper."""
    if session is not None:
        with contextlib.suppress(EnvServiceError):
            await session.aclose()


async def check_served(
    client: ServiceClient, path: str, key: str, expected: str, *, data: str, config: object
) -> None:
    """Fail fast unless the service behind ``client`` serves the ``data`` (a world, a
    catalogue) an env was configured with: ``GET path`` must report ``key == expected``.

    On a mismatch, or a failed request, ``client`` is closed and the error names the URL, both
    fingerprints and ``config``.
    """
    try:
        served = (await client.get(path)).get(key)
    except BaseException:
        await client.aclose()
        raise
    if served != expected:
        await client.aclose()
        raise EnvServiceError(
            f"the service at {client.url} serves another {data} ({key} {served}) than this "
            f"env's {config} ({expected}); start it with the same {data} knobs",
            url=client.url,
        )


class SessionHolder:
    """Mixin of an env that holds one session of a stateful service per episode.

    ``_client`` is the env's service client (made on first use), ``_session`` the running
    episode's session. :meth:`_release` closes the session (at an episode's end or reset);
    :meth:`aclose` closes both, idempotently. Put it before the env's base class:
    ``class ShopEnv(SessionHolder, TextEnv)``.
    """

    _client: ServiceClient | None = None
    _session: ServiceSession | None = None

    async def _release(self) -> None:
        session, self._session = self._session, None
        await release(session)

    async def aclose(self) -> None:
        await self._release()
        if self._client is not None:
            client, self._client = self._client, None
            await client.aclose()
