"""Session conventions of stateful services: the counter service of ``service_app.py`` served
in-process and by a real uvicorn server on 127.0.0.1, and an env that holds one session per
episode."""

from __future__ import annotations

import asyncio
import gc
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from agentenv import EnvServiceError
from agentenv.env import TextEnv
from agentenv.launch import LocalServer, connect, service_scope
from agentenv.service import RetryPolicy, ServiceClient, build_app
from agentenv.sessions import ServiceSession

FACTORY = "service_app:create_session_app"
HERE = Path(__file__).parent
FAST = RetryPolicy(timeout=2.0, retries=2, backoff=0.01)
ENV_CONFIG = {"max_sessions": 32}

OpenService = Callable[..., Awaitable[ServiceClient]]


@pytest.fixture(autouse=True)
def _importable(monkeypatch):
    monkeypatch.syspath_prepend(str(HERE))
    monkeypatch.setenv("PYTHONPATH", str(HERE))


@pytest.fixture(params=["in-process", "local"])
def mode(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
async def open_service(mode: str) -> AsyncIterator[OpenService]:
    """A fresh counter service of the given config, in ``mode``; its client."""
    clients: list[ServiceClient] = []
    async with service_scope() as pool:

        async def open_(**config: Any) -> ServiceClient:
            if mode == "in-process":
                client = ServiceClient.in_process(build_app(FACTORY, config), retry=FAST)
            else:
                server = await pool.server(FACTORY, config)
                client = ServiceClient.remote(server.url, retry=FAST)
            clients.append(client)
            return client

        yield open_
        for client in clients:
            await client.aclose()


async def sessions(client: ServiceClient) -> dict[str, int]:
    return (await client.health())["sessions"]


async def eventually(condition: Callable[[], Awaitable[bool]], what: str) -> None:
    """Wait (at most 10 s) until ``await condition()`` holds."""
    for _ in range(400):
        if await condition():
            return
        await asyncio.sleep(0.025)
    pytest.fail(f"never happened: {what}")


# -- the server conventions --------------------------------------------------------------------
async def test_sessions_keep_their_state_apart_over_one_shared_catalogue(open_service) -> None:
    client = await open_service(max_sessions=8)
    a, b = await ServiceSession.open(client), await ServiceSession.open(client)
    assert a.id != b.id
    reset_a, reset_b = await a.reset({"start": "one"}), await b.reset({"start": "two"})
    assert (reset_a["count"], reset_b["count"]) == (1, 2)
    assert reset_a["pid"] == reset_b["pid"]  # one process serves both
    assert reset_a["catalogue_id"] == reset_b["catalogue_id"]  # over one catalogue
    assert (await a.step({"add": 5}))["count"] == 6
    assert (await b.step({}))["count"] == 3
    health = await client.health()
    assert health["status"] == "ok" and health["service"] == "counter"
    assert health["sessions"] == {"open": 2, "max": 8, "created": 2, "closed": 0, "reaped": 0}
    await a.aclose()
    await b.aclose()
    assert (await sessions(client))["open"] == 0 and (await sessions(client))["closed"] == 2
    assert (await client.get("/closed"))["closed"] == 2  # the backend's close ran


async def test_an_unknown_or_closed_session_answers_a_clear_404(open_service) -> None:
    client = await open_service()
    with pytest.raises(EnvServiceError, match="no session nope .*never opened here") as caught:
        await client.post("/sessions/nope/step", {})
    assert caught.value.status == 404
    session = await ServiceSession.open(client)
    await client.request("DELETE", session.path)  # closed behind the handle's back
    with pytest.raises(EnvServiceError, match=f"no session {session.id} .*or it was closed"):
        await session.step({})
    await session.aclose()  # already gone counts as released
    await session.aclose()
    assert session.closed


async def test_the_session_cap_answers_429_naming_the_cap(open_service) -> None:
    client = await open_service(max_sessions=2)
    first = await ServiceSession.open(client)
    await ServiceSession.open(client)
    with pytest.raises(
        EnvServiceError,
        match=r"HTTP 429.*session cap reached: 2 sessions .* max_sessions=2\..*"
        r"--option max_sessions=4",
    ) as caught:
        await ServiceSession.open(client)
    assert caught.value.status == 429
    await first.aclose()
    assert (await ServiceSession.open(client)).id


async def test_idle_sessions_are_reaped_busy_ones_are_not(open_service) -> None:
    client = await open_service(idle_timeout=0.5)
    idle, busy = await ServiceSession.open(client), await ServiceSession.open(client)
    await busy.reset()
    assert (await busy.step({"sleep": 1.5}))["count"] == 1  # longer than the idle timeout
    assert (await busy.step({}))["count"] == 2  # it was not reaped while busy

    async def reaped() -> bool:
        return (await sessions(client))["reaped"] >= 1

    await eventually(reaped, "an idle session is reaped")
    with pytest.raises(
        EnvServiceError, match=rf"session {idle.id} was reaped for idleness .*idle_timeout=0\.5s"
    ) as caught:
        await idle.step({})
    assert caught.value.status == 404
    assert (await client.get("/closed"))["closed"] >= 1


async def test_request_bodies_are_capped_and_must_be_objects(open_service) -> None:
    client = await open_service(max_body_bytes=4096)
    session = await ServiceSession.open(client)
    with pytest.raises(EnvServiceError, match=r"HTTP 413.*the limit is max_body_bytes=4096"):
        await session.step({"add": 1, "pad": "x" * 5000})
    with pytest.raises(EnvServiceError, match=r"HTTP 422.*JSON object"):
        await client.request("POST", f"{session.path}/step", json=[1, 2])
    await session.reset()
    assert (await session.step({"add": 2, "pad": "x" * 1000}))["count"] == 2


async def test_stopping_the_server_closes_every_session() -> None:
    app = build_app(FACTORY, {})
    async with app.router.lifespan_context(app):
        client = ServiceClient.in_process(app, retry=FAST)
        for _ in range(3):
            await ServiceSession.open(client)
    assert app.state.sessions.backend.closed == 3
    assert (await sessions(client))["open"] == 0
    await client.aclose()


# -- an env holding one session per episode ----------------------------------------------------
class CounterEnv(TextEnv):
    """Count to 3: the action ``add K`` adds K to the session's counter."""

    def __init__(self, service: str | None = None, render_mode: str | None = None) -> None:
        super().__init__(render_mode)
        self.service = service
        self.client: ServiceClient | None = None
        self.session: ServiceSession | None = None

    async def _areset(self, *, seed: int | None, options: dict[str, Any]) -> tuple[str, dict]:
        if self.client is None:
            self.client = await connect(FACTORY, self.service, config=ENV_CONFIG, retry=FAST)
        await self._release()
        self.session = await ServiceSession.open(self.client, {"target": 3})
        self.task = "count"
        body = await self.session.reset({"start": options.get("start", "zero")})
        return f"count {body['count']}", {"task_id": "count", "system_prompt": "add K"}

    async def _astep(self, action: str) -> tuple[str, float, bool, bool, dict]:
        if self.session is None:
            raise RuntimeError("call reset() before step()")
        body = await self.session.step({"add": int(action.removeprefix("add "))})
        if body["done"]:
            await self._release()
        return f"count {body['count']}", float(body["done"]), body["done"], False, {}

    async def _release(self) -> None:
        if self.session is not None:
            session, self.session = self.session, None
            await session.aclose()

    async def aclose(self) -> None:
        await self._release()
        if self.client is not None:
            client, self.client = self.client, None
            await client.aclose()


@pytest.fixture
async def env_service(mode: str) -> AsyncIterator[tuple[str | None, ServiceClient]]:
    """The ``service=`` of CounterEnvs in ``mode`` and a client of the service they share."""
    service = None if mode == "in-process" else "local"
    async with service_scope():
        client = await connect(FACTORY, service, config=ENV_CONFIG, retry=FAST)
        yield service, client
        await client.aclose()


async def test_an_episode_end_releases_the_session(env_service) -> None:
    service, probe = env_service
    before = await sessions(probe)
    env = CounterEnv(service)
    await env.areset(options={"start": "one"})
    assert (await sessions(probe))["open"] == before["open"] + 1
    _, _, terminated, _, _ = await env.astep("add 1")
    assert not terminated
    _, reward, terminated, _, _ = await env.astep("add 1")
    assert terminated and reward == 1.0
    after = await sessions(probe)
    assert after["open"] == before["open"] and after["closed"] == before["closed"] + 1
    await env.aclose()


async def test_aclose_and_a_new_episode_release_the_session(env_service) -> None:
    service, probe = env_service
    before = await sessions(probe)
    env = CounterEnv(service)
    await env.areset()
    await env.areset()  # the first episode's session is released
    assert (await sessions(probe))["open"] == before["open"] + 1
    await env.astep("add 1")
    await env.aclose()  # mid-episode
    after = await sessions(probe)
    assert after["open"] == before["open"] and after["closed"] == before["closed"] + 2


async def test_a_garbage_collected_env_releases_its_session(env_service) -> None:
    service, probe = env_service
    before = await sessions(probe)
    env = CounterEnv(service)
    await env.areset()
    assert (await sessions(probe))["open"] == before["open"] + 1
    del env
    gc.collect()

    async def released() -> bool:
        return (await sessions(probe))["closed"] == before["closed"] + 1

    await eventually(released, "the collected env's session is closed")
    assert (await sessions(probe))["open"] == before["open"]


async def test_a_dead_service_raises_naming_its_url() -> None:
    server = LocalServer(FACTORY, ENV_CONFIG).start()
    env = CounterEnv(server.url)
    await env.areset()
    server.kill()
    with pytest.raises(EnvServiceError, match=f"{server.url}/sessions/.*/step"):
        await env.astep("add 1")
    with pytest.raises(EnvServiceError, match=server.url):
        await env.aclose()


def test_sessions_left_open_at_interpreter_exit_raise_nothing(tmp_path) -> None:
    script = tmp_path / "leak.py"
    script.write_text(
        "import asyncio, sys\n"
        f"sys.path.insert(0, {str(HERE)!r})\n"
        "from agentenv.launch import connect\n"
        "from agentenv.sessions import ServiceSession\n"
        "kept = []\n"
        "async def main():\n"
        f"    client = await connect({FACTORY!r}, 'local')\n"
        "    kept.append(await ServiceSession.open(client))\n"
        "    await ServiceSession.open(client)  # dropped while the loop runs\n"
        "asyncio.run(main())\n"
        "kept.clear()  # collected after its loop closed\n"
    )
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr and "Exception ignored" not in done.stderr, done.stderr
