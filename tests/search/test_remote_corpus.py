"""A remote search service given with ``corpus=`` or ``qa=`` must hold that corpus: checked on
first use against real uvicorn servers on 127.0.0.1."""

from __future__ import annotations

import pytest

from agentenv import EnvServiceError
from agentenv.envs.search.env import SERVICE_FACTORY, SearchEnv
from agentenv.envs.search.tasks import (
    Task,
    WorldConfig,
    build_world,
    file_sha256,
    save_corpus,
    save_qa,
)
from agentenv.launch import LocalServer

WORLD_A = WorldConfig(seed=21, num_entities=100)
WORLD_B = WorldConfig(seed=22, num_entities=100)


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Corpus and QA files of two small worlds (QA of A with and without gold document ids)."""
    folder = tmp_path_factory.mktemp("worlds")
    paths = {}
    for name, config in (("a", WORLD_A), ("b", WORLD_B)):
        world = build_world(config)
        paths[f"corpus_{name}"] = str(folder / f"corpus_{name}.jsonl")
        save_corpus(world.docs, paths[f"corpus_{name}"])
        paths[f"qa_{name}"] = str(folder / f"qa_{name}.jsonl")
        save_qa(world.tasks("test", 40), paths[f"qa_{name}"])
    tasks = build_world(WORLD_A).tasks("test", 5)
    paths["qa_a_no_gold"] = str(folder / "qa_a_no_gold.jsonl")
    save_qa([Task(t.id, t.question, t.golden_answers) for t in tasks], paths["qa_a_no_gold"])
    paths["qa_other_ids"] = str(folder / "qa_other_ids.jsonl")
    save_qa([Task("q", "Who?", ("Ann",), gold_doc_ids=("wiki-1",))], paths["qa_other_ids"])
    return paths


@pytest.fixture(scope="module")
def server_b(files):
    """A server of world B's corpus file."""
    with LocalServer(SERVICE_FACTORY, {"corpus": files["corpus_b"]}) as server:
        yield server


@pytest.fixture(scope="module")
def server_a(files):
    with LocalServer(SERVICE_FACTORY, {"corpus": files["corpus_a"]}) as server:
        yield server


async def test_a_server_of_another_corpus_file_is_refused(files, server_b) -> None:
    env = SearchEnv(service=server_b.url, corpus=files["corpus_a"], qa=files["qa_a"])
    with pytest.raises(EnvServiceError, match="serves another corpus") as caught:
        await env.areset(seed=0)
    message = str(caught.value)
    assert caught.value.url == server_b.url and server_b.url in message
    assert file_sha256(files["corpus_a"]) in message and file_sha256(files["corpus_b"]) in message
    await env.aclose()


async def test_a_server_of_the_same_corpus_file_is_used(files, server_a) -> None:
    env = SearchEnv(service=server_a.url, corpus=files["corpus_a"], qa=files["qa_a"])
    observation, info = await env.areset(seed=0)
    assert observation.startswith("Question: ")
    observation, *_ = await env.astep("<search> born </search>")
    assert observation.startswith("<information>Doc 1")
    await env.aclose()


async def test_qa_alone_checks_the_gold_documents_of_its_rows(files, server_a, server_b) -> None:
    """World B uses world A's id scheme, so every gold id exists there: the documents' text
    gives it away."""
    wrong = SearchEnv(service=server_b.url, qa=files["qa_a"])
    with pytest.raises(EnvServiceError, match=r"gold documents of only \d+ of 32") as caught:
        await wrong.areset(seed=0)
    assert caught.value.url == server_b.url
    elsewhere = SearchEnv(service=server_b.url, qa=files["qa_other_ids"])
    with pytest.raises(EnvServiceError, match="lacks 1 of the 1 gold documents"):
        await elsewhere.areset(seed=0)
    right = SearchEnv(service=server_a.url, qa=files["qa_a"])
    _, info = await right.areset(seed=0)
    assert info["task_id"].startswith("test-")
    await right.aclose()


async def test_qa_rows_without_gold_ids_cannot_be_checked(files, server_b) -> None:
    """Documented limitation: nothing in such a QA file names a document to look for."""
    env = SearchEnv(service=server_b.url, qa=files["qa_a_no_gold"])
    _, info = await env.areset(seed=0)
    assert info["task_id"].startswith("test-")
    await env.aclose()


async def test_a_service_that_cannot_say_is_named(files) -> None:
    """corpus= with a URL whose server answers no /stats (it is not a search service)."""
    with LocalServer("tests.core.service_app:create_app", {}) as other:
        env = SearchEnv(service=other.url, corpus=files["corpus_a"], qa=files["qa_a"], timeout=5)
        with pytest.raises(EnvServiceError, match=r"cannot check which corpus .*agentenv serve"):
            await env.areset(seed=0)


async def test_an_unreachable_service_is_named_as_unreachable(files) -> None:
    env = SearchEnv(
        service="http://127.0.0.1:9", corpus=files["corpus_a"], qa=files["qa_a"], timeout=1
    )
    with pytest.raises(EnvServiceError, match=r"127\.0\.0\.1:9.*cannot connect") as caught:
        await env.areset(seed=0)
    assert "cannot check which corpus" not in str(caught.value)


async def test_corpus_with_a_url_must_be_a_local_copy(files, server_a, tmp_path) -> None:
    missing = tmp_path / "corpus_on_the_server_only.jsonl"
    env = SearchEnv(service=server_a.url, corpus=missing, qa=files["qa_a"])
    with pytest.raises(FileNotFoundError, match="local copy of the served corpus"):
        await env.areset(seed=0)
