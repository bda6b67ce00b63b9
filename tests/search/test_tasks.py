"""The world generator, its tasks and splits, and the public-format loaders."""

from __future__ import annotations

import json
import re

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from agentenv.envs.search.tasks import (
    RELATIONS,
    DataFormatError,
    Doc,
    Task,
    WorldConfig,
    build_world,
    doc_text,
    doc_title,
    load_corpus,
    load_qa,
    save_corpus,
    save_qa,
)

SMALL = WorldConfig(seed=3, num_entities=300)


def test_world_is_a_pure_function_of_its_config() -> None:
    fresh = build_world.__wrapped__
    assert fresh(SMALL).fingerprint == fresh(SMALL).fingerprint
    assert fresh(SMALL).fingerprint != fresh(WorldConfig(seed=4, num_entities=300)).fingerprint
    assert [d.id for d in fresh(SMALL).docs] == [d.id for d in build_world(SMALL).docs]


def test_names_are_unique_and_pronounceable() -> None:
    world = build_world(SMALL)
    assert len(set(world.names)) == len(world.names)
    for name in world.names:
        assert re.fullmatch(r"[A-Z][a-z]+( [A-Z][a-z]+)*", name), name
    titles = [d.title for d in world.docs]
    assert len(set(titles)) == len(titles)


def test_corpus_sizes_follow_the_knobs() -> None:
    none = build_world(WorldConfig(seed=3, num_entities=300, distractors=0.0))
    some = build_world(WorldConfig(seed=3, num_entities=300, distractors=2.0))
    assert len(some.docs) - len(none.docs) == 600
    assert all(d.id.startswith("news-") for d in some.docs[len(none.docs) :])


def test_generator_scales_to_100k_documents() -> None:
    world = build_world.__wrapped__(WorldConfig(num_entities=52_000, distractors=0.3))
    assert len(world.docs) >= 100_000
    assert len({d.id for d in world.docs}) == len(world.docs)


@pytest.mark.parametrize("hops", [1, 2, 3, 4])
def test_gold_documents_state_the_chain(hops: int) -> None:
    """Reading the gold docs in order, with each relation's sentence, yields the answer."""
    world = build_world(SMALL)
    docs = {d.id: d for d in world.docs}
    for k in range(40):
        task = world.task("train", hops, k)
        assert task.hops == len(task.chain) == len(task.gold_doc_ids) == hops
        assert len(set(task.gold_doc_ids)) == hops
        entity = task.start
        for key, doc_id in zip(task.chain, task.gold_doc_ids, strict=True):
            doc = docs[doc_id]
            assert doc.title == entity or doc.title.startswith(f"{entity} (")
            entity = RELATIONS[key].extract(doc_text(doc.contents))
        assert entity == task.golden_answers[0]
        assert task.question.startswith(("What is", "Who is")) and task.start in task.question
        assert world.task_by_id(task.id) == task


def test_splits_are_disjoint_and_deterministic() -> None:
    world = build_world(SMALL)
    train = {t.start for t in world.tasks("train", 300)}
    test = {t.start for t in world.tasks("test", 300)}
    assert train and test and not train & test
    assert world.tasks("test", 20) == world.tasks("test", 20)
    assert all(t.split == "test" and t.id.startswith("test-") for t in world.tasks("test", 20))
    share = len(world.entity_pool("test")) / len(world.names)
    assert 0.1 < share < 0.3


@pytest.mark.parametrize("task_id", ["", "foo", "train-h5-1", "valid-h1-1", "train-h1-x"])
def test_unknown_task_ids_fail_with_the_expected_form(task_id: str) -> None:
    with pytest.raises(KeyError, match="train-h2-17"):
        build_world(SMALL).task_by_id(task_id)


@pytest.mark.parametrize(
    "kwargs", [{"num_entities": 5}, {"distractors": -1.0}, {"test_fraction": 1.0}]
)
def test_world_config_rejects_bad_knobs(kwargs: dict) -> None:
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        WorldConfig(**kwargs)


def test_doc_title_and_text() -> None:
    assert doc_title('"Kelvaria"\nA country.') == "Kelvaria"
    assert doc_text('"Kelvaria"\nA country.\nSecond line.') == "A country.\nSecond line."
    assert doc_text("only a title") == ""


# -- loaders ------------------------------------------------------------------------------------
def test_corpus_jsonl_round_trip(tmp_path) -> None:
    docs = build_world(SMALL).docs[:50]
    path = tmp_path / "corpus.jsonl"
    save_corpus(docs, path)
    assert load_corpus(path) == docs


def test_corpus_accepts_integer_ids_and_title_text_rows(tmp_path) -> None:
    path = tmp_path / "corpus.jsonl"
    rows = [{"id": 7, "contents": '"A"\nx'}, {"id": "b", "title": "B", "text": "y"}]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    assert load_corpus(path) == [Doc("7", '"A"\nx'), Doc("b", '"B"\ny')]


@pytest.mark.parametrize(
    ("bad_line", "message"),
    [
        ("{not json", "invalid JSON"),
        ('["a list"]', "JSON object"),
        ('{"id": "x"}', "'contents'"),
        ('{"contents": "x"}', "'id'"),
        ('{"id": true, "contents": "x"}', "'id'"),
    ],
)
def test_corrupt_corpus_lines_are_named(tmp_path, bad_line: str, message: str) -> None:
    path = tmp_path / "corpus.jsonl"
    good = json.dumps({"id": "1", "contents": '"T"\ntext'})
    path.write_text(f"{good}\n{good}\n{bad_line}\n{good}\n")
    with pytest.raises(DataFormatError, match=rf"corpus\.jsonl:3: .*{re.escape(message)}"):
        load_corpus(path)


def test_missing_files_are_named(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="nope.jsonl"):
        load_corpus(tmp_path / "nope.jsonl")
    with pytest.raises(FileNotFoundError, match="nope.parquet"):
        load_qa(tmp_path / "nope.parquet")


def test_qa_jsonl_and_parquet(tmp_path) -> None:
    tasks = build_world(SMALL).tasks("test", 10)
    save_qa(tasks, tmp_path / "qa.jsonl")
    loaded = load_qa(tmp_path / "qa.jsonl", split="test")
    assert [(t.id, t.question, t.golden_answers) for t in loaded] == [
        (t.id, t.question, t.golden_answers) for t in tasks
    ]
    table = pa.table({"question": ["Who?", "What?"], "golden_answers": [["Ann", "Anne"], ["Bo"]]})
    pq.write_table(table, tmp_path / "nq.parquet")
    assert load_qa(tmp_path / "nq.parquet") == [
        Task("nq-0", "Who?", ("Ann", "Anne")),
        Task("nq-1", "What?", ("Bo",)),
    ]


def test_bad_qa_rows_are_named(tmp_path) -> None:
    path = tmp_path / "qa.jsonl"
    path.write_text('{"question": "Q?", "golden_answers": ["a"]}\n{"question": "Q2?"}\n')
    with pytest.raises(DataFormatError, match=r"qa\.jsonl: line 2: .*golden_answers"):
        load_qa(path)
    pq.write_table(
        pa.table({"question": ["", "Q"], "golden_answers": [["a"], ["b"]]}), tmp_path / "x.parquet"
    )
    with pytest.raises(DataFormatError, match=r"x\.parquet: row 0: .*question"):
        load_qa(tmp_path / "x.parquet")


def test_split_by_question_keeps_questions_apart_but_shares_entities():
    from agentenv.envs.search.tasks import WorldConfig, build_world

    world = build_world(WorldConfig(num_entities=200))
    train = world.tasks("train", 300, 1, 1, split_by="question")
    test = world.tasks("test", 100, 1, 1, split_by="question")
    key = lambda t: (t.start, t.chain)  # noqa: E731
    assert not {key(t) for t in train} & {key(t) for t in test}
    assert {t.start for t in train} & {t.start for t in test}
    assert all(t.id.startswith("test-q-h1-") for t in test)
    assert world.task_by_id(test[3].id) == test[3]
    by_entity = world.tasks("test", 50, 1, 1)
    assert not {t.start for t in by_entity} & {t.start for t in world.tasks("train", 200, 1, 1)}


def test_non_utf8_lines_are_named(tmp_path) -> None:
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_bytes(b'{"id": "1", "contents": "ok"}\n{"id": "2", "contents": "caf\xe9"}\n')
    with pytest.raises(DataFormatError, match=r"corpus\.jsonl:2: not valid UTF-8 \(byte 0xe9"):
        load_corpus(corpus)
    qa = tmp_path / "qa.jsonl"
    qa.write_bytes(b'{"question": "Q\xff?", "golden_answers": ["a"]}\n')
    with pytest.raises(DataFormatError, match=r"qa\.jsonl:1: not valid UTF-8"):
        load_qa(qa)


def test_a_byte_order_mark_is_skipped(tmp_path) -> None:
    path = tmp_path / "corpus.jsonl"
    path.write_bytes(b'\xef\xbb\xbf{"id": "1", "contents": "\\"A\\"\\nx"}\n')
    assert load_corpus(path) == [Doc("1", '"A"\nx')]


def test_duplicate_document_ids_are_refused_at_the_second(tmp_path) -> None:
    path = tmp_path / "corpus.jsonl"
    rows = [{"id": str(i), "contents": f'"T{i}"\nx'} for i in range(1000)]
    rows.insert(700, {"id": 123, "contents": '"again"\ny'})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(DataFormatError, match=r"corpus\.jsonl:701: duplicate document id '123' "):
        load_corpus(path)


def test_gold_document_ids_survive_save_and_load(tmp_path) -> None:
    tasks = build_world(SMALL).tasks("test", 6)
    save_qa(tasks, tmp_path / "qa.jsonl")
    assert [t.gold_doc_ids for t in load_qa(tmp_path / "qa.jsonl")] == [
        t.gold_doc_ids for t in tasks
    ]
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "Q?", "golden_answers": ["a"], "gold_doc_ids": "doc-1"}\n')
    with pytest.raises(DataFormatError, match=r"bad\.jsonl: line 1: field 'gold_doc_ids'"):
        load_qa(bad)
