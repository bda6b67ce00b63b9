"""The viewer's loading of runs and its credit: summaries read up to the transcript equal the
whole rows, bad input names its file and line, and credit recomputed with agentenv.rewards
from what a training run saved reproduces what the trainer used."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

from agentenv.jsonl import DataFormatError, iter_jsonl
from agentenv.rewards import compute_advantages
from agentenv.runfiles import RESULTS, ROLLOUTS
from agentenv.trajectory import Trajectory, Turn, TurnTable, read_jsonl
from agentenv.view.credit import group_credit
from agentenv.view.export import export_html
from agentenv.view.payload import credit_of, episode_payload, run_payload
from agentenv.view.runs import open_run


def test_an_eval_run_is_indexed_without_reading_transcripts(eval_run):
    run = open_run(eval_run)
    rows = [row for _, row in iter_jsonl(eval_run / RESULTS)]
    assert run.kind == "eval" and len(run.episodes) == len(rows) == 10
    for ep, row in zip(run.episodes, rows, strict=True):
        assert (ep.summary["env"], ep.summary["task"], ep.summary["sample"]) == (
            row["env"], row["task_id"], row["sample"],
        )  # fmt: skip
        assert ep.summary["reward"] == row["reward"] and ep.summary["turns"] == row["turns"]
        assert ep.summary["components"] == row["components"]
        assert ep.turns == row["per_turn"]
        assert "transcript" not in ep.summary
        assert run.record(ep.id) == row  # the whole row, read from its offset
    groups = {ep.group for ep in run.episodes}
    assert len(groups) == 5 and all(len(run.groups[g]) == 2 for g in groups)
    assert open_run(eval_run / RESULTS).episodes[3].summary == run.episodes[3].summary


def test_a_training_run_has_steps_held_out_evaluations_metrics_and_credit(train_run):
    run = open_run(train_run)
    assert run.kind == "train" and run.estimator == "igpo"
    splits = [(ep.summary["split"], ep.summary["step"]) for ep in run.episodes]
    assert (
        splits
        == [("train", 1)] * 6 + [("train", 2)] * 6 + [("held-out", 0)] * 2 + [("held-out", 2)] * 2
    )
    assert [(r["kind"], r["step"]) for r in run.metrics] == [
        ("eval", 0), ("train", 1), ("train", 2), ("eval", 2),
    ]  # fmt: skip
    assert all(ep.credit is not None for ep in run.episodes if ep.summary["split"] == "train")
    assert len({ep.group for ep in run.episodes if ep.summary["split"] == "train"}) == 4


def test_recomputed_credit_reproduces_what_the_trainer_used(train_run):
    """The run's IGPO advantages, recomputed over each group from the saved turn rewards and
    information gain, equal the ones the trainer broadcast to tokens."""
    run = open_run(train_run)
    for key, ids in run.groups.items():
        if not key.startswith("train"):
            continue
        members = [run.episodes[i] for i in ids]
        saved = group_credit(members, "igpo")
        recomputed = group_credit(members, None)  # no run estimator: every one computed
        assert saved.saved and not recomputed.errors.get("igpo")
        for m in members:
            assert saved.advantages[m.id]["igpo"] == m.credit["advantage"]
            np.testing.assert_allclose(
                recomputed.advantages[m.id]["igpo"], m.credit["advantage"], atol=1e-12
            )
        assert "empg" not in saved.errors  # the rollout saved each turn's entropy
        assert all(v is not None for m in members for v in saved.advantages[m.id]["empg"])


def test_grpo_over_an_eval_group_is_agentenv_rewards_grpo(eval_run, expert_run, tmp_path):
    """Rows of two policies on the same tasks in one file: each group has successes and
    failures, and the viewer's GRPO advantages are agentenv.rewards' over the group."""
    rows = [row for _, row in iter_jsonl(expert_run / RESULTS)]
    rows += [{**row, "sample": row["sample"] + 2} for _, row in iter_jsonl(eval_run / RESULTS)]
    (tmp_path / RESULTS).write_text("".join(json.dumps(r) + "\n" for r in rows))
    run = open_run(tmp_path)
    for ids in run.groups.values():
        assert len(ids) == 4
        members = [run.record(i) for i in ids]
        trajectories = [
            Trajectory(str(i), "group", r["env"], r["task_id"], turns=[
                Turn(j, "", "", t["reward"], t["components"], t["valid"], t["anchor"])
                for j, t in enumerate(r["per_turn"])
            ])
            for i, r in zip(ids, members, strict=True)
        ]  # fmt: skip
        expected = compute_advantages("grpo", TurnTable.from_trajectories(trajectories))
        credit = credit_of(run, ids[0])
        got = [v for i in ids for v in credit.advantages[i]["grpo"]]
        np.testing.assert_allclose(got, expected)
        assert max(got) > 0 > min(got)


def test_episode_documents_carry_chat_tokens_and_per_turn_credit(train_run):
    run = open_run(train_run)
    doc = episode_payload(run, 0, credit_of(run, 0))
    json.dumps(doc, allow_nan=False)  # what a browser can parse
    assert doc["saved_credit"] and doc["estimator"] == "igpo"
    assert [t["advantages"]["igpo"] for t in doc["turns"]] == run.episodes[0].credit["advantage"]
    assert doc["messages"][0]["role"] == "system" and doc["tokens"][0]["turn"] == -1
    assert all(t["anchor_turns"] >= 1 and t["anchor_episodes"] >= 1 for t in doc["turns"])
    assert len(run_payload(run)["episodes"]) == len(run.episodes)


def test_trajectories_saved_before_transcripts_still_open(train_run, tmp_path):
    """A rollouts file of an older run (no messages, no transcript) shows its turns and ids."""
    old = tmp_path / "old"
    old.mkdir()
    shutil.copy(train_run / "config.yaml", old / "config.yaml")
    with (old / ROLLOUTS).open("w") as f:
        for line in (train_run / ROLLOUTS).read_text().splitlines():
            row = json.loads(line)
            del row["transcript"], row["messages"]
            f.write(json.dumps(row) + "\n")
    run = open_run(old)
    doc = episode_payload(run, 0, credit_of(run, 0))
    assert [m["role"] for m in doc["messages"]][:2] == ["assistant", "user"]
    assert "text" not in doc["tokens"][0] and doc["tokens"][0]["ids"]
    assert list(read_jsonl(old / ROLLOUTS))[0].traj_id == run.episodes[0].summary["sample"]


def test_bad_input_names_the_file_and_the_line(eval_run, tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere: no such file or folder"):
        open_run(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="not a run folder"):
        open_run(tmp_path)
    lines = (eval_run / RESULTS).read_text().splitlines(keepends=True)
    bad = tmp_path / "garbled" / RESULTS
    bad.parent.mkdir()
    bad.write_text("".join(lines[:3]) + '{"env": "search-v0", oops\n' + "".join(lines[3:]))
    with pytest.raises(DataFormatError, match=rf"{bad}:4: invalid JSON"):
        open_run(bad.parent)
    bad.write_text("".join(lines[:2]) + '{"hello": 1}\n')
    with pytest.raises(DataFormatError, match=rf"{bad}:3: not an eval row \(no env, seed"):
        open_run(bad)
    bad.write_text("".join(lines[:2]) + lines[2][: len(lines[2]) // 2])  # an append cut short
    assert len(open_run(bad).episodes) == 2


def test_a_transcript_garbled_after_indexing_is_named_when_opened(eval_run, tmp_path):
    folder = tmp_path / "run"
    shutil.copytree(eval_run, folder)
    run = open_run(folder)
    text = (folder / RESULTS).read_text()
    (folder / RESULTS).write_text(text.replace('"transcript": {', '"transcript": {{', 1))
    with pytest.raises(DataFormatError, match=rf"{folder / RESULTS}:1: invalid JSON"):
        run.record(0)


def test_html_export_embeds_every_episode_or_the_first_n(eval_run, tmp_path):
    run = open_run(eval_run)
    full = export_html(run, tmp_path / "all.html")
    capped = export_html(run, tmp_path / "some.html", max_episodes=3)
    assert (full.embedded, full.total, capped.embedded) == (10, 10, 3)
    assert capped.bytes < full.bytes
    text = full.path.read_text()
    start = text.index('id="agentenv-data">') + len('id="agentenv-data">')
    data = json.loads(text[start : text.index("</script>", start)])
    assert data["mode"] == "static" and sorted(data["episodes"], key=int) == [
        str(i) for i in range(10)
    ]
    assert len(data["run"]["episodes"]) == 10


def test_view_command_writes_html_and_names_bad_files(eval_run, tmp_path):
    out = tmp_path / "view.html"
    ok = subprocess.run(
        [sys.executable, "-m", "agentenv", "view", str(eval_run), "--html", str(out)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert ok.returncode == 0, ok.stderr
    assert "10 of 10 episodes" in ok.stdout and out.stat().st_size > 10_000
    bad = tmp_path / "results.jsonl"
    bad.write_text('{"env": 1}\nnot json\n')
    for args in (["--html", str(tmp_path / "x.html")], []):
        failed = subprocess.run(
            [sys.executable, "-m", "agentenv", "view", str(bad), *args],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert failed.returncode == 2
        assert failed.stderr.startswith(f"error: {bad}:1: not an eval row"), failed.stderr
