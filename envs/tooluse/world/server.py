"""The tool world service: one session holds one private copy of the world's database.

Built with :func:`agentenv.sessions.session_app`, so it has the session routes (``POST
/sessions``, ``/sessions/{id}/reset``, ``/sessions/{id}/step``, ``DELETE /sessions/{id}``, the
cap, idle reaping) plus:

- ``POST /sessions/{id}/reset`` (body ignored) → ``{"state"}``: the session's database is
  replaced by a fresh copy of the world;
- ``POST /sessions/{id}/step`` with ``{"name": str, "arguments": {...}}`` →
  ``{"ok": true, "content": <JSON text>, "state"}`` or ``{"ok": false, "error": <why>,
  "state"}``: one tool call (:func:`~agentenv.envs.tooluse.world.tools.run_tool`) under the
  ``query_timeout``; a failure the model should read is ``ok: false``, never an HTTP error;
- ``POST /sessions/{id}/state`` → ``{"state"}`` (``{"dump": true}`` adds every table's rows);
- ``GET /world`` → the world's config, fingerprint (its initial state digest) and tool schemas.

``state`` is the database's digest (:func:`~agentenv.envs.tooluse.world.db.state_hash`),
recomputed only after a call that writes. A request body over ``max_body_bytes`` gets HTTP 413;
a step body that is not ``{"name": str, "arguments": object}`` gets 422.
"""

from __future__ import annotations

import sqlite3
from dataclasses import asdict, dataclass
from typing import Any

from fastapi import FastAPI, HTTPException, Request

from agentenv.envs.tooluse.base import ToolError
from agentenv.envs.tooluse.world.db import World, WorldConfig, build_world, dump, state_hash
from agentenv.envs.tooluse.world.tools import DEFAULT_TIMEOUT, TOOLS, run_tool
from agentenv.sessions import IDLE_TIMEOUT, MAX_SESSIONS, read_json_object, session_app

MAX_BODY_BYTES = 256 * 1024
"""Largest request body: far above the env's cap on one call's arguments (16 KiB)."""
MAX_NAME_CHARS = 64


@dataclass
class WorldSession:
    """One session's database and its cached state digest."""

    db: sqlite3.Connection
    state: str


class WorldBackend:
    """Sessions of one world: each a private in-memory copy of its database."""

    def __init__(self, world: World, query_timeout: float = DEFAULT_TIMEOUT) -> None:
        if not query_timeout > 0:
            raise ValueError(f"query_timeout must be positive, got {query_timeout!r}")
        self.world = world
        self.query_timeout = query_timeout

    async def create(self, options: dict[str, Any]) -> WorldSession:
        return WorldSession(self.world.copy(), self.world.fingerprint)

    async def reset(self, session: WorldSession, options: dict[str, Any]) -> dict[str, Any]:
        session.db.close()
        session.db, session.state = self.world.copy(), self.world.fingerprint
        return {"state": session.state}

    async def step(self, session: WorldSession, action: dict[str, Any]) -> dict[str, Any]:
        name, arguments = action.get("name"), action.get("arguments", {})
        if not isinstance(name, str) or not isinstance(arguments, dict):
            raise HTTPException(
                status_code=422,
                detail='a step body is {"name": str, "arguments": object}',
            )
        spec = TOOLS.get(name[:MAX_NAME_CHARS])
        try:
            content = run_tool(session.db, name, arguments, timeout=self.query_timeout)
        except ToolError as exc:
            return {"ok": False, "error": str(exc), "state": session.state}
        except Exception as exc:  # a tool's own bug is the caller's to read, never a 500
            error = f"{name} failed: {type(exc).__name__}: {exc}"
            return {"ok": False, "error": error, "state": self._refresh(session)}
        if spec is not None and spec.writes:
            self._refresh(session)
        return {"ok": True, "content": content, "state": session.state}

    async def state(self, session: WorldSession, body: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {"state": session.state}
        if body.get("dump"):
            out["tables"] = dump(session.db)
        return out

    async def close(self, session: WorldSession) -> None:
        session.db.close()

    @staticmethod
    def _refresh(session: WorldSession) -> str:
        session.state = state_hash(session.db)
        return session.state


def create_app(
    seed: int = 0,
    num_customers: int = WorldConfig.num_customers,
    num_products: int = WorldConfig.num_products,
    test_fraction: float = WorldConfig.test_fraction,
    ambiguous_fraction: float = WorldConfig.ambiguous_fraction,
    query_timeout: float = DEFAULT_TIMEOUT,
    max_sessions: int = MAX_SESSIONS,
    idle_timeout: float = IDLE_TIMEOUT,
    max_body_bytes: int = MAX_BODY_BYTES,
) -> FastAPI:
    """The service of the world of these knobs (:class:`WorldConfig`); ``query_timeout`` bounds
    one tool call's SQL, the rest are :func:`~agentenv.sessions.session_app`'s."""
    config = WorldConfig(seed, num_customers, num_products, test_fraction, ambiguous_fraction)
    world = build_world(config)
    backend = WorldBackend(world, query_timeout)
    app = session_app(
        "tooluse",
        backend,
        max_sessions=max_sessions,
        idle_timeout=idle_timeout,
        max_body_bytes=max_body_bytes,
    )
    store = app.state.sessions

    @app.post("/sessions/{session_id}/state")
    async def state(session_id: str, request: Request) -> dict[str, Any]:
        return await store.call(session_id, backend.state, await read_json_object(request))

    @app.get("/world")
    async def world_info() -> dict[str, Any]:
        return {
            "config": asdict(config),
            "fingerprint": world.fingerprint,
            "tools": [spec.tool.schema() for spec in TOOLS.values()],
        }

    return app
