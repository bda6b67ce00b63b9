"""The tool world service over real HTTP on 127.0.0.1 (a uvicorn subprocess): sessions that
never see each other's writes, the request limits, and ToolWorldEnv against it in the local
and remote modes."""

from __future__ import annotations

import asyncio
import json
from dataclasses import asdict

import httpx
import pytest

from agentenv import EnvServiceError
from agentenv.envs.tooluse.world import expert
from agentenv.envs.tooluse.world.db import WorldConfig, build_world
from agentenv.envs.tooluse.world.env import SERVICE_FACTORY, ToolWorldEnv
from agentenv.envs.tooluse.world.server import MAX_BODY_BYTES
from agentenv.launch import LocalServer, service_scope
from agentenv.play import play_episode
from agentenv.service import RetryPolicy, ServiceClient
from agentenv.sessions import ServiceSession

WORLD = build_world(WorldConfig())
FAST = RetryPolicy(timeout=5.0, retries=1, backoff=0.01)


@pytest.fixture(scope="module")
def server():
    running = LocalServer(SERVICE_FACTORY, asdict(WorldConfig())).start()
    yield running
    running.stop()


@pytest.fixture
async def client(server):
    remote = ServiceClient.remote(server.url, retry=FAST)
    yield remote
    await remote.aclose()


def delivered_order() -> str:
    return WORLD.query("SELECT order_id FROM orders WHERE status = 'delivered' LIMIT 1")[0][0]


async def test_sessions_never_see_each_others_writes(client) -> None:
    a, b = await ServiceSession.open(client), await ServiceSession.open(client)
    order = delivered_order()
    refund = {"name": "refund_order", "arguments": {"order_id": order, "reason": "damaged"}}
    done = await a.step(refund)
    assert done["ok"] and done["state"] != WORLD.fingerprint
    look = {"name": "get_order", "arguments": {"order_id": order}}
    assert json.loads((await a.step(look))["content"])["status"] == "refunded"
    seen = await b.step(look)
    assert json.loads(seen["content"])["status"] == "delivered"
    assert seen["state"] == WORLD.fingerprint
    again = await b.step(refund)  # b refunds its own copy: the same change, the same digest
    assert again["state"] == done["state"]
    assert (await a.reset())["state"] == WORLD.fingerprint
    assert json.loads((await a.step(look))["content"])["status"] == "delivered"
    dump = await client.request("POST", f"{b.path}/state", json={"dump": True}, base_url=b.base_url)
    rows = [r for r in dump["tables"]["refunds"] if r[0] == order]
    assert len(rows) == 1 and rows[0][2] == "damaged"
    await a.aclose()
    await b.aclose()


async def test_concurrent_sessions_stay_apart(client) -> None:
    orders = [
        r[0] for r in WORLD.query("SELECT order_id FROM orders WHERE status = 'delivered' LIMIT 16")
    ]
    sessions = [await ServiceSession.open(client) for _ in orders]

    async def refund(session: ServiceSession, order: str) -> list[str]:
        await session.step(
            {"name": "refund_order", "arguments": {"order_id": order, "reason": "damaged"}}
        )
        statuses = []
        for other in orders:
            body = await session.step({"name": "get_order", "arguments": {"order_id": other}})
            statuses.append(json.loads(body["content"])["status"])
        return statuses

    seen = await asyncio.gather(*(refund(s, o) for s, o in zip(sessions, orders, strict=True)))
    for i, statuses in enumerate(seen):
        assert statuses == ["refunded" if j == i else "delivered" for j in range(len(orders))]
    for session in sessions:
        await session.aclose()


async def test_model_mistakes_are_answers_and_malformed_requests_are_http_errors(
    client, server
) -> None:
    session = await ServiceSession.open(client)
    body = await session.step({"name": "drop_tables", "arguments": {}})
    assert body == {"ok": False, "error": body["error"], "state": WORLD.fingerprint}
    assert "unknown tool 'drop_tables'" in body["error"]
    body = await session.step(
        {"name": "get_order", "arguments": {"order_id": "1; DROP TABLE orders; --"}}
    )
    assert not body["ok"] and "no order with id" in body["error"]
    async with httpx.AsyncClient(base_url=server.url) as raw:
        bad = await raw.post(f"{session.path}/step", json={"name": 3})
        assert bad.status_code == 422 and "name" in bad.text
        huge = await raw.post(f"{session.path}/step", content=b"{" + b" " * MAX_BODY_BYTES + b"}")
        assert huge.status_code == 413
        assert (await raw.post("/sessions/nope/step", json={})).status_code == 404
        world = (await raw.get("/world")).json()
    assert world["fingerprint"] == WORLD.fingerprint and len(world["tools"]) == 15
    await session.aclose()


async def test_remote_and_local_modes_play_like_in_process(server) -> None:
    remote, here = ToolWorldEnv(service=server.url, protocol="text"), ToolWorldEnv(protocol="text")
    async with service_scope() as pool:
        local = ToolWorldEnv(service="local", protocol="text")
        for i in range(12):
            task = {"task": f"compositional-{i}"}
            results = [
                await play_episode(env, expert.solve, options=task) for env in (remote, here, local)
            ]
            assert all(r.success for r in results)
            assert results[0].messages == results[1].messages == results[2].messages
        (launched,) = pool.servers
        assert launched.url != server.url
        await local.aclose()
    await remote.aclose()
    await here.aclose()


async def test_a_service_of_another_world_is_refused(server) -> None:
    env = ToolWorldEnv(service=server.url, world_seed=1)
    with pytest.raises(EnvServiceError, match="serves another world"):
        await env.areset(seed=0)
    await env.aclose()


async def test_a_dead_service_raises_and_bad_actions_still_do_not() -> None:
    server = LocalServer(SERVICE_FACTORY, asdict(WorldConfig())).start()
    env = ToolWorldEnv(service=server.url, timeout=2.0, protocol="text")
    await env.areset(options={"task": "test-0"})
    server.stop()
    with pytest.raises(EnvServiceError):
        await env.astep(expert.solve(env.task, [{"role": "system", "content": ""}]))
    observation, *_, info = await env.astep("<tool_call>\n{broken\n</tool_call>")
    assert info["action_valid"] is False and "could not be read" in observation
    await env.aclose()
