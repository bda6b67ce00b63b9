"""Transcripts in eval rows and saved training trajectories: the chat, the tokens with their
loss mask, the caps and their markers, and the flag that turns them off."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys

import pytest
from transformers import AutoTokenizer

from agentenv.evaluate import failure_reason, failures
from agentenv.models import tiny
from agentenv.policies.specs import load_policy
from agentenv.rollout import RolloutConfig, RolloutEngine, group_requests
from agentenv.runfiles import ROLLOUTS, eval_trajectory_files
from agentenv.trajectory import read_jsonl
from agentenv.transcript import (
    CUT_MARKER,
    TranscriptLimits,
    build_transcript,
    fair_limit,
    short_transcript,
    token_segments,
    token_text,
)
from tests.view.conftest import SEARCH


def rows_of(run_dir):
    return [json.loads(line) for line in (run_dir / "results.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def tokenizer():
    return AutoTokenizer.from_pretrained(tiny())


@pytest.fixture(scope="module")
def episodes():
    """Two real episodes of the tiny model on search-v0."""
    policy = load_policy("tiny")
    engine = RolloutEngine(policy, RolloutConfig(max_tokens_per_turn=12, max_context_tokens=512))

    async def play():
        try:
            return await engine.run(group_requests("search-v0", [5], 2, SEARCH))
        finally:
            await policy.aclose()

    return asyncio.run(play())


def test_eval_rows_carry_the_chat_and_the_tokens_with_their_loss_mask(eval_run):
    rows = rows_of(eval_run)
    assert len(rows) == 10
    for row in rows:
        assert list(row)[-1] == "transcript"  # last: readers of the summary stop before it
        transcript = row["transcript"]
        messages = transcript["messages"]
        assert messages[0]["role"] == "system" and messages[0]["turn"] == -1
        assistant = [m for m in messages if m["role"] == "assistant"]
        assert [m["turn"] for m in assistant] == list(range(row["turns"]))
        segments = transcript["tokens"]
        generated = [s for s in segments if s["loss_mask"] == 1]
        assert sum(len(s["ids"]) for s in generated) == row["tokens"]
        assert all(len(s["text"]) == len(s["ids"]) for s in segments)
        assert all(len(s["logprobs"]) == len(s["ids"]) for s in generated)
        assert all("logprobs" not in s for s in segments if s["loss_mask"] == 0)
        assert [s["turn"] for s in segments][0] == -1  # the prompt opens the tokens
        assert len(row["per_turn"]) == row["turns"]
        assert "cut" not in transcript


def test_tool_calls_and_results_are_messages(expert_run):
    rows = [r for r in rows_of(expert_run) if r["env"] == "tooluse-v0"]
    messages = [m for r in rows for m in r["transcript"]["messages"]]
    calls = [c for m in messages if m["role"] == "assistant" for c in m.get("tool_calls", [])]
    results = [m for m in messages if m["role"] == "tool"]
    assert calls and results
    assert {m["tool_call_id"] for m in results} <= {c["id"] for c in calls}


def test_segments_rebuild_the_trajectory_exactly(episodes, tokenizer):
    for traj in episodes:
        transcript = build_transcript(traj, tokenizer)
        segments = transcript["tokens"]
        assert [i for s in segments for i in s["ids"]] == traj.token_ids
        assert [s["loss_mask"] for s in segments for _ in s["ids"]] == traj.loss_mask
        assert [s["turn"] for s in segments for _ in s["ids"]] == traj.turn_ids
        runs = set(zip(traj.turn_ids, traj.loss_mask, strict=True))  # one segment each
        assert len(token_segments(traj)) == len(segments) == len(runs)


def test_token_text_gives_each_token_its_place_in_the_text(tokenizer):
    text = "Naïve café ☕ — 東京 at 9:30 <answer> Kelvaria </answer>"
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    pieces = token_text(tokenizer, ids)
    assert len(pieces) == len(ids)
    assert "".join(pieces) == text
    assert "" in pieces  # the bytes of a multi-byte character decode together


def test_caps_keep_every_message_and_segment_and_say_what_they_cut(episodes, tokenizer):
    traj = episodes[0]
    full = build_transcript(traj, tokenizer)
    capped = build_transcript(traj, tokenizer, TranscriptLimits(max_chars=300, max_tokens=60))
    assert len(capped["messages"]) == len(full["messages"])
    assert len(capped["tokens"]) == len(full["tokens"])
    dropped_chars = sum(m.get("cut", 0) for m in capped["messages"])
    dropped_tokens = sum(s.get("cut", 0) for s in capped["tokens"])
    assert capped["cut"] == {"chars": dropped_chars, "tokens": dropped_tokens}
    assert dropped_chars > 0 and dropped_tokens > 0
    system = capped["messages"][0]
    marker = CUT_MARKER.format(n=f"{system['cut']:,}")
    assert system["content"].endswith(marker)
    kept = system["content"][: -len(marker)]
    assert full["messages"][0]["content"].startswith(kept)
    assert sum(len(s["ids"]) for s in capped["tokens"]) <= 60
    short = min((s for s in full["tokens"]), key=lambda s: len(s["ids"]))
    assert short in capped["tokens"]  # the shortest segment is kept whole


@pytest.mark.parametrize(
    ("sizes", "budget", "limit"),
    [([10, 10], 100, 10), ([5, 100], 45, 40), ([3, 3, 30], 12, 6), ([7], 0, 0), ([], 5, 0)],
)
def test_fair_limit(sizes, budget, limit):
    assert fair_limit(sizes, budget) == limit
    assert sum(min(s, limit) for s in sizes) <= budget


def test_training_runs_save_every_step_with_credit_and_transcripts(train_run):
    saved = list(read_jsonl(train_run / ROLLOUTS))
    assert [t.metadata["step"] for t in saved] == [1] * 6 + [2] * 6
    for t in saved:
        credit = t.metadata["credit"]
        assert credit["estimator"] == "igpo"
        assert len(credit["advantage"]) == len(credit["reward"]) == t.num_turns
        assert len(credit["components"]["info_gain"]) == t.num_turns
        assert t.messages[0]["role"] == "system"
    lines = [json.loads(x) for x in (train_run / ROLLOUTS).read_text().splitlines()]
    assert all(list(line)[-1] == "transcript" for line in lines)
    assert [s for s in eval_trajectory_files(train_run)] and all(
        "transcript" in json.loads(x)
        for _, path in eval_trajectory_files(train_run)
        for x in path.read_text().splitlines()
    )


def test_failure_reasons_and_their_example_transcripts(eval_run):
    rows = rows_of(eval_run)
    found = failures(rows)
    assert sum(f.count for f in found) == sum(not r["success"] for r in rows)
    for f in found:
        assert failure_reason(f.example) == f.reason
        text = short_transcript(f.example["transcript"])
        assert text.splitlines()[0].startswith("system[-1]: ")
        assert all(len(line) <= 150 for line in text.splitlines())


def test_eval_prints_failures_and_no_transcripts_leaves_them_out(tmp_path):
    env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1"}
    args = [
        "eval",
        "--env",
        "search-v0",
        "--policy",
        "tiny",
        "-n",
        "2",
        "--max-tokens-per-turn",
        "8",
    ]
    for flag in ([], ["--no-transcripts"]):
        out_dir = tmp_path / ("off" if flag else "on")
        out = subprocess.run(
            [sys.executable, "-m", "agentenv", *args, *flag, "--env-arg", "max_turns=2",
             "--out", str(out_dir)],
            capture_output=True, text=True, timeout=300, env=env,
        )  # fmt: skip
        assert out.returncode == 0, out.stderr
        assert "unsuccessful episodes by reason" in out.stdout
        rows = rows_of(out_dir)
        meta = json.loads((out_dir / "metadata.json").read_text())
        if flag:
            assert all("transcript" not in r for r in rows) and meta["transcripts"] is None
            assert "no transcript" in out.stdout
        else:
            assert all("transcript" in r for r in rows)
            assert meta["transcripts"] == {"max_chars": 16000, "max_tokens": 4096}
            assert "system[-1]: " in out.stdout and "assistant[0]: " in out.stdout
