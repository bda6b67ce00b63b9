"""Coalescing of concurrent /retrieve requests: the same answers as one by one, in fewer index
calls, with each request's errors its own."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from agentenv.envs.search.expert import _queries
from agentenv.envs.search.server import Coalescer, create_app
from agentenv.envs.search.tasks import RELATIONS, WorldConfig, build_world

MALFORMED = [
    '{"queries": "not a list"}',
    '{"queries": ["a", 7]}',
    '{"queries": ["a"], "topk": NaN}',
    '{"queries": ["a"], "topk": 3.0}',
    '{"topk": 3}',
    '{"queries": ["a"]',
    "",
    "[1, 2]",
    '{"queries": ["a"], "topk": 100000}',
]


@pytest.fixture(scope="module")
def apps() -> dict[bool, object]:
    return {coalesce: create_app(num_entities=300, coalesce=coalesce) for coalesce in (True, False)}


def queries() -> list[str]:
    """The expert's queries for every relation of 10 entities, and some odd ones."""
    names = build_world(WorldConfig(num_entities=300)).names[:10]
    found = [
        q for name in names for relation in RELATIONS.values() for q in _queries(name, relation)
    ]
    return [*found, "", "AND OR", "born city", "ünïcødé 東京"]


async def post_all(app: object, bodies: list[dict], concurrent: bool) -> list[httpx.Response]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://search") as client:
        if concurrent:
            return list(await asyncio.gather(*(client.post("/retrieve", json=b) for b in bodies)))
        return [await client.post("/retrieve", json=b) for b in bodies]


async def test_concurrent_single_requests_answer_as_sequential_ones(apps) -> None:
    bodies = [
        {"queries": [q], "topk": 1 + i % 4, "return_scores": i % 2 == 0}
        for i, q in enumerate(queries())
    ]
    app = apps[True]
    before = app.state.coalescer.batches
    concurrent = await post_all(app, bodies, concurrent=True)
    batches = app.state.coalescer.batches - before
    sequential = await post_all(app, bodies, concurrent=False)
    baseline = await post_all(apps[False], bodies, concurrent=False)
    assert [r.status_code for r in concurrent] == [200] * len(bodies)
    assert [r.content for r in concurrent] == [r.content for r in sequential]
    assert [r.content for r in concurrent] == [r.content for r in baseline]
    assert batches < len(bodies) / 4, f"{batches} index calls for {len(bodies)} requests"


async def test_a_failing_request_fails_alone(apps) -> None:
    """A request whose answer is over max_response_bytes gets its 413; its batch-mates their
    documents."""
    app = create_app(num_entities=300, max_response_bytes=3000)
    bodies = [{"queries": ["born city"] * 8, "topk": 5}, *({"queries": [q]} for q in queries())]
    responses = await post_all(app, bodies, concurrent=True)
    assert responses[0].status_code == 413
    assert "max_response_bytes=3000" in responses[0].json()["detail"]
    assert {r.status_code for r in responses[1:]} == {200}


@pytest.mark.parametrize("body", MALFORMED)
async def test_errors_are_those_of_the_uncoalesced_path(apps, body: str) -> None:
    replies = []
    for coalesce in (True, False):
        transport = httpx.ASGITransport(app=apps[coalesce])
        async with httpx.AsyncClient(transport=transport, base_url="http://search") as client:
            replies.append(
                await client.post(
                    "/retrieve", content=body, headers={"content-type": "application/json"}
                )
            )
    assert replies[0].status_code == replies[1].status_code >= 400
    assert replies[0].json() == replies[1].json()


async def test_coalescer_batches_by_weight_and_keeps_exceptions_apart() -> None:
    calls: list[int] = []

    def run(jobs: list[int]) -> list[int | Exception]:
        calls.append(jobs)
        if 5 in jobs:
            raise RuntimeError("the whole batch failed")
        return [ValueError("three") if job == 3 else job * 10 for job in jobs]

    coalescer: Coalescer[int, int] = Coalescer(run, max_weight=4)
    results = await asyncio.gather(
        *(coalescer.submit(job, weight=2) for job in range(6)), return_exceptions=True
    )
    assert results[:3] == [0, 10, 20]
    assert isinstance(results[3], ValueError) and str(results[3]) == "three"
    assert [type(r) for r in results[4:]] == [RuntimeError, RuntimeError]
    assert calls == [[0, 1], [2, 3], [4, 5]] and coalescer.batches == 3
    with pytest.raises(ValueError, match="max_weight"):
        Coalescer(run, max_weight=0)


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_a_batch_searched_over_threads_answers_as_one_by_one(apps, threads, monkeypatch) -> None:
    index = apps[True].state.index
    requests = [(q, 1 + i % 5) for i, q in enumerate(queries() * 3)]
    one_by_one = [index.search(q, k) for q, k in requests]
    monkeypatch.setattr(index, "threads", threads)
    assert index.search_many(requests) == one_by_one
    assert index.search_many(requests[:1]) == one_by_one[:1] and index.search_many([]) == []
