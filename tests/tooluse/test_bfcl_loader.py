"""Loading BFCL files: the shipped samples, errors that name file and line, tools, splits."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agentenv.envs.tooluse.bfcl.env import DATA_DIR
from agentenv.envs.tooluse.bfcl.loader import (
    BFCLTask,
    category_of,
    load,
    load_dir,
    load_file,
    task_tools,
    to_schema,
    tool_name,
    train_test_split,
)
from agentenv.envs.tooluse.schema import check_arguments
from agentenv.jsonl import DataFormatError

FUNCTION = {
    "name": "math.is_prime",
    "description": "Tell whether n is prime.",
    "parameters": {"type": "dict", "properties": {"n": {"type": "integer"}}, "required": ["n"]},
}


def question(row_id: str, text: str = "Is 7 prime?", functions: list | None = None) -> dict:
    return {
        "id": row_id,
        "question": [[{"role": "user", "content": text}]],
        "function": functions if functions is not None else [FUNCTION],
    }


def answer(row_id: str, n: int = 7) -> dict:
    return {"id": row_id, "ground_truth": [{"math.is_prime": {"n": [n]}}]}


def write(folder: Path, category: str, rows: list, answers: list | None) -> Path:
    path = folder / f"BFCL_v3_{category}.json"
    path.write_text("".join(r if isinstance(r, str) else json.dumps(r) + "\n" for r in rows))
    if answers is not None:
        (folder / "possible_answer").mkdir(exist_ok=True)
        lines = "".join(a if isinstance(a, str) else json.dumps(a) + "\n" for a in answers)
        (folder / "possible_answer" / path.name).write_text(lines)
    return path


# -- the shipped samples ----------------------------------------------------------------------
def test_the_shipped_samples_cover_the_single_turn_categories():
    tasks = load(DATA_DIR)
    assert set(tasks) == {"simple", "multiple", "parallel", "parallel_multiple", "irrelevance"}
    for category, rows in tasks.items():
        assert 10 <= len(rows) <= 20, category
        assert all(t.category == category for t in rows)
        assert all(bool(t.ground_truth) == (category != "irrelevance") for t in rows)
    assert all(len(t.ground_truth) >= 2 for t in tasks["parallel"])
    assert all(len(t.functions) >= 2 for t in tasks["multiple"])


def test_category_comes_from_the_file_name():
    assert category_of("x/BFCL_v4_live_parallel_multiple.json") == "live_parallel_multiple"
    assert category_of("BFCL_v3_simple.json") == "simple"
    assert category_of("questions.jsonl") is None


def test_a_file_that_does_not_name_its_category_needs_one(tmp_path):
    path = tmp_path / "mine.jsonl"
    path.write_text(json.dumps(question("a")) + "\n")
    with pytest.raises(ValueError, match="category="):
        load_file(path)
    (task,) = load_file(path, "irrelevance")
    assert task == BFCLTask(
        "a", "irrelevance", ({"role": "user", "content": "Is 7 prime?"},), (FUNCTION,)
    )


def test_tasks_pair_questions_with_their_answers(tmp_path):
    path = write(tmp_path, "simple", [question("a"), question("b")], [answer("b", 9), answer("a")])
    a, b = load_file(path)
    assert (a.id, a.ground_truth) == ("a", ({"math.is_prime": {"n": [7]}},))
    assert b.ground_truth == ({"math.is_prime": {"n": [9]}},)


# -- errors -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ("{not json\n", "invalid JSON"),
        ("[1, 2]\n", "expected a JSON object"),
        (json.dumps({**question("x"), "id": 3}) + "\n", '"id" must be'),
        (json.dumps({**question("x"), "question": "Is 7 prime?"}) + "\n", '"question" must be'),
        (json.dumps({**question("x"), "question": [[{"role": "user"}]]}) + "\n", "first turn"),
        (
            json.dumps({**question("x"), "function": [{"description": "no name"}]}) + "\n",
            '"function"',
        ),
        (json.dumps(question("a")) + "\n", "id 'a' repeats line 1"),
    ],
)
def test_a_bad_question_line_names_file_and_line(tmp_path, bad, message):
    path = write(tmp_path, "simple", [question("a"), bad], [answer("a")])
    with pytest.raises(DataFormatError, match=message) as caught:
        load_file(path)
    assert f"{path}:2:" in str(caught.value)


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ("{]\n", "invalid JSON"),
        (json.dumps({"id": "b", "ground_truth": []}) + "\n", '"ground_truth" must be'),
        (json.dumps({"id": "b", "ground_truth": [{"f": {"n": 7}}]}) + "\n", '"ground_truth"'),
        (json.dumps({"id": "b", "ground_truth": [{"other": {"n": [7]}}]}) + "\n", "not offer"),
    ],
)
def test_a_bad_answer_line_names_file_and_line(tmp_path, bad, message):
    path = write(tmp_path, "simple", [question("a"), question("b")], [answer("a"), bad])
    with pytest.raises(DataFormatError, match=message) as caught:
        load_file(path)
    assert f"{tmp_path / 'possible_answer' / path.name}:2:" in str(caught.value)


def test_ids_without_answers_are_named(tmp_path):
    rows = [question(i) for i in ("a", "b", "c")]
    path = write(tmp_path, "parallel", rows, [answer("b")])
    with pytest.raises(DataFormatError, match=r"no possible answer for 2 id\(s\).*: a, c"):
        load_file(path)


def test_a_missing_answer_file_is_named(tmp_path):
    path = write(tmp_path, "multiple", [question("a")], None)
    with pytest.raises(FileNotFoundError, match="possible_answer"):
        load_file(path)


def test_irrelevance_needs_no_answers(tmp_path):
    path = write(tmp_path, "irrelevance", [question("a", "Sing a song.")], None)
    assert [t.ground_truth for t in load_file(path)] == [()]


def test_a_folder_skips_unsupported_categories_unless_asked(tmp_path):
    write(tmp_path, "simple", [question("a")], [answer("a")])
    write(tmp_path, "multi_turn_base", [question("m")], [answer("m")])
    assert set(load_dir(tmp_path)) == {"simple"}
    with pytest.raises(ValueError, match="multi_turn_base"):
        load_dir(tmp_path, "multi_turn_base")
    with pytest.raises(FileNotFoundError, match="parallel"):
        load_dir(tmp_path, ["simple", "parallel"])


def test_ids_must_be_unique_across_files(tmp_path):
    first = write(tmp_path, "simple", [question("a")], [answer("a")])
    second = write(tmp_path, "irrelevance", [question("a")], None)
    with pytest.raises(DataFormatError, match="'a'"):
        load([first, second])


# -- tools ------------------------------------------------------------------------------------
def test_bfcl_types_become_json_schema():
    schema = to_schema(
        {
            "type": "dict",
            "properties": {
                "x": {"type": "float"},
                "pair": {"type": "tuple", "items": {"type": "float"}},
                "opts": {"type": "dict", "properties": {"deep": {"type": "any"}}},
                "v": {"type": "any", "description": "anything"},
            },
        }
    )
    assert schema["type"] == "object"
    props = schema["properties"]
    assert props["x"] == {"type": "number"}
    assert props["pair"] == {"type": "array", "items": {"type": "number"}}
    assert props["opts"] == {"type": "object", "properties": {"deep": {}}}
    assert props["v"] == {"description": "anything"}


def test_names_follow_the_openai_rule_and_map_back():
    task = BFCLTask(
        "t",
        "multiple",
        ({"role": "user", "content": "?"},),
        (FUNCTION, {**FUNCTION, "name": "math_is_prime"}, {**FUNCTION, "name": "a b/" + "c" * 80}),
    )
    tools, original = task_tools(task)
    assert [t.name for t in tools] == ["math_is_prime", "math_is_prime_2", "a_b_" + "c" * 60]
    assert original == {t.name: f["name"] for t, f in zip(tools, task.functions, strict=True)}
    assert tool_name("a.b-c_d") == "a_b-c_d"
    assert check_arguments(tools[0], {"n": 3}) == []
    assert check_arguments(tools[0], {"n": "3"})


# -- splits -----------------------------------------------------------------------------------
def test_the_train_test_split_is_a_seeded_hash_of_the_ids():
    tasks = [t for rows in load(DATA_DIR).values() for t in rows]
    train, test = train_test_split(tasks, 0.3, seed=1)
    assert len(train) + len(test) == len(tasks)
    assert {t.id for t in train}.isdisjoint(t.id for t in test)
    assert 0.1 < len(test) / len(tasks) < 0.5
    again = train_test_split(list(reversed(tasks)), 0.3, seed=1)[1]
    assert {t.id for t in again} == {t.id for t in test}
    other = train_test_split(tasks, 0.3, seed=2)[1]
    assert {t.id for t in other} != {t.id for t in test}
    assert train_test_split(tasks, 0.0)[1] == []
    with pytest.raises(ValueError, match="test_fraction"):
        train_test_split(tasks, 1.5)
