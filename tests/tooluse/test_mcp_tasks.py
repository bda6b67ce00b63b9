"""MCP task files: parsing, the errors bad lines give, splits, and the declarative checks.

No MCP server is needed here (and the module does not import ``mcp``)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import agentenv.envs.tooluse.mcp as mcp_envs
from agentenv.envs.tooluse.mcp.tasks import (
    CHECKS,
    Check,
    Expected,
    load_tasks,
    parse_check,
    partition,
)
from agentenv.jsonl import DataFormatError
from agentenv.toolcalls import ToolCall

TIME_TASKS = Path(mcp_envs.__file__).parent / "examples" / "time_tasks.jsonl"
GOOD = {"id": "a", "prompt": "What is 2+3?", "check": {"answer_contains": ["5"]}}


def write(tmp_path: Path, rows: list) -> Path:
    path = tmp_path / "tasks.jsonl"
    lines = [r if isinstance(r, str) else json.dumps(r) for r in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_a_minimal_file_reads_and_partitions_into_train_and_test(tmp_path):
    rows = [{**GOOD, "id": f"t{i}"} for i in range(20)]
    tasks = load_tasks(write(tmp_path, rows), test_fraction=0.25, split_seed=3)
    assert {k: len(v) for k, v in tasks.splits.items()} == {"train": 15, "test": 5}
    again = load_tasks(write(tmp_path, rows), test_fraction=0.25, split_seed=3)
    assert [t.id for t in again.splits["test"]] == [t.id for t in tasks.splits["test"]]
    other = load_tasks(write(tmp_path, rows), test_fraction=0.25, split_seed=4)
    assert [t.id for t in other.splits["test"]] != [t.id for t in tasks.splits["test"]]
    # file order is kept within a split
    ids = [t.id for t in tasks.splits["train"]]
    assert ids == sorted(ids, key=lambda i: int(i[1:]))


def test_partition_is_a_stable_hash_and_keeps_one_train_task():
    assert partition(["x"], 0.9, 0) == set()
    ids = [str(i) for i in range(100)]
    assert len(partition(ids, 0.2, 0)) == 20
    assert partition(ids, 0.2, 0) == partition(list(reversed(ids)), 0.2, 0)


def test_named_splits_and_every_field(tmp_path):
    rows = [
        {
            **GOOD,
            "id": 7,
            "split": "dev",
            "answer": "5",
            "tools": ["add"],
            "system": "Be brief.",
            "gold_calls": [{"name": "add", "arguments": {"a": 2, "b": 3}}],
            "meta": {"source": "hand"},
        },
        {**GOOD, "id": "b", "split": "train"},
    ]
    tasks = load_tasks(write(tmp_path, rows))
    assert list(tasks.splits) == ["dev", "train"]
    task = tasks.task("7")
    assert (task.answer, task.tools, task.system) == ("5", ("add",), "Be brief.")
    assert task.gold_calls == (Expected("add", {"a": 2, "b": 3}),)
    assert task.meta == {"source": "hand"}
    with pytest.raises(KeyError, match="no task 'zz'"):
        tasks.task("zz")


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ("not json", "invalid JSON"),
        ("[1, 2]", "expected a JSON object"),
        ({"prompt": "p", "check": {"answer_equals": "x"}}, '"id" must be'),
        ({"id": True, "prompt": "p", "check": {"answer_equals": "x"}}, '"id" must be'),
        ({"id": "a", "prompt": " ", "check": {"answer_equals": "x"}}, '"prompt" must be'),
        ({"id": "a", "prompt": "p"}, 'no "check"'),
        ({**GOOD, "check": {}}, '"check" is empty'),
        ({**GOOD, "check": []}, '"check" must be an object'),
        ({**GOOD, "check": {"answer_eval": "1"}}, "unknown check"),
        ({**GOOD, "chek": {}}, "unknown field"),
        ({**GOOD, "check": {"answer_contains": "5"}}, "must be a list of strings"),
        ({**GOOD, "check": {"answer_contains": []}}, '"answer_contains" is empty'),
        ({**GOOD, "check": {"answer_equals": 5}}, '"answer_equals" must be a string'),
        ({**GOOD, "check": {"answer_regex": "(unclosed"}}, "not a valid regular expression"),
        ({**GOOD, "check": {"answer_regex": "a" * 1001}}, "at most 1000"),
        ({**GOOD, "check": {"calls_include": [{"arguments": {}}]}}, 'needs a "name"'),
        ({**GOOD, "check": {"calls_include": [{"name": "f", "args": {}}]}}, "unknown key"),
        ({**GOOD, "check": {"calls_include": [{"name": "f", "arguments": []}]}}, "must be an obj"),
        ({**GOOD, "check": {"calls_include": []}}, '"calls_include" is empty'),
        ({**GOOD, "tools": "add"}, '"tools" must be a list'),
        ({**GOOD, "split": 1}, '"split" must be a string'),
        ({**GOOD, "meta": 3}, '"meta" must be an object'),
        ({**GOOD, "gold_calls": {"name": "f"}}, '"gold_calls" must be a list'),
    ],
)
def test_a_bad_line_names_the_file_and_line(tmp_path, row, message):
    path = write(tmp_path, [{**GOOD, "id": "first"}, row])
    with pytest.raises(DataFormatError, match=message) as caught:
        load_tasks(path)
    assert f"{path}:2:" in str(caught.value)


def test_duplicate_ids_mixed_splits_and_empty_files_are_errors(tmp_path):
    with pytest.raises(DataFormatError, match=r":2: duplicate id 'a' \(first on line 1\)"):
        load_tasks(write(tmp_path, [GOOD, GOOD]))
    with pytest.raises(DataFormatError, match=':2: either every line names its "split"'):
        load_tasks(write(tmp_path, [{**GOOD, "split": "train"}, {**GOOD, "id": "b"}]))
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n\n")
    with pytest.raises(DataFormatError, match="no tasks"):
        load_tasks(empty)
    with pytest.raises(ValueError, match="test_fraction"):
        load_tasks(write(tmp_path, [GOOD]), test_fraction=1.0)


def test_checks_score_answers_and_calls():
    check = parse_check(
        {
            "answer_contains": ["Paris", "france"],
            "answer_equals": "paris, france",
            "answer_regex": r"^Paris\b",
            "calls_include": [{"name": "lookup", "arguments": {"city": "Paris"}}],
        }
    )
    assert check.names() == list(CHECKS)
    good = [ToolCall("lookup", {"city": "Paris", "lang": "en"})]
    assert check.evaluate(" Paris, France ", good) == dict.fromkeys(CHECKS, 1.0)
    scored = check.evaluate("paris, France", [ToolCall("lookup", {"city": "Lyon"})])
    assert scored == {
        "answer_contains": 1.0,
        "answer_equals": 1.0,
        "answer_regex": 0.0,
        "calls_include": 0.0,
    }
    assert check.evaluate(None, good) == {
        "answer_contains": 0.0,
        "answer_equals": 0.0,
        "answer_regex": 0.0,
        "calls_include": 1.0,
    }
    assert Check(answer_equals="x").names() == ["answer_equals"]


def test_the_shipped_time_tasks_read_with_deterministic_answers():
    tasks = load_tasks(TIME_TASKS)
    assert {k: len(v) for k, v in tasks.splits.items()} == {"train": 48, "test": 16}
    for split in tasks.splits.values():
        for task in split:
            assert task.tools == ("convert_time",)
            assert task.gold_calls and task.check.calls_include == task.gold_calls
            calls = [ToolCall(c.name, dict(c.arguments)) for c in task.gold_calls]
            assert task.check.evaluate(task.answer, calls) == {
                "answer_regex": 1.0,
                "calls_include": 1.0,
            }
            # one time only, the right one
            other = f"{task.answer} or 00:00" if task.answer != "00:00" else "00:00 or 01:00"
            assert task.check.evaluate(other, calls)["answer_regex"] == 0.0
            assert task.check.evaluate(f"It is {task.answer}.", calls)["answer_regex"] == 1.0
