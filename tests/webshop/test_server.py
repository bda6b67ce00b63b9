"""The shop service over real HTTP on 127.0.0.1 (a uvicorn subprocess): sessions that never see
each other's pages, request errors, and WebShopEnv in the local and remote modes."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from agentenv import EnvServiceError
from agentenv.envs.webshop import expert
from agentenv.envs.webshop.catalog import CatalogConfig, generate_catalog
from agentenv.envs.webshop.env import SERVICE_FACTORY, WebShopEnv
from agentenv.envs.webshop.search import catalog_digest
from agentenv.envs.webshop.server import MAX_BODY_BYTES, goal_body
from agentenv.envs.webshop.tasks import GoalConfig, goal_by_id
from agentenv.launch import LocalServer, service_scope
from agentenv.service import RetryPolicy, ServiceClient
from agentenv.sessions import ServiceSession

FAST = RetryPolicy(timeout=10.0, retries=1, backoff=0.01)
CONFIG = WebShopEnv().service_config


def goal(k: int):
    return goal_by_id(CatalogConfig(), GoalConfig(), f"test-{k}")


@pytest.fixture(scope="module")
def server():
    running = LocalServer(SERVICE_FACTORY, CONFIG).start()
    yield running
    running.stop()


@pytest.fixture
async def client(server):
    remote = ServiceClient.remote(server.url, retry=FAST)
    yield remote
    await remote.aclose()


async def test_catalog_route_names_the_served_catalogue(client) -> None:
    body = await client.get("/catalog")
    assert body["digest"] == catalog_digest(generate_catalog(CatalogConfig()))
    assert body["num_products"] == 1000 and body["config"]["num_products"] == 1000


async def test_sessions_never_see_each_others_pages(client) -> None:
    a, b = await ServiceSession.open(client), await ServiceSession.open(client)
    ga, gb = goal(0), goal(1)
    await a.reset({"goal": goal_body(ga)})
    start_b = await b.reset({"goal": goal_body(gb)})
    moved = await a.step({"action": "search[usb cable]"})
    assert moved["valid"] and moved["page"]["kind"] == "results"
    seen = await b.step({"action": "click[next >]"})  # b is still on its start page
    assert not seen["valid"] and seen["page"] == start_b["page"]
    assert gb.instruction in seen["observation"] and ga.instruction not in seen["observation"]
    bought = await a.step({"action": f"click[{moved['available_actions']['clickables'][-1]}]"})
    done = await a.step({"action": "click[buy now]"})
    assert bought["valid"] and done["done"] and "breakdown" in done
    after = await b.step({"action": f"search[{gb.name}]"})
    assert after["valid"] and not after["done"]
    await a.aclose()
    await b.aclose()


async def test_concurrent_sessions_stay_apart(client) -> None:
    goals = [goal(k) for k in range(16)]
    sessions = [await ServiceSession.open(client) for _ in goals]

    async def shop(session: ServiceSession, g) -> list[str]:
        await session.reset({"goal": goal_body(g)})
        pages = []
        for action in (f"search[{g.name}]", f"click[{g.asin.lower()}]", "click[description]"):
            body = await session.step({"action": action})
            assert body["valid"], body["observation"][:200]
            assert g.instruction in body["observation"]
            pages.append(body["page"]["asin"])
        return pages

    seen = await asyncio.gather(*(shop(s, g) for s, g in zip(sessions, goals, strict=True)))
    for g, pages in zip(goals, seen, strict=True):
        assert pages == ["", g.asin, g.asin]
    for session in sessions:
        await session.aclose()


async def test_malformed_requests_are_http_errors(client, server) -> None:
    session = await ServiceSession.open(client)
    async with httpx.AsyncClient(base_url=server.url) as raw:
        early = await raw.post(f"{session.path}/step", json={"action": "search[x]"})
        assert early.status_code == 409
        bad_goal = await raw.post(f"{session.path}/reset", json={"goal": {"id": "x"}})
        assert bad_goal.status_code == 422 and "invalid goal" in bad_goal.text
        await session.reset({"goal": goal_body(goal(0))})
        assert (await raw.post(f"{session.path}/step", json={"action": 3})).status_code == 422
        huge = await raw.post(f"{session.path}/step", content=b"{" + b" " * MAX_BODY_BYTES + b"}")
        assert huge.status_code == 413
        assert (await raw.post("/sessions/nope/step", json={})).status_code == 404
    body = await session.step({"action": "click[" + "[" * 500})
    assert not body["valid"] and body["observation"].startswith("Invalid action:")
    await session.aclose()


@pytest.mark.parametrize("mode", ["local", "url"])
async def test_env_over_http(server, mode) -> None:
    service = "local" if mode == "local" else server.url
    async with service_scope():
        env = WebShopEnv(service=service)
        try:
            wins = 0
            for task_id in env.task_ids("test")[:20]:
                observation, info = await env.areset(options={"task": task_id})
                messages = [
                    {"role": "system", "content": info["system_prompt"]},
                    {"role": "user", "content": observation},
                ]
                while True:
                    action = expert.solve(env.task, messages)
                    observation, _, terminated, truncated, info = await env.astep(action)
                    messages += [{"role": "assistant", "content": action},
                                 {"role": "user", "content": observation}]  # fmt: skip
                    if terminated or truncated:
                        wins += info["success"]
                        break
            assert wins >= 19
        finally:
            await env.aclose()


async def test_a_service_of_another_catalogue_is_refused(server) -> None:
    env = WebShopEnv(service=server.url, num_products=500)
    with pytest.raises(EnvServiceError, match="serves another catalogue"):
        await env.areset(options={"task": "test-0"})
    await env.aclose()
