"""Small service apps for the service-plumbing tests (importable by the uvicorn subprocess).

``create_app``: stateless probes (echo, flaky, slow, die). ``create_session_app``: a counter
per session over one shared catalogue of start values, built with the session conventions.
``create_status_app``: answers a given sequence of HTTP statuses (the retry tests).
"""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import dataclass
from typing import Any

from fastapi import HTTPException, Response

from agentenv.service import service_app
from agentenv.sessions import session_app


def create_app(
    name: str = "probe", fail_first: int = 0, startup_delay: float = 0.0, crash: bool = False
):
    if crash:
        raise RuntimeError("this service was asked to fail at start-up")
    time.sleep(startup_delay)  # a slow index build
    app = service_app(name)
    state = {"calls": 0}

    @app.post("/echo")
    def echo(payload: dict) -> dict:
        return {"echo": payload, "pid": os.getpid()}

    @app.post("/flaky")
    def flaky(payload: dict) -> dict:
        state["calls"] += 1
        if state["calls"] <= fail_first:
            raise HTTPException(status_code=503, detail="warming up")
        return {"calls": state["calls"]}

    @app.get("/calls")
    def calls() -> dict:
        return {"calls": state["calls"]}

    @app.post("/bad")
    def bad(payload: dict) -> dict:
        raise HTTPException(status_code=422, detail="field 'x' is required")

    @app.post("/slow")
    async def slow(payload: dict) -> dict:
        await asyncio.sleep(float(payload.get("seconds", 5)))
        return {}

    @app.post("/die")
    def die(payload: dict) -> dict:
        os._exit(3)

    return app


@dataclass
class Counter:
    """One session's state."""

    catalogue: dict[str, int]
    count: int = 0
    target: int = 3


class CounterBackend:
    """Counters over a shared catalogue of named start values: ``reset {"start": name}`` sets
    the count from the catalogue, ``step {"add": k}`` (optionally ``"sleep": s``) adds ``k``;
    the episode is done when the count reaches the target."""

    def __init__(self, catalogue: dict[str, int]) -> None:
        self.catalogue = catalogue
        self.closed = 0

    async def create(self, options: dict[str, Any]) -> Counter:
        return Counter(self.catalogue, target=int(options.get("target", 3)))

    async def reset(self, state: Counter, options: dict[str, Any]) -> dict[str, Any]:
        start = options.get("start", "zero")
        if start not in state.catalogue:
            raise HTTPException(status_code=422, detail=f"unknown start {start!r}")
        state.count = state.catalogue[start]
        return {"count": state.count, "pid": os.getpid(), "catalogue_id": id(state.catalogue)}

    async def step(self, state: Counter, action: dict[str, Any]) -> dict[str, Any]:
        await asyncio.sleep(float(action.get("sleep", 0)))
        state.count += int(action.get("add", 1))
        return {"count": state.count, "done": state.count >= state.target}

    async def close(self, state: Counter) -> None:
        self.closed += 1


def create_session_app(
    max_sessions: int = 64, idle_timeout: float = 600.0, max_body_bytes: int = 4096
):
    backend = CounterBackend({"zero": 0, "one": 1, "two": 2})
    app = session_app(
        "counter",
        backend,
        max_sessions=max_sessions,
        idle_timeout=idle_timeout,
        max_body_bytes=max_body_bytes,
    )

    @app.get("/closed")
    def closed() -> dict[str, int]:
        return {"closed": backend.closed}

    return app


def create_status_app(statuses: list[int], retry_after: str | None = None):
    """``POST /call`` and ``POST /v1/completions`` answer ``statuses`` in turn (the last one from
    then on), with a ``Retry-After`` header when given; ``GET /hits`` lists what they answered."""
    app, hits = service_app("statuses"), []
    headers = {} if retry_after is None else {"Retry-After": retry_after}

    def answer() -> Response:
        status = statuses[min(len(hits), len(statuses) - 1)]
        hits.append(status)
        return Response(f'{{"status": {status}}}', status, headers, "application/json")

    app.post("/call")(answer)
    app.post("/v1/completions")(answer)
    app.get("/hits")(lambda: hits)
    return app
