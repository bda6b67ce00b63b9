"""Retried HTTP calls: one policy and one loop for every client of agentenv.

:func:`send_with_retries` makes one call in up to ``1 + retries`` attempts. Each attempt may
take :attr:`RetryPolicy.timeout` seconds. It failed transiently when it could not connect, timed
out, broke off (an httpx transport error) or was answered with a status in
:attr:`RetryPolicy.retryable`; then the call waits ``backoff * 2**k`` seconds before retry ``k``
(or what the answer's ``Retry-After`` asks, up to :attr:`RetryPolicy.max_delay`) and tries
again. A request that is not idempotent is retried only when it never reached the server (a
connection error). Any other answer of 400 or more fails the call at once (a retry would get the
same answer). The final failure is a :class:`RequestFailed` (or the caller's subclass of it)
that names the URL and, when the server answered, the status.

Which statuses are transient depends on who answers, so each client passes its own set:
:data:`GATEWAY_STATUS` for tool services (:mod:`agentenv.service`: their 500 is a bug, which a
retry repeats) and :data:`agentenv.policies.openai.INFERENCE_STATUS` for inference servers
(their 429 is load, their 500 often a transient engine fault).
"""

from __future__ import annotations

import asyncio
import email.utils
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx

DEFAULT_TIMEOUT = 10.0
"""Seconds one attempt of a tool-service call may take (:class:`RetryPolicy`'s default).

Measured on a 2-CPU machine (``docs/envs/search.md``), the search service's p99 is 4 ms unloaded,
0.4 s with 256 clients sending back to back, 3.7 s with 256 clients sending 32-query batches:
10 s stays above a saturated server's latency, while a stalled server costs an attempt 10 s
instead of 30, and with the circuit breaker only the first few calls to it wait at all. Raise
it (``RetryPolicy(timeout=...)``, ``SearchEnv(timeout=...)``) for slower backends."""

GATEWAY_STATUS = frozenset({502, 503, 504})
"""Bad gateway, unavailable, gateway timeout: a server that is down, restarting or overloaded
(or a proxy in front of one). The default retryable set, and the tool services' one."""


class RequestFailed(RuntimeError):
    """An HTTP call failed for good: refused with a status that a retry would not change, or
    every attempt failed.

    ``url`` is the URL of the last attempt; ``status`` the HTTP status when the server answered.
    """

    def __init__(self, message: str, url: str | None = None, status: int | None = None) -> None:
        super().__init__(message)
        self.url = url
        self.status = status


@dataclass(frozen=True)
class RetryPolicy:
    """How one call is retried.

    Args:
        timeout: seconds one attempt may take.
        retries: attempts after the first one.
        backoff: seconds before the first retry; each later retry waits twice as long.
        retryable: HTTP statuses that fail an attempt transiently (see the module docs for
            which set suits which server).
        max_delay: the most seconds a server's ``Retry-After`` may make a retry wait.
    """

    timeout: float = DEFAULT_TIMEOUT
    retries: int = 3
    backoff: float = 0.1
    retryable: frozenset[int] = GATEWAY_STATUS
    max_delay: float = 60.0

    def delay(self, retry: int, response: httpx.Response | None = None) -> float:
        """Seconds to wait before retry number ``retry`` (0 for the first): what the
        ``response``'s ``Retry-After`` asks (seconds or an HTTP date; at most ``max_delay``), or
        else ``backoff * 2**retry``."""
        asked = retry_after(response) if response is not None else None
        if asked is not None:
            return min(asked, self.max_delay)
        return self.backoff * 2**retry


def retry_after(response: httpx.Response) -> float | None:
    """The seconds a response's ``Retry-After`` header asks for (RFC 9110: delay seconds or an
    HTTP date), or None when it has none that parses."""
    value = response.headers.get("retry-after")
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        seconds = when.timestamp() - time.time()
    return max(0.0, seconds) if math.isfinite(seconds) else None


@dataclass
class Attempts:
    """A call being retried: its ``method``, the ``url`` of the latest attempt (a sender that
    spreads attempts over servers sets it), how many attempts were ``made``, the ``last``
    failure, and ``tag``: what the sender keeps about the attempt in flight."""

    method: str
    url: str
    made: int = 0
    last: str = ""
    tag: Any = None


Sender = Callable[[Attempts], Awaitable[httpx.Response]]
"""One attempt of a call: send the request (at ``attempts.url``) and return the response."""


async def send_with_retries(
    send: Sender,
    policy: RetryPolicy,
    *,
    method: str,
    url: str,
    idempotent: bool = True,
    error: type[RequestFailed] = RequestFailed,
    settle: Callable[[Attempts, str | None], None] | None = None,
) -> httpx.Response:
    """Call ``send`` until an attempt succeeds, per ``policy`` (see the module docs); return the
    response (a status below 400).

    ``settle(attempts, failure)`` hears the outcome of every attempt that got one: ``failure``
    is None when the server answered with a status outside ``policy.retryable`` (it is alive,
    whatever it said), else why the attempt failed. An exception of ``send`` other than an httpx
    transport error or a timeout ends the call as it is, without ``settle``.
    """
    attempts = Attempts(method, url)
    for retry in range(policy.retries + 1):
        attempts.made += 1
        response: httpx.Response | None = None
        try:
            async with asyncio.timeout(policy.timeout):
                response = await send(attempts)
        except httpx.ConnectError as exc:
            attempts.last, again = f"cannot connect ({exc or type(exc).__name__})", True
        except (TimeoutError, httpx.TimeoutException) as exc:
            attempts.last = (
                f"no answer within the {policy.timeout:g}s timeout ({type(exc).__name__})"
            )
            again = idempotent
        except httpx.TransportError as exc:
            attempts.last, again = f"{type(exc).__name__}: {exc}", idempotent
        else:
            status = response.status_code
            if status not in policy.retryable:
                if settle is not None:
                    settle(attempts, None)
                if status >= 400:
                    raise error(
                        f"{method} {attempts.url} failed with HTTP {status}: {response.text[:500]}",
                        url=attempts.url,
                        status=status,
                    )
                return response
            attempts.last, again = f"HTTP {status}: {response.text[:200]}", idempotent
        if settle is not None:
            settle(attempts, attempts.last)
        if not again or retry == policy.retries:
            break
        await asyncio.sleep(policy.delay(retry, response))
    raise error(
        f"{method} {attempts.url} failed after {attempts.made} attempt(s): {attempts.last}",
        url=attempts.url,
        status=None if response is None else response.status_code,
    )
