"""The search service: the Search-R1 /retrieve protocol and its limits, query sanitising, the
index cache, corpus files, and retrieval quality for the expert's queries."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time

import httpx
import pytest

from agentenv.envs.search.expert import _queries
from agentenv.envs.search.server import create_app, sanitize_query
from agentenv.envs.search.tasks import (
    RELATIONS,
    DataFormatError,
    WorldConfig,
    build_world,
    save_corpus,
)
from agentenv.launch import LocalServer
from agentenv.service import EnvServiceError, ServiceClient, shared_app
from tests.http_probe import declare_body

FACTORY = "agentenv.envs.search.server:create_app"
ODD_QUERIES = [
    "",
    "   ",
    "AND OR NOT",
    "title:foo body:[a TO z]",
    '"unclosed phrase',
    "((( ))) {} [] ^2 ~3 *? \\",
    "-minus +plus !bang",
    "ünïcødé 東京 🚀 Ελλάδα",
    "\x00\x01 control characters",
    "x" * 100_000,
    " ".join(f"w{i}" for i in range(5000)),
]


@pytest.fixture(scope="module")
def client() -> ServiceClient:
    return ServiceClient.in_process(shared_app(FACTORY, {}))


async def retrieve(client: ServiceClient, queries: list[str], **kwargs) -> list:
    return (await client.post("/retrieve", json={"queries": queries, **kwargs}))["result"]


async def test_retrieve_with_scores_has_search_r1_shape(client: ServiceClient) -> None:
    names = build_world(WorldConfig()).names
    result = await retrieve(client, names[:3], topk=4, return_scores=True)
    assert len(result) == 3
    for hits, name in zip(result, names[:3], strict=True):
        assert 1 <= len(hits) <= 4
        for hit in hits:
            assert set(hit) == {"document", "score"}
            assert set(hit["document"]) == {"id", "contents"}
            assert isinstance(hit["score"], float)
        scores = [h["score"] for h in hits]
        assert scores == sorted(scores, reverse=True)
        assert hits[0]["document"]["contents"].startswith(f'"{name}"\n')


async def test_retrieve_without_scores_returns_bare_documents(client: ServiceClient) -> None:
    result = await retrieve(client, ["mayor population", "founder"], topk=2)
    assert [len(r) for r in result] == [2, 2]
    assert all(set(doc) == {"id", "contents"} for hits in result for doc in hits)


async def test_batched_equals_one_by_one_and_topk_defaults(client: ServiceClient) -> None:
    queries = ["born city", "headquarters", "capital currency", "studied at"]
    batched = await retrieve(client, queries, topk=5, return_scores=True)
    single = [(await retrieve(client, [q], topk=5, return_scores=True))[0] for q in queries]
    assert batched == single
    assert [len(r) for r in await retrieve(client, queries)] == [3] * 4
    assert await retrieve(client, []) == []
    assert await retrieve(client, ["capital"], topk=0) == [[]]


async def test_any_query_text_is_valid(client: ServiceClient) -> None:
    result = await retrieve(client, ODD_QUERIES, topk=3, return_scores=True)
    assert len(result) == len(ODD_QUERIES)
    assert result[0] == result[1] == []
    assert all(len(hits) <= 3 for hits in result)


def test_sanitize_query() -> None:
    assert sanitize_query("Who FOUNDED Zorvex-Labs? AND who founded it") == (
        "who founded zorvex labs and it"
    )
    assert sanitize_query("x" * 50 + " ok") == "ok"
    assert len(sanitize_query(" ".join(f"w{i}" for i in range(500))).split()) == 64


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ('{"queries": "not a list"}', "queries:"),
        ('{"queries": ["a", 7]}', "queries.1:"),
        ('{"queries": ["a"], "topk": -1}', "topk:"),
        ('{"topk": 3}', "exactly one of 'queries'"),
        ('{"query": "a", "queries": ["a"]}', "exactly one of 'queries'"),
        ('{"query": ["a"]}', "query:"),
        ('{"queries": ["a"], "topk": NaN}', "topk:"),
        ('{"queries": ["a"], "topk": Infinity}', "topk:"),
        ('{"queries": ["a"], "topk": -Infinity}', "topk:"),
        ('{"queries": ["a"], "topk": 1e400}', "topk:"),
        ('{"queries": ["a"], "topk": 2.5}', "topk:"),
        ('{"queries": ["a"], "topk": 3.0}', "topk:"),
        ('{"queries": ["a"], "topk": "3"}', "topk:"),
        ('{"queries": ["a"], "topk": true}', "topk:"),
        ('{"queries": ["a"], "return_scores": "yes"}', "return_scores:"),
        (
            '{"queries": ["a"], "topk": 100000000000000000000000000000}',
            "topk=100000000000000000000000000000 is over the limit max_topk=1000",
        ),
        ('{"queries": ["a"]', "body:"),
        ("", "body"),
    ],
)
async def test_malformed_requests_are_422_naming_the_field(body: str, field: str) -> None:
    transport = httpx.ASGITransport(app=shared_app(FACTORY, {}))
    async with httpx.AsyncClient(transport=transport, base_url="http://search") as raw:
        response = await raw.post(
            "/retrieve", content=body, headers={"content-type": "application/json"}
        )
    assert response.status_code == 422, response.text
    assert field in response.json()["detail"]


@pytest.fixture(scope="module")
def small_limits() -> ServiceClient:
    """A service with low limits over a small world."""
    limits = {"max_queries": 5, "max_topk": 20, "max_hits": 40, "max_response_bytes": 5000}
    return ServiceClient.in_process(create_app(num_entities=100, **limits))


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        (
            {"queries": ["born"] * 6},
            413,
            "6 queries in one request is over the limit max_queries=5",
        ),
        ({"queries": ["born"], "topk": 21}, 422, "topk=21 is over the limit max_topk=20"),
        (
            {"queries": ["born"] * 3, "topk": 20},
            413,
            "= 60 documents is over the limit max_hits=40",
        ),
        ({"queries": ["born city"] * 5, "topk": 8}, 413, "max_response_bytes=5000 after 2 of"),
    ],
)
async def test_requests_over_a_limit_name_it(small_limits, body, status, message) -> None:
    with pytest.raises(EnvServiceError, match=f"HTTP {status}: .*{re.escape(message)}"):
        await small_limits.post("/retrieve", json=body)
    within = await small_limits.post("/retrieve", json={"queries": ["born"] * 5, "topk": 2})
    assert [len(hits) for hits in within["result"]] == [2] * 5


async def test_the_35kb_request_is_refused_before_any_search(client: ServiceClient) -> None:
    """2,000 queries x topk 1,000 once made a 558 MB answer; now it is a short 413."""
    body = {"queries": [f"born city {i}" for i in range(2000)], "topk": 1000}
    assert 30_000 < len(json.dumps(body)) < 40_000
    served = (await client.get("/stats"))["served"]
    with pytest.raises(EnvServiceError, match=r"HTTP 413: .*2000000 documents .*max_hits=65536"):
        await client.post("/retrieve", json=body)
    assert (await client.get("/stats"))["served"] == served


async def test_documents_by_id(small_limits) -> None:
    world = build_world(WorldConfig(num_entities=100))
    ids = [world.docs[3].id, "no-such-doc", world.docs[0].id]
    result = (await small_limits.post("/documents", json={"ids": ids}))["result"]
    assert result == [
        {"id": ids[0], "contents": world.docs[3].contents},
        None,
        {"id": ids[2], "contents": world.docs[0].contents},
    ]
    with pytest.raises(
        EnvServiceError, match="6 ids in one request is over the limit max_queries=5"
    ):
        await small_limits.post("/documents", json={"ids": ["a"] * 6})
    with pytest.raises(EnvServiceError, match="HTTP 422: .*ids"):
        await small_limits.post("/documents", json={"ids": [1.5]})
    stats = await small_limits.get("/stats")
    assert stats["limits"] == {
        "max_body_bytes": 32 * 2**20,
        "max_queries": 5,
        "max_topk": 20,
        "max_hits": 40,
        "max_response_bytes": 5000,
    }


def test_limit_knobs_are_checked() -> None:
    with pytest.raises(ValueError, match="max_topk"):
        create_app(num_entities=100, topk=30, max_topk=20)
    with pytest.raises(ValueError, match="max_hits"):
        create_app(num_entities=100, max_hits=0)


async def test_stats_and_health(client: ServiceClient) -> None:
    world = build_world(WorldConfig())
    stats = await client.get("/stats")
    assert stats["num_docs"] == len(world.docs)
    assert stats["corpus_sha256"] == world.fingerprint
    assert stats["world"] == {
        "seed": 0,
        "num_entities": 2000,
        "distractors": 0.5,
        "test_fraction": 0.2,
    }
    assert stats["source"] == "generated"
    assert (await client.health())["status"] == "ok"


def test_index_is_built_once_and_cached(tmp_path) -> None:
    config = {"num_entities": 200, "seed": 11, "cache_dir": str(tmp_path)}
    first = create_app(**config).state.index
    second = create_app(**config).state.index
    assert first.path == second.path and first.meta == second.meta
    assert [p.name for p in (tmp_path / "search").iterdir()] == [first.path.name]
    assert first.path.name.startswith(
        build_world(WorldConfig(seed=11, num_entities=200)).fingerprint
    )


async def test_serves_a_corpus_file(tmp_path) -> None:
    docs = build_world(WorldConfig(seed=5, num_entities=100)).docs
    path = tmp_path / "corpus.jsonl"
    save_corpus(docs, path)
    app = create_app(corpus=str(path), cache_dir=str(tmp_path / "cache"))
    client = ServiceClient.in_process(app)
    stats = await client.get("/stats")
    assert stats["num_docs"] == len(docs) and stats["source"] == str(path)
    assert stats["world"] is None
    (hits,) = await retrieve(client, [docs[0].title], topk=1)
    assert hits == [{"id": docs[0].id, "contents": docs[0].contents}]
    await client.aclose()


GOOD_ROW = json.dumps({"id": "1", "contents": '"A"\nx'}).encode() + b"\n"


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (b'{"id": "2", "contents": 3}\n', r"corpus\.jsonl:3: field 'contents'"),
        (b'{"id": "2", "contents": "\xff\xfe"}\n', r"corpus\.jsonl:3: not valid UTF-8"),
        (b"not json\n", r"corpus\.jsonl:3: invalid JSON"),
        (GOOD_ROW, r"corpus\.jsonl:3: duplicate document id '1' \(first at line 1\)"),
        (b'{"id": 1, "contents": "y"}\n', r"corpus\.jsonl:3: duplicate document id '1'"),
    ],
)
def test_corrupt_corpus_names_the_line_and_leaves_nothing_in_the_cache(
    tmp_path, bad: bytes, message: str
) -> None:
    path = tmp_path / "corpus.jsonl"
    other = json.dumps({"id": "7", "contents": '"B"\ny'}).encode() + b"\n"
    path.write_bytes(GOOD_ROW + other + bad + other.replace(b'"7"', b'"8"'))
    with pytest.raises(DataFormatError, match=message):
        create_app(corpus=str(path), cache_dir=str(tmp_path / "cache"))
    assert list((tmp_path / "cache" / "search").iterdir()) == []


def test_missing_corpus_is_named(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="missing.jsonl"):
        create_app(corpus=str(tmp_path / "missing.jsonl"))


def test_a_killed_build_leaves_a_folder_the_next_start_removes(tmp_path) -> None:
    """SIGKILL cannot be caught: the build folder it leaves is removed by the next start."""
    path = tmp_path / "corpus.jsonl"
    save_corpus(build_world(WorldConfig(seed=9, num_entities=40_000)).docs, path)
    cache = tmp_path / "cache"
    code = f"from agentenv.envs.search.server import create_app; create_app({str(path)!r}, cache_dir={str(cache)!r})"
    builder = subprocess.Popen([sys.executable, "-c", code])
    try:
        while not list(cache.glob("search/.*")) and builder.poll() is None:
            time.sleep(0.01)
    finally:
        builder.kill()
        builder.wait()
    assert builder.returncode == -signal.SIGKILL, "the build ended before it could be killed"
    (orphan,) = list(cache.glob("search/.*"))
    app = create_app(str(path), cache_dir=str(cache))
    assert not orphan.exists()
    assert [p.name for p in (cache / "search").iterdir()] == [app.state.index.path.name]


async def test_expert_queries_find_the_gold_document_in_top5(client: ServiceClient) -> None:
    """For every hop of 300 tasks, the expert's first query ranks that hop's gold doc in the top 5."""
    world = build_world(WorldConfig())
    index_of = {name: i for i, name in enumerate(world.names)}
    queries, gold = [], []
    for task in world.tasks("test", 300):
        entity = index_of[task.start]
        for key, doc_id in zip(task.chain, task.gold_doc_ids, strict=True):
            relation = RELATIONS[key]
            queries.append(_queries(world.names[entity], relation)[0])
            gold.append(doc_id)
            if relation.target:
                entity = world.facts[key][entity]
    result = await retrieve(client, queries, topk=5)
    found = [g in {d["id"] for d in hits} for g, hits in zip(gold, result, strict=True)]
    assert len(found) > 700
    assert sum(found) / len(found) >= 0.99


async def test_http_round_trip_is_plain_json(client: ServiceClient) -> None:
    """The wire format is what a Search-R1 client posts and parses."""
    transport = httpx.ASGITransport(app=shared_app(FACTORY, {}))
    async with httpx.AsyncClient(transport=transport, base_url="http://search") as raw:
        response = await raw.post(
            "/retrieve", json={"queries": ["capital"], "topk": 1, "return_scores": True}
        )
    assert response.headers["content-type"] == "application/json"
    payload = response.json()
    assert list(payload) == ["result"] and len(payload["result"][0]) == 1


@pytest.fixture(scope="module")
def http_server():
    """A uvicorn server on 127.0.0.1 over a small world, with a 4,000-byte body limit."""
    with LocalServer(FACTORY, {"num_entities": 100, "max_body_bytes": 4000}) as server:
        yield server


def test_large_bodies_are_refused_before_they_are_read(http_server) -> None:
    status, body = declare_body(http_server.url, "/retrieve", 10**12)
    assert status == 413
    assert json.loads(body)["detail"] == (
        "request body too large: 1000000000000 bytes (Content-Length); "
        "the limit is max_body_bytes=4000"
    )
    chunks = [b'{"queries": [', *[b'"born", ' * 200] * 3, b'"born"]}']
    response = httpx.post(
        f"{http_server.url}/retrieve",
        content=iter(chunks),  # chunked, without a Content-Length
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 413
    assert "more than 4000 bytes" in response.json()["detail"]
    response = httpx.post(f"{http_server.url}/retrieve", json={"queries": ["born"] * 400})
    assert response.status_code == 200 and len(response.json()["result"]) == 400


def test_single_query_dialect_answers_as_a_batch_of_one(http_server) -> None:
    """``{"query": str}`` (a one-query dialect some clients send) gets the answer of
    ``{"queries": [str]}``, never a 422 an agent would read as a search result."""
    single = httpx.post(f"{http_server.url}/retrieve", json={"query": "born", "topk": 2})
    batch = httpx.post(f"{http_server.url}/retrieve", json={"queries": ["born"], "topk": 2})
    assert single.status_code == 200 and single.json() == batch.json()
    assert len(single.json()["result"]) == 1 and len(single.json()["result"][0]) == 2


def test_skyrl_gym_search_tool_request(http_server) -> None:
    """SkyRL-gym's ``search`` tool (skyrl_gym/tools/search.py) posts Search-R1's request with
    scores and reads ``result[i][j]["document"]["contents"]``; it gets what it expects."""
    payload = {"queries": ["Where was the founder born?"], "topk": 3, "return_scores": True}
    headers = {"Content-Type": "application/json", "Accept": "application/json"}
    response = httpx.post(f"{http_server.url}/retrieve", json=payload, headers=headers)
    assert response.status_code == 200
    (retrieval,) = response.json()["result"]
    text = "".join(
        f"Doc {i + 1}: {item['document']['contents'].strip()}\n" for i, item in enumerate(retrieval)
    )
    assert len(retrieval) == 3 and text.count("Doc ") == 3
