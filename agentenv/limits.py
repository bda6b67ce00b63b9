"""A cap on HTTP request bodies for agentenv's FastAPI apps, enforced before anything parses them.

:class:`BodyLimit` answers HTTP 413 when a request declares a ``Content-Length`` over the cap
(before reading a byte of it) or when the body it streams grows past the cap (before the app
sees any of it), so a huge body costs the server at most the cap in memory.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send


def detail_body(message: str) -> dict[str, Any]:
    """FastAPI's error shape, ``{"detail": message}``."""
    return {"detail": message}


class BodyLimit:
    """ASGI middleware: refuse request bodies over ``max_bytes`` with HTTP 413.

    ``error_body`` shapes the JSON of the refusal from its message (which names the limit and
    the size). Add it with ``app.add_middleware(BodyLimit, max_bytes=..., name=...)``; ``name``
    is how the message calls the limit (the knob that sets it).
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        max_bytes: int,
        name: str = "max_body_bytes",
        error_body: Callable[[str], dict[str, Any]] = detail_body,
    ) -> None:
        if max_bytes < 0:
            raise ValueError(f"{name} must be >= 0, got {max_bytes}")
        self.app = app
        self.max_bytes = max_bytes
        self.name = name
        self.error_body = error_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = Headers(scope=scope).get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_bytes:
            await self._refuse(f"{int(declared)} bytes (Content-Length)", scope, receive, send)
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await self._refuse(f"more than {self.max_bytes} bytes", scope, receive, send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        await self.app(scope, _replay(b"".join(chunks), receive), send)

    async def _refuse(self, size: str, scope: Scope, receive: Receive, send: Send) -> None:
        message = f"request body too large: {size}; the limit is {self.name}={self.max_bytes}"
        response = JSONResponse(self.error_body(message), status_code=413)
        await response(scope, receive, send)


def _replay(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that yields the buffered ``body`` once, then defers to ``receive``."""
    pending = True

    async def replay() -> Message:
        nonlocal pending
        if pending:
            pending = False
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay
