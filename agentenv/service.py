"""Tool-service plumbing: FastAPI app conventions, circuit breakers and the async httpx client.

An env family's backend is a FastAPI app built by a factory ``create_app(**config)`` (see
:func:`service_app`; stateful families build theirs with :func:`agentenv.sessions.session_app`).
Envs reach it through a :class:`ServiceClient` made by :func:`agentenv.launch.connect`, in one
of three modes:

- **in-process** (the default): ``httpx.ASGITransport`` calls the app directly, no sockets;
  one app per (factory, config) is shared by every env of the process (:func:`shared_app`);
- **local**: a uvicorn subprocess on 127.0.0.1, one per (factory, config), owned by the run's
  pool (:mod:`agentenv.launch`);
- **remote**: a list of base URLs, used round-robin over one pooled connection set.

Every call has a timeout (:data:`agentenv.retry.DEFAULT_TIMEOUT` by default). Failures that may
be transient (connection errors, timeouts, HTTP 502/503/504: :data:`~agentenv.retry.GATEWAY_STATUS`;
a tool service's 500 is a bug in it, which a retry repeats) are retried with exponential backoff,
a bounded number of times, by :func:`agentenv.retry.send_with_retries`; requests that are not
idempotent are retried only when the connection was never made.
Each network URL has one :class:`CircuitBreaker` shared by every client of the process: after
a few consecutive failures, calls to that URL fail at once (round-robin skips it while another
URL is healthy) until a trial call after the cool-down succeeds. The final failure is an
:class:`EnvServiceError` that names the URL.
"""

from __future__ import annotations

import contextlib
import gc
import itertools
import json
import ssl
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any, Literal

import httpx
from fastapi import FastAPI
from gymnasium.envs.registration import load_env_creator

from agentenv.limits import BodyLimit
from agentenv.retry import Attempts, RequestFailed, RetryPolicy, send_with_retries

IN_PROCESS_URL = "http://in-process"

MAX_BODY_BYTES = 1 << 20
"""Default cap on a service's request bodies (1 MiB); a family with bigger requests raises it."""


class EnvServiceError(RequestFailed):
    """A tool service could not be reached or failed, after the bounded retries.

    ``url`` is the URL that failed; ``status`` the HTTP status when the service answered one.
    """


# ---------------------------------------------------------------------------------------------
# App conventions
# ---------------------------------------------------------------------------------------------
def service_app(
    name: str,
    *,
    version: str = "0",
    health: Callable[[], dict[str, Any]] | None = None,
    lifespan: Callable[[FastAPI], contextlib.AbstractAsyncContextManager[None]] | None = None,
    max_body_bytes: int = MAX_BODY_BYTES,
) -> FastAPI:
    """A FastAPI app with the conventions every agentenv service shares.

    ``GET /health`` answers ``{"status": "ok", "service": name}`` plus what ``health()`` returns
    (e.g. session counts). ``lifespan`` is FastAPI's: run at server start-up and shutdown.
    Request bodies over ``max_body_bytes`` are refused with HTTP 413 before anything parses
    them (:class:`agentenv.limits.BodyLimit`).
    """
    app = FastAPI(title=f"agentenv {name} service", version=version, lifespan=lifespan)
    app.add_middleware(BodyLimit, max_bytes=max_body_bytes)

    @app.get("/health")
    async def health_route() -> dict[str, Any]:
        return {"status": "ok", "service": name, **(health() if health is not None else {})}

    return app


@dataclass(frozen=True)
class ServiceSpec:
    """A named service for ``agentenv serve NAME``."""

    name: str
    factory: str
    description: str = ""


_SERVICES: dict[str, ServiceSpec] = {}


def register_service(name: str, factory: str, description: str = "") -> None:
    """Make ``agentenv serve NAME`` build its app with ``factory`` (``"pkg.mod:create_app"``)."""
    _SERVICES[name] = ServiceSpec(name, factory, description)


def list_services() -> list[ServiceSpec]:
    return [_SERVICES[k] for k in sorted(_SERVICES)]


def service_spec(name: str) -> ServiceSpec:
    if name not in _SERVICES:
        raise KeyError(f"unknown service {name!r}; known: {', '.join(sorted(_SERVICES))}")
    return _SERVICES[name]


def build_app(factory: str, config: dict[str, Any] | None = None) -> FastAPI:
    return load_env_creator(factory)(**(config or {}))


def build_served_app(factory: str, config: dict[str, Any] | None = None) -> FastAPI:
    """:func:`build_app` for a process that serves it: the app's long-lived state (a search
    world, a catalogue: up to millions of objects) is frozen out of the garbage collector, whose
    full passes would otherwise scan it every time (tens of ms each, a latency spike per pass)."""
    app = build_app(factory, config)
    gc.freeze()
    return app


def config_key(config: dict[str, Any] | None) -> str:
    """The canonical JSON of a service config: equal configs give equal keys."""
    return json.dumps(config or {}, sort_keys=True, default=str)


@cache
def _cached_app(factory: str, key: str) -> FastAPI:
    return build_app(factory, json.loads(key))


def shared_app(factory: str, config: dict[str, Any] | None = None) -> FastAPI:
    """One in-process app per (factory, config): many envs share an index, never rebuild it."""
    return _cached_app(factory, config_key(config))


# ---------------------------------------------------------------------------------------------
# Circuit breakers
# ---------------------------------------------------------------------------------------------
Ticket = Literal["call", "trial"]


class CircuitBreaker:
    """Health of one URL as its callers see it: closed, open, or half-open.

    Closed: calls go through. After ``failures`` consecutive failures (a connection error, a
    timeout, HTTP 502/503/504) it opens: calls fail at once for ``cooldown`` seconds. Then it is
    half-open: one trial call goes through; its success closes the breaker, its failure opens it
    again. Any HTTP answer other than 502/503/504 counts as a success: the server is alive.
    Thread-safe: clients on several event loops share it.
    """

    def __init__(self, url: str, failures: int, cooldown: float) -> None:
        self.url = url
        self.failures = failures
        self.cooldown = cooldown
        self.consecutive = 0
        self.last_failure = ""
        self._opened_at: float | None = None
        self._trial = False
        self._lock = threading.Lock()

    @property
    def state(self) -> Literal["closed", "open", "half-open"]:
        if self._opened_at is None:
            return "closed"
        return "open" if self._remaining() > 0 else "half-open"

    def _remaining(self) -> float:
        if self._opened_at is None:
            return 0.0
        return max(0.0, self._opened_at + self.cooldown - time.monotonic())

    def acquire(self) -> Ticket | None:
        """May a call go now? ``"call"`` (closed), ``"trial"`` (the half-open probe) or None."""
        with self._lock:
            if self._opened_at is None:
                return "call"
            if self._remaining() > 0 or self._trial:
                return None
            self._trial = True
            return "trial"

    def succeeded(self) -> None:
        with self._lock:
            self.consecutive, self._opened_at, self._trial = 0, None, False

    def failed(self, reason: str, ticket: Ticket) -> None:
        with self._lock:
            self.consecutive += 1
            self.last_failure = reason
            if ticket == "trial":
                self._trial, self._opened_at = False, time.monotonic()
            elif self._opened_at is None and self.consecutive >= self.failures:
                self._opened_at = time.monotonic()

    def abandon(self, ticket: Ticket) -> None:
        """A call ended without a verdict on the URL (it was cancelled)."""
        if ticket == "trial":
            with self._lock:
                self._trial = False

    def describe(self) -> str:
        """Why calls to this URL fail at once (for error messages)."""
        remaining = self._remaining()
        if remaining > 0:
            state = "open"
            when = f"calls to it fail at once for another {remaining:.1f}s, then one trial call is let through"
        else:
            state = "half-open"
            when = "a trial call is in flight; other calls fail at once until it succeeds"
        return (
            f"the circuit breaker of {self.url} is {state} after {self.consecutive} consecutive "
            f"failure(s) ({when}); last failure: {self.last_failure}"
        )


class BreakerRegistry:
    """One :class:`CircuitBreaker` per URL, made on first use with this registry's settings."""

    def __init__(self, failures: int = 3, cooldown: float = 30.0) -> None:
        if failures < 1 or cooldown < 0:
            raise ValueError(f"need failures >= 1 and cooldown >= 0, got {failures}, {cooldown}")
        self.failures = failures
        self.cooldown = cooldown
        self._breakers: dict[str, CircuitBreaker] = {}
        self._lock = threading.Lock()

    def get(self, url: str) -> CircuitBreaker:
        with self._lock:
            if url not in self._breakers:
                self._breakers[url] = CircuitBreaker(url, self.failures, self.cooldown)
            return self._breakers[url]

    def forget(self, url: str) -> None:
        """Drop the history of ``url`` (a new server listens there)."""
        with self._lock:
            self._breakers.pop(url, None)


BREAKERS = BreakerRegistry()
"""The breakers every client of this process shares by default: 3 consecutive failures open a
URL's breaker (one call's retries suffice, so a stalled server costs a caller ~3 timeouts once,
then nothing), for 30 s (a dead server is probed twice a minute; a restarted one is back in use
within 30 s)."""


# ---------------------------------------------------------------------------------------------
# Client
# ---------------------------------------------------------------------------------------------
@cache
def tls_context() -> ssl.SSLContext:
    """One TLS context for every client: each httpx client would otherwise load the CA bundle
    (~20 ms of blocked event loop per env)."""
    return httpx.create_ssl_context()


class ServiceClient:
    """Async JSON client of one tool service, in-process, local or remote (round-robin).

    ``breakers`` is the :class:`BreakerRegistry` of its URLs (the process's :data:`BREAKERS`
    by default; None: no breaker, as for the in-process app, which has no URL to go stale).
    """

    def __init__(
        self,
        base_urls: Sequence[str],
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        retry: RetryPolicy | None = None,
        max_connections: int = 512,
        breakers: BreakerRegistry | None = BREAKERS,
    ) -> None:
        if not base_urls:
            raise ValueError("ServiceClient needs at least one base URL")
        self.base_urls = [u.rstrip("/") for u in base_urls]
        self.retry = retry or RetryPolicy()
        self.breakers = breakers
        self._next_url = itertools.cycle(self.base_urls)
        self._client = httpx.AsyncClient(
            transport=transport,
            verify=tls_context(),
            timeout=self.retry.timeout,
            limits=httpx.Limits(
                max_connections=max_connections, max_keepalive_connections=max_connections
            ),
        )

    @classmethod
    def in_process(cls, app: FastAPI, **kwargs: Any) -> ServiceClient:
        kwargs.setdefault("breakers", None)
        return cls([IN_PROCESS_URL], transport=httpx.ASGITransport(app=app), **kwargs)

    @classmethod
    def remote(cls, urls: str | Sequence[str], **kwargs: Any) -> ServiceClient:
        if isinstance(urls, str):
            urls = [u.strip() for u in urls.split(",") if u.strip()]
        return cls(list(urls), **kwargs)

    @property
    def url(self) -> str:
        return self.base_urls[0]

    def _breaker(self, base: str) -> CircuitBreaker | None:
        return None if self.breakers is None else self.breakers.get(base)

    def _pick(self, base_url: str | None) -> tuple[str, Ticket] | None:
        """The next base URL whose breaker lets a call through (``base_url`` only, if given)."""
        if base_url:
            candidates: Iterable[str] = [base_url]
        else:  # lazily: the cycle advances only past the URLs tried
            candidates = (next(self._next_url) for _ in self.base_urls)
        for base in candidates:
            breaker = self._breaker(base)
            ticket = "call" if breaker is None else breaker.acquire()
            if ticket is not None:
                return base, ticket
        return None

    def _blocked(self, attempts: Attempts, base_url: str | None) -> EnvServiceError:
        """Why ``attempts`` cannot go on: every breaker it may use is open."""
        bases = [base_url] if base_url else self.base_urls
        reasons = "; ".join(b.describe() for u in bases if (b := self._breaker(u)) is not None)
        made, call = attempts.made - 1, f"{attempts.method} {attempts.url}"
        if made:
            message = f"{call} failed after {made} attempt(s): {attempts.last}; {reasons}"
        else:
            message = f"{call} not sent: {reasons}"
        return EnvServiceError(message, url=attempts.url)

    async def exchange(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        idempotent: bool = True,
        base_url: str | None = None,
    ) -> tuple[str, Any]:
        """Send a JSON request; return the base URL that answered and the decoded JSON body.

        ``base_url`` pins the request to one of the URLs (a session lives on one server).
        Transient failures are retried per :attr:`retry`, on the next URL whose breaker is not
        open; the last failure raises :class:`EnvServiceError` naming the URL. HTTP 4xx and 500
        raise at once (retrying will not help) with the service's error detail.
        """
        answered = ""

        async def send(attempts: Attempts) -> httpx.Response:
            nonlocal answered
            picked = self._pick(base_url)
            if picked is None:
                raise self._blocked(attempts, base_url)
            base, ticket = picked
            attempts.url, attempts.tag, answered = f"{base}{path}", (base, ticket), base
            try:
                return await self._client.request(method, attempts.url, json=json)
            except httpx.TransportError:
                raise
            except BaseException:  # cancelled (a timeout too): no verdict on the URL from here
                if (breaker := self._breaker(base)) is not None:
                    breaker.abandon(ticket)
                raise

        def settle(attempts: Attempts, failure: str | None) -> None:
            base, ticket = attempts.tag
            if (breaker := self._breaker(base)) is None:
                return
            if failure is None:
                breaker.succeeded()
            else:
                breaker.failed(failure, ticket)

        response = await send_with_retries(
            send,
            self.retry,
            method=method,
            url=f"{base_url or self.url}{path}",
            idempotent=idempotent,
            error=EnvServiceError,
            settle=settle,
        )
        return answered, response.json()

    async def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        idempotent: bool = True,
        base_url: str | None = None,
    ) -> Any:
        """:meth:`exchange`, returning only the decoded JSON body."""
        _, body = await self.exchange(
            method, path, json=json, idempotent=idempotent, base_url=base_url
        )
        return body

    async def get(self, path: str) -> Any:
        return await self.request("GET", path)

    async def post(self, path: str, json: Any = None, *, idempotent: bool = True) -> Any:
        return await self.request("POST", path, json=json, idempotent=idempotent)

    async def health(self) -> dict[str, Any]:
        return await self.get("/health")

    async def aclose(self) -> None:
        await self._client.aclose()
