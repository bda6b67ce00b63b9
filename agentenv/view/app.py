"""The served viewer: a FastAPI app over one run, for ``agentenv view RUN`` (uvicorn on
127.0.0.1).

Routes: ``GET /`` the page, ``GET /api/run`` the run document (every episode's summary and the
learning curves, built once), ``GET /api/episodes/{id}`` one episode's document (its transcript
read from the file when asked; each group's credit computed once), and ``GET /health``
(:func:`agentenv.service.service_app`'s). The run is indexed when the app is built, so a bad file
fails before the server listens.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

from fastapi import FastAPI, HTTPException
from fastapi.responses import HTMLResponse, Response

from agentenv.jsonl import DataFormatError
from agentenv.service import service_app
from agentenv.view.credit import GroupCredit
from agentenv.view.page import render_page
from agentenv.view.payload import credit_of, episode_payload, run_payload
from agentenv.view.runs import open_run

FACTORY = "agentenv.view.app:create_app"
"""The app factory, as :func:`agentenv.launch.serve` and :class:`agentenv.launch.LocalServer`
take it (config: ``{"source": RUN}``)."""

GROUP_CACHE = 4096
"""Groups whose credit the app keeps computed."""


def create_app(source: str | Path) -> FastAPI:
    """The viewer app of the run at ``source`` (see :func:`agentenv.view.runs.open_run`)."""
    run = open_run(source)
    app = service_app(
        "viewer", health=lambda: {"run": str(run.path), "episodes": len(run.episodes)}
    )
    page = render_page(run.name, {"mode": "served"})
    document = json.dumps(run_payload(run), ensure_ascii=False).encode()

    @lru_cache(maxsize=GROUP_CACHE)
    def group_credit(group: str) -> GroupCredit:
        return credit_of(run, run.groups[group][0])

    @app.get("/", response_class=HTMLResponse)
    async def index() -> str:
        return page

    @app.get("/api/run")
    async def run_document() -> Response:
        return Response(document, media_type="application/json")

    @app.get("/api/episodes/{episode_id}")
    def episode_document(episode_id: int) -> dict:
        if not 0 <= episode_id < len(run.episodes):
            raise HTTPException(404, f"no episode {episode_id} (the run has {len(run.episodes)})")
        try:
            credit = group_credit(run.episodes[episode_id].group)
            return episode_payload(run, episode_id, credit)
        except DataFormatError as exc:
            raise HTTPException(422, str(exc)) from None

    return app
