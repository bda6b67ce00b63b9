"""Evaluation: pass@k on worked cases, suites, and results/resume on real episodes."""

from __future__ import annotations

import json

import pytest

from agentenv.evaluate import (
    SuccessCount,
    Suite,
    SuiteEntry,
    evaluate,
    load_suite,
    pass_at_k,
    result_row,
    success_count,
    summarize,
    tool_usage,
)
from agentenv.policies.scripted import RandomPolicy
from agentenv.trajectory import Trajectory

from . import tool_env  # noqa: F401  (registers calc-tools-test-v0)


@pytest.mark.parametrize(
    ("n", "c", "k", "expected"),
    [
        (1, 1, 1, 1.0),
        (1, 0, 1, 0.0),
        (4, 1, 1, 0.25),
        (4, 1, 2, 0.5),  # 1 - C(3,2)/C(4,2) = 1 - 3/6
        (5, 2, 3, 0.9),  # 1 - C(3,3)/C(5,3) = 1 - 1/10
        (10, 0, 5, 0.0),
        (3, 2, 2, 1.0),  # n - c < k
    ],
)
def test_pass_at_k_worked_cases(n, c, k, expected):
    assert pass_at_k(n, c, k) == pytest.approx(expected)


def test_pass_at_k_needs_enough_samples():
    with pytest.raises(ValueError, match="at least 3 samples"):
        pass_at_k(2, 1, 3)


def _row(env, seed, sample, success, status="done"):
    return {
        "env": env, "seed": seed, "sample": sample, "success": success, "reward": float(success),
        "turns": 2, "tokens": 10, "gen_seconds": 0.1, "env_seconds": 0.2, "status": status,
    }  # fmt: skip


def test_summarize_pass_at_k_and_errors():
    rows = [_row("a", 0, 0, True), _row("a", 0, 1, False), _row("a", 1, 0, False),
            _row("a", 1, 1, False), _row("a", 2, 0, True, status="error")]  # fmt: skip
    (s,) = summarize(rows, k=2)
    assert s.episodes == 5 and s.errors == 1
    assert s.success_rate == pytest.approx(0.25)
    assert s.pass_at_k[1] == pytest.approx(0.25)
    assert s.pass_at_k[2] == pytest.approx(0.5)


def test_success_count_leaves_errored_episodes_out_for_trajectories_and_rows():
    outcomes = [("done", True), ("truncated", False), ("error", True), ("done", True)]
    trajectories = [
        Trajectory(f"t{i}", "g", "search-v0", "task", status=status, success=success)
        for i, (status, success) in enumerate(outcomes)
    ]
    rows = [result_row(t, 0, 0.0) for t in trajectories]
    expected = SuccessCount(episodes=4, errors=1, successes=2)
    assert success_count(trajectories) == success_count(rows) == expected
    assert expected.scored == 3
    assert expected.rate == pytest.approx(2 / 3) and expected.error_rate == 0.25
    assert success_count([]).rate == 0.0 and success_count(trajectories[2:3]).rate == 0.0


def test_builtin_core_suite_and_bad_suite_files(tmp_path):
    core = load_suite("core")
    assert core.name == "core" and core.entries[0].env == "search-v0"
    bad = tmp_path / "bad.yaml"
    bad.write_text("envs:\n  - env: search-v0\n    nn: 3\n")
    with pytest.raises(ValueError, match=r"envs\[0\] has unknown field.*nn"):
        load_suite(bad)
    bad.write_text("envs:\n  - env: serch-v0\n")
    with pytest.raises(KeyError, match="search-v0"):
        load_suite(bad)


async def test_eval_writes_results_and_resume_reruns_only_missing(tmp_path):
    from agentenv.policies.specs import load_policy

    policy = load_policy("expert")
    suite = Suite("s", [SuiteEntry("search-v0", {}, "test", 4)])
    first = await evaluate(policy, suite, k=2, out_dir=tmp_path, progress=False)
    rows = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    assert len(rows) == 8 and first.summaries[0].success_rate == 1.0
    assert (tmp_path / "summary.png").stat().st_size > 1000
    meta = json.loads((tmp_path / "metadata.json").read_text())
    assert meta["aggregates"][0]["pass_at_k"]["2"] == 1.0

    # drop two episodes and mark one as errored: resume re-runs exactly those three
    kept = rows[:5] + [{**rows[5], "status": "error"}]
    (tmp_path / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in kept))
    second = await evaluate(policy, suite, k=2, out_dir=tmp_path, resume=True, progress=False)
    assert len(second.rows) == 8
    final = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    assert len(final) == 8 and all(r["status"] == "done" for r in final)
    assert [r["seconds"] for r in final[:5]] == [r["seconds"] for r in rows[:5]]


async def test_tool_calls_are_counted_per_env_and_tool():
    policy = RandomPolicy(seed=3)
    suite = Suite("tools", [SuiteEntry("calc-tools-test-v0", n=12)])
    result = await evaluate(policy, suite, k=1, progress=False)
    usage = tool_usage(result.rows)
    assert usage, "the random policy makes tool calls"
    by_tool = {u.tool: u for u in usage}
    calls = sum(n for r in result.rows for n, _ in r["tool_calls"].values())
    assert sum(u.calls for u in usage) == calls
    for u in usage:
        assert u.env == "calc-tools-test-v0" and 0 <= u.failed <= u.calls
        assert u.episodes == sum(u.tool in r["tool_calls"] for r in result.rows)
    assert set(by_tool) <= {"add", "shout", "nap", "divide"}
    assert by_tool["divide"].failed == by_tool["divide"].calls  # no such tool: every call fails
    assert any(u.failed < u.calls for u in usage)
