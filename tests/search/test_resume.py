"""JSONL reading that tolerates an interrupted append, and ``eval --resume`` over search episodes
whose results file was cut mid-row."""

from __future__ import annotations

import json

import pytest

from agentenv.evaluate import Suite, SuiteEntry, evaluate
from agentenv.jsonl import DataFormatError, iter_jsonl
from agentenv.policies.specs import load_policy

ROWS = [{"i": i, "text": "x" * 40} for i in range(3)]
COMPLETE = "".join(json.dumps(r) + "\n" for r in ROWS)


def test_a_torn_last_line_is_dropped_only_when_asked(tmp_path) -> None:
    path = tmp_path / "rows.jsonl"
    path.write_text(COMPLETE + json.dumps({"i": 3, "text": "y" * 40})[:25])
    assert [row for _, row in iter_jsonl(path, torn_tail=True)] == ROWS
    with pytest.raises(DataFormatError, match=r"rows\.jsonl:4: invalid JSON"):
        list(iter_jsonl(path))


def test_a_torn_multibyte_character_is_a_torn_line(tmp_path) -> None:
    path = tmp_path / "rows.jsonl"
    path.write_bytes(COMPLETE.encode() + json.dumps({"t": "é"}, ensure_ascii=False).encode()[:-3])
    assert [row for _, row in iter_jsonl(path, torn_tail=True)] == ROWS


def test_a_complete_last_row_without_newline_is_kept(tmp_path) -> None:
    path = tmp_path / "rows.jsonl"
    path.write_text(COMPLETE + json.dumps({"i": 3}))
    assert [row["i"] for _, row in iter_jsonl(path, torn_tail=True)] == [0, 1, 2, 3]


@pytest.mark.parametrize(
    ("content", "line"),
    [
        (COMPLETE.replace('{"i": 1', '{"i": 1,,', 1), 2),  # a bad line before the end
        (COMPLETE + '{"i": 3\n', 4),  # a bad last line that ends with its newline
    ],
)
def test_other_bad_lines_still_raise(tmp_path, content: str, line: int) -> None:
    path = tmp_path / "rows.jsonl"
    path.write_text(content)
    with pytest.raises(DataFormatError, match=rf"rows\.jsonl:{line}: invalid JSON"):
        list(iter_jsonl(path, torn_tail=True))


async def test_resume_reruns_the_episode_of_a_torn_row(tmp_path) -> None:
    policy = load_policy("expert")
    suite = Suite("s", [SuiteEntry("search-v0", {}, "test", 3)])
    await evaluate(policy, suite, out_dir=tmp_path, progress=False)
    results = tmp_path / "results.jsonl"
    lines = results.read_text().splitlines(keepends=True)
    torn = json.loads(lines[-1])
    results.write_text("".join(lines[:-1]) + lines[-1][: len(lines[-1]) // 2])

    resumed = await evaluate(policy, suite, out_dir=tmp_path, resume=True, progress=False)
    final = [json.loads(line) for line in results.read_text().splitlines()]
    assert len(final) == len(resumed.rows) == 3
    assert all(r["status"] == "done" for r in final)
    assert final[:2] == [json.loads(line) for line in lines[:2]]
    assert (final[2]["env"], final[2]["seed"]) == (torn["env"], torn["seed"])


async def test_resume_refuses_a_bad_row_before_the_end(tmp_path) -> None:
    policy = load_policy("expert")
    suite = Suite("s", [SuiteEntry("search-v0", {}, "test", 3)])
    await evaluate(policy, suite, out_dir=tmp_path, progress=False)
    results = tmp_path / "results.jsonl"
    lines = results.read_text().splitlines(keepends=True)
    results.write_text(lines[0] + lines[1][:20] + "\n" + lines[2])
    with pytest.raises(DataFormatError, match=r"results\.jsonl:2: invalid JSON"):
        await evaluate(policy, suite, out_dir=tmp_path, resume=True, progress=False)
    assert results.read_text() == lines[0] + lines[1][:20] + "\n" + lines[2]
