"""The trainer on the tiny model and search-v0: updates, LoRA, warm-up, SFT, resume after kill -9."""

import asyncio
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from agentenv.policies.base import SamplingParams
from agentenv.rollout import RolloutEngine, group_requests
from agentenv.train import checkpoint as ckpt
from agentenv.train.batching import build_batch
from agentenv.train.config import ConfigError, load_config
from agentenv.train.episodes import probe_envs, rollout_config
from agentenv.train.learner import build_learner
from agentenv.train.loop import train
from agentenv.train.losses import ppo_clip_loss, token_logprobs_and_entropy
from agentenv.train.metrics import read_metrics
from agentenv.train.model import model_path
from agentenv.train.pretrain import copy_sequences, pretraining_texts, text_windows
from agentenv.train.stages import sft, warm_start
from agentenv.train.update import update

ENV_KWARGS = {"num_entities": 30, "max_hops": 1, "max_turns": 2}


def small_config(tmp_path, **sections):
    data = {
        "name": "t",
        "output_dir": str(tmp_path / "runs"),
        "total_steps": 2,
        "model": {"spec": "tiny", "max_batch_size": 8},
        "envs": [{"id": "search-v0", "kwargs": ENV_KWARGS}],
        "rollout": {
            "group_size": 2,
            "tasks_per_step": 2,
            "max_tokens_per_turn": 10,
            "max_context_tokens": 512,
        },
        "optim": {"lr": 1e-3, "micro_batch_tokens": 2048},
        "loss": {"entropy_coef": 0.01},
        "eval": {"tasks": 0},
        "checkpoint": {"every": 1},
        "logging": {"live": False},
    }
    for key, value in sections.items():
        data[key] = {**data.get(key, {}), **value} if isinstance(value, dict) else value
    return data


def policy_loss(learner, batch):
    with torch.no_grad():
        logits = learner.model(
            input_ids=batch.input_ids, attention_mask=batch.attention_mask
        ).logits
        logp, _ = token_logprobs_and_entropy(logits, batch.input_ids, with_entropy=False)
        out = ppo_clip_loss(logp, batch.old_logprobs, batch.advantages, batch.loss_mask)
    return out.loss.item(), logp


async def test_updates_lower_the_loss_on_a_fixed_batch_and_change_the_policy(tmp_path):
    cfg = load_config(small_config(tmp_path), ["optim.lr=3e-3", "loss.entropy_coef=0"])
    learner = build_learner(cfg, model_path(cfg), total_optimizer_steps=20)
    policy = learner.policy
    try:
        engine = RolloutEngine(policy, rollout_config(cfg))
        trajs = await engine.run(group_requests("search-v0", [0, 1], 2, ENV_KWARGS))
        rows = sum(len(t.turns) for t in trajs)
        advantages = np.where(np.arange(rows) % 2 == 0, 1.0, -1.0)
        batch = build_batch(trajs, advantages, pad_id=learner.pad_id)
        probe = [trajs[0].token_ids[: trajs[0].prompt_length]]
        greedy = SamplingParams(max_tokens=12, temperature=0.0)
        (before_text,) = await policy.generate(probe, greedy)
        loss0, logp0 = policy_loss(learner, batch)
        for _ in range(3):
            stats = update(learner, batch, cfg)
        loss1, logp1 = policy_loss(learner, batch)
        (after_text,) = await policy.generate(probe, greedy)
    finally:
        await policy.aclose()
    assert stats["optimizer_steps"] == 1 and stats["grad_norm"] > 0
    assert loss1 < loss0 - 0.05
    # Log-probabilities move up on positive-advantage tokens and down on negative ones ...
    delta = (logp1 - logp0) * batch.loss_mask
    assert (delta * batch.advantages).sum() > 0
    # ... and never on prompt or observation tokens, which carry no loss.
    assert before_text.token_ids != after_text.token_ids or before_text.logprobs != pytest.approx(
        after_text.logprobs, abs=1e-3
    )


def test_lora_run_with_kl_to_adapters_off_reference(tmp_path):
    cfg = small_config(
        tmp_path,
        total_steps=1,
        model={"lora": {"enabled": True, "r": 4, "alpha": 8}},
        loss={"kl_coef": 0.1},
        optim={"epochs": 2, "lr": 1e-2},
    )
    run_dir = train(cfg)
    rows = read_metrics(run_dir, "train")
    assert [r["step"] for r in rows] == [1]
    assert rows[0]["optimizer_steps"] == 2
    assert rows[0]["kl"] > 0  # second epoch: adapters moved away from the base model
    adapter = ckpt.latest_checkpoint(run_dir) / "model" / "adapter_model.safetensors"
    assert adapter.is_file()
    assert (run_dir / "model" / "config.json").is_file()  # merged export


def test_bad_estimator_is_named_before_anything_runs(tmp_path):
    with pytest.raises(ConfigError, match="algorithm.estimator: unknown estimator 'nope'"):
        train(small_config(tmp_path, total_steps=1, algorithm={"estimator": "nope"}))
    with pytest.raises(ConfigError, match="algorithm.options.gama: unknown option of igpo"):
        train(small_config(tmp_path, algorithm={"estimator": "igpo", "options": {"gama": 1}}))
    assert not (tmp_path / "runs").exists()


def test_sft_learns_expert_actions(tmp_path):
    cfg = small_config(
        tmp_path,
        sft={"episodes": 16, "epochs": 3, "batch_sequences": 8, "lr": 3e-3},
        rollout={"max_tokens_per_turn": 64},
    )
    run_dir = sft(cfg)
    rows = read_metrics(run_dir, "sft")
    assert len(rows) >= 4
    assert rows[-1]["loss"] < rows[0]["loss"] - 0.3
    assert (run_dir / "model" / "config.json").is_file()
    data = [
        json.loads(line) for line in (run_dir / "demonstrations.jsonl").read_text().splitlines()
    ]
    assert data and all(d["success"] for d in data)
    # Expert actions are the only targets: observation tokens keep loss mask 0.
    first = data[0]
    masked_turns = {t for t, m in zip(first["turn_ids"], first["loss_mask"], strict=True) if m}
    assert masked_turns == set(range(len(first["turns"])))


async def test_a_restarted_sft_stage_logs_each_step_once(tmp_path):
    from agentenv.train.sft import run_sft

    cfg = load_config(
        small_config(
            tmp_path, sft={"episodes": 4, "epochs": 1}, rollout={"max_tokens_per_turn": 64}
        )
    )
    sources, _ = await probe_envs(cfg)
    out = tmp_path / "run" / "sft"
    for _ in range(2):  # a stage killed before saving its model runs again from scratch
        await run_sft(cfg, out, model_path(cfg), sources)
        assert [r["step"] for r in read_metrics(out, "sft")] == [1]


def test_sft_context_weight_adds_observation_targets(tmp_path):
    """λ = 0 trains on actions only; λ > 0 weighs prompt and observation tokens by λ."""
    from agentenv.train.sft import token_weights

    batch = build_batch([_expert_trajectory(tmp_path)], np.zeros(2), pad_id=0)
    real = batch.attention_mask.float()
    assert torch.equal(token_weights(batch, 0.0), batch.loss_mask)
    weights = token_weights(batch, 0.25)
    action = batch.loss_mask > 0
    assert torch.all(weights[action] == 1) and torch.all(weights[~action & (real > 0)] == 0.25)
    cfg = small_config(
        tmp_path,
        sft={"episodes": 8, "epochs": 1, "context_weight": 0.25},
        rollout={"max_tokens_per_turn": 64},
    )
    rows = read_metrics(sft(cfg), "sft")
    assert rows and all(np.isfinite(r["loss"]) for r in rows)


def _expert_trajectory(tmp_path):
    from transformers import AutoTokenizer

    from agentenv.train.sft import collect_demonstrations

    cfg = load_config(
        small_config(tmp_path, sft={"episodes": 4}, rollout={"max_tokens_per_turn": 64})
    )
    tokenizer = AutoTokenizer.from_pretrained(model_path(cfg))
    sources, _ = asyncio.run(probe_envs(cfg))
    trajectory = asyncio.run(collect_demonstrations(cfg, tokenizer, sources))[0]
    assert len(trajectory.turns) == 2
    return trajectory


RUNNER = """
import sys
from agentenv.train.loop import train
train(sys.argv[1])
"""


def run_until_checkpoint(config_path, run_root, step):
    proc = subprocess.Popen([sys.executable, "-c", RUNNER, str(config_path)])
    deadline = time.time() + 120
    try:
        while time.time() < deadline and proc.poll() is None:
            runs = list(run_root.glob("t-*"))
            if runs and ckpt.latest_checkpoint(runs[0]) is not None:
                state = json.loads((ckpt.latest_checkpoint(runs[0]) / "state.json").read_text())
                if state["step"] >= step:
                    break
            time.sleep(0.05)
        assert proc.poll() is None, "the run ended before it could be interrupted"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
    (run_dir,) = run_root.glob("t-*")
    return run_dir


def weights(run_dir):
    from safetensors.torch import load_file

    return load_file(run_dir / "model" / "model.safetensors")


TIMINGS = {
    "rollout_s",
    "update_s",
    "sync_s",
    "tokens_per_s",
    "eval_s",
    "gen_seconds",
    "env_seconds",
}


def _untimed(value):
    if isinstance(value, dict):
        return {k: _untimed(v) for k, v in value.items() if k not in TIMINGS}
    if isinstance(value, list):
        return [_untimed(v) for v in value]
    return value


def logs(run_dir):
    """Every JSONL log of a run folder (metrics, rollouts, evaluations), wall times dropped."""
    return {
        path.relative_to(run_dir).as_posix(): [
            _untimed(json.loads(line)) for line in path.read_text().splitlines()
        ]
        for path in sorted(run_dir.rglob("*.jsonl"))
    }


def assert_same_weights(*run_dirs):
    first, *others = [weights(r) for r in run_dirs]
    for other in others:
        assert first.keys() == other.keys()
        assert all(torch.equal(first[name], other[name]) for name in first)


def test_runs_with_the_same_seed_end_identical_however_requests_were_batched(tmp_path):
    """IGPO credit makes every token's old logprob count; batches of 64 (the default) or of 3
    rows group the same requests differently, and change nothing."""
    data = small_config(
        tmp_path,
        model={"max_batch_size": 64},
        algorithm={"estimator": "igpo", "info_gain": {"enabled": True}},
        eval={"tasks": 3},
        logging={"save_trajectories": True},
    )
    runs = [train(data), train(data), train({**data, "model": {"max_batch_size": 3}})]
    assert_same_weights(*runs)
    first = logs(runs[0])
    assert first["rollouts.jsonl"] and first["eval-step-000002.jsonl"]
    assert all(logs(r) == first for r in runs[1:])
    assert read_metrics(runs[0], "train")[-1]["grad_norm"] > 0


def test_resume_after_kill_reproduces_the_uninterrupted_run(tmp_path):
    import yaml

    data = small_config(
        tmp_path,
        total_steps=6,
        model={"max_batch_size": 64},
        eval={"tasks": 2, "every": 2},
        logging={"save_trajectories": True},
    )
    full = train(data)

    data["output_dir"] = str(tmp_path / "interrupted")
    path = tmp_path / "interrupted.yaml"
    path.write_text(yaml.safe_dump(data))
    run_dir = run_until_checkpoint(path, tmp_path / "interrupted", step=2)
    killed_at = json.loads((ckpt.latest_checkpoint(run_dir) / "state.json").read_text())["step"]
    assert killed_at < 6
    resumed = train(None, resume=run_dir)
    assert resumed == run_dir

    rows = read_metrics(run_dir)
    assert [(r["kind"], r["step"]) for r in rows] == [
        ("eval", 0), ("train", 1), ("train", 2), ("eval", 2), ("train", 3), ("train", 4),
        ("eval", 4), ("train", 5), ("train", 6), ("eval", 6),
    ]  # fmt: skip
    assert logs(run_dir) == logs(full)  # the same rows, once each
    state = json.loads((ckpt.latest_checkpoint(run_dir) / "state.json").read_text())
    assert state["step"] == 6 and state["consumed"] == [12]
    assert_same_weights(full, run_dir)
    moved = weights(full)
    assert any(
        not torch.equal(moved[k], v) for k, v in ckpt_initial_weights(data, tmp_path).items()
    )


def test_resuming_from_any_checkpoint_or_none_logs_nothing_twice(tmp_path):
    """Whatever was logged after the checkpoint a run resumes from is logged once."""
    import shutil

    data = small_config(
        tmp_path,
        checkpoint={"every": 1, "keep": 3},
        eval={"tasks": 2},
        logging={"save_trajectories": True},
    )
    full = train(data)
    expected = logs(full)
    assert [r["step"] for r in read_metrics(full, "eval")] == [0, 2]
    assert len(expected["rollouts.jsonl"]) == 8
    (full / "checkpoints" / "latest").write_text("step-000001")  # killed after step 1's
    train(None, resume=full)
    assert logs(full) == expected
    train(None, resume=full)  # killed after the last checkpoint: the final evaluation again
    assert logs(full) == expected
    shutil.rmtree(full / "checkpoints")  # killed before the first one: everything again
    train(None, resume=full)
    assert logs(full) == expected
    assert_same_weights(full, train(data))


def ckpt_initial_weights(data, tmp_path):
    from safetensors.torch import load_file

    return load_file(model_path(load_config(data)) / "model.safetensors")


def test_checkpoint_round_trip_restores_optimizer_scheduler_and_rng(tmp_path):
    model = torch.nn.Linear(3, 2)

    class Saved(torch.nn.Module):  # save_pretrained-compatible wrapper
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def save_pretrained(self, folder):
            from safetensors.torch import save_file

            folder.mkdir(parents=True, exist_ok=True)
            save_file(self.state_dict(), folder / "model.safetensors")

    wrapped = Saved(model)
    opt = torch.optim.AdamW(wrapped.parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0 / (s + 1))
    model(torch.ones(1, 3)).sum().backward()
    opt.step()
    sched.step()
    torch.manual_seed(7)
    folder = ckpt.save_checkpoint(
        tmp_path, 3, model=wrapped, optimizer=opt, scheduler=sched, state={"consumed": [5]}
    )
    expected_draw = torch.rand(3)
    saved = {k: v.clone() for k, v in wrapped.state_dict().items()}

    fresh = Saved(torch.nn.Linear(3, 2))
    opt2 = torch.optim.AdamW(fresh.parameters(), lr=0.1)
    sched2 = torch.optim.lr_scheduler.LambdaLR(opt2, lambda s: 1.0 / (s + 1))
    state = ckpt.load_checkpoint(folder, model=fresh, optimizer=opt2, scheduler=sched2)
    assert state == {"step": 3, "consumed": [5]}
    assert torch.equal(torch.rand(3), expected_draw)
    for k, v in fresh.state_dict().items():
        assert torch.equal(v, saved[k])
    assert sched2.last_epoch == 1
    assert opt2.state_dict()["state"][0]["step"] == opt.state_dict()["state"][0]["step"]
    # keep=2: older checkpoints are pruned, `latest` points at the newest.
    for step in (4, 5):
        ckpt.save_checkpoint(tmp_path, step, model=wrapped, keep=2)
    names = sorted(p.name for p in (tmp_path / "checkpoints").glob("step-*"))
    assert names == ["step-000004", "step-000005"]
    assert ckpt.latest_checkpoint(tmp_path).name == "step-000005"
    assert not list((tmp_path / "checkpoints").glob(".step-*"))


def test_train_resume_needs_a_run_folder(tmp_path):
    with pytest.raises(ConfigError, match="no config.yaml"):
        train(None, resume=tmp_path)


def test_eval_rows_and_dynamic_sampling_stats(tmp_path):
    cfg = small_config(
        tmp_path,
        total_steps=1,
        eval={"tasks": 3, "samples": 2},
        dynamic_sampling={"enabled": True, "max_rounds": 1},
    )
    run_dir = train(cfg)
    evals = read_metrics(run_dir, "eval")
    assert [r["step"] for r in evals] == [0, 1]
    assert all(r["episodes"] == 6 for r in evals)
    (row,) = read_metrics(run_dir, "train")
    # An untrained model fails every task: no group varies, so a refill round is played.
    assert row["groups_played"] == 4 and row["groups_dropped"] == 4
    assert asyncio.iscoroutinefunction(train) is False


def test_agentenv_train_writes_the_summary_and_says_it_last(tmp_path):
    cfg = small_config(tmp_path, total_steps=1, eval={"tasks": 3})
    path = tmp_path / "run.yaml"
    path.write_text(json.dumps(cfg))  # JSON is YAML
    done = subprocess.run(
        [sys.executable, "-m", "agentenv", "train", str(path)],
        capture_output=True,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert done.returncode == 0, done.stderr
    (run_dir,) = (tmp_path / "runs").iterdir()
    summary = json.loads((run_dir / "summary.json").read_text())
    evals = read_metrics(run_dir, "eval")
    assert summary["success_before"] == evals[0]["success"]
    assert summary["success_after"] == evals[-1]["success"]
    assert summary["eval_episodes"] == 3 and summary["rl_steps"] == 1
    assert summary["train_episodes"] == 4 and summary["wall_seconds"] > 0
    out = " ".join(done.stdout.split())
    last = out[out.rindex("Held-out success") :]
    assert last.startswith("Held-out success on 3 episodes went from 0.0% before RL to")
    assert last.endswith(f"(run folder: {run_dir}).")

    report = subprocess.run(
        [sys.executable, "-m", "agentenv", "report", str(run_dir)],
        capture_output=True,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1", "MPLBACKEND": "svg"},
    )
    assert report.returncode == 0, report.stderr
    text = (run_dir / "report.md").read_text()
    assert "learning_curves.png" in text and "## Configuration" in text
    assert (run_dir / "learning_curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_demonstrators_split_the_episodes_by_weight(tmp_path):
    from agentenv.train.sft import assign_demonstrators, demonstration_requests

    cfg = load_config(small_config(tmp_path, sft={"episodes": 10}))
    sources, _ = asyncio.run(probe_envs(cfg))
    requests = demonstration_requests(cfg, sources)
    plan = assign_demonstrators(requests, {"expert": 0.4, "closed-book": 0.6}, seed=3)
    assert [len(v) for v in plan.values()] == [4, 6]
    seeds = sorted(r.seed for group in plan.values() for r in group)
    assert seeds == sorted(r.seed for r in requests)
    assert plan == assign_demonstrators(requests, {"expert": 0.4, "closed-book": 0.6}, seed=3)


def test_sft_on_a_mix_of_demonstrators_keeps_each_ones_episodes(tmp_path):
    cfg = small_config(
        tmp_path,
        sft={"episodes": 8, "epochs": 1, "only_successful": False,
             "demonstrators": {"expert": 0.5, "closed-book": 0.5}},
        rollout={"max_tokens_per_turn": 64},
    )  # fmt: skip
    run_dir = sft(cfg)
    data = [
        json.loads(line) for line in (run_dir / "demonstrations.jsonl").read_text().splitlines()
    ]
    first_actions = [d["turns"][0]["action"] for d in data]
    assert sum(a.startswith("<answer>") for a in first_actions) == 4
    assert sum("<search>" in a for a in first_actions) == 4


def test_bad_demonstrator_weights_are_refused():
    with pytest.raises(ConfigError, match="sft.demonstrators"):
        load_config({"sft": {"demonstrators": {"expert": 0}}})


# --- reading warm-up (agentenv.train.pretrain) ---
def test_copy_sequences_repeat_their_first_half_and_score_only_the_repeat():
    vocabulary = torch.arange(10, 60)
    ids, labels = copy_sequences(4, 16, vocabulary, torch.Generator().manual_seed(0))
    assert ids.shape == labels.shape == (4, 16)
    assert torch.equal(ids[:, :8], ids[:, 8:])
    assert torch.all((ids >= 10) & (ids < 60))
    assert torch.all(labels[:, :9] == -100) and torch.equal(labels[:, 9:], ids[:, 9:])


def test_copy_sequences_with_lengths_pack_pairs_of_varying_half_length():
    vocabulary = torch.arange(10, 60)
    ids, labels = copy_sequences(6, 64, vocabulary, torch.Generator().manual_seed(0), (3, 9))
    assert ids.shape == labels.shape == (6, 64)
    assert torch.all((ids >= 10) & (ids < 60))
    scored = labels != -100
    assert torch.equal(labels[scored], ids[scored])
    halves = set()
    for row in range(6):
        pos = 0  # walk the pairs: a first half and its repeat, unscored up to the repeat's 2nd
        while pos < 64 and scored[row, pos:].any():
            half = int(torch.nonzero(scored[row, pos:])[0]) - 1
            assert 3 <= half <= 9 and not scored[row, pos : pos + half + 1].any()
            end = min(pos + 2 * half, 64)
            assert torch.equal(ids[row, pos + half : end], ids[row, pos : end - half])
            assert scored[row, pos + half + 1 : end].all()
            halves.add(half)
            pos = end
        assert not scored[row, pos:].any()
    assert len(halves) > 3  # the offsets vary
    again = copy_sequences(6, 64, vocabulary, torch.Generator().manual_seed(0), (3, 9))
    assert torch.equal(again[0], ids) and torch.equal(again[1], labels)  # seeded


def test_copy_sequences_default_is_one_pair_of_half_seq_len():
    vocabulary = torch.arange(10, 60)
    ids, labels = copy_sequences(3, 20, vocabulary, torch.Generator().manual_seed(4))
    first = vocabulary[torch.randint(50, (3, 10), generator=torch.Generator().manual_seed(4))]
    assert torch.equal(ids, torch.cat([first, first], dim=1))  # the draws of the fixed pair


def test_copy_lengths_must_fit_seq_len():
    assert load_config({"pretrain": {"copy_lengths": [4, 64]}}).pretrain.copy_lengths == (4, 64)
    for bad in ([0, 4], [8, 4], [4, 65]):
        with pytest.raises(ConfigError, match="pretrain.copy_lengths"):
            load_config({"pretrain": {"seq_len": 128, "copy_lengths": bad}})


def test_text_windows_are_contiguous_slices_of_the_stream():
    stream = torch.arange(100)
    windows = text_windows(stream, 5, 12, torch.Generator().manual_seed(1))
    assert windows.shape == (5, 12)
    assert torch.all(windows[:, 1:] - windows[:, :-1] == 1)
    with pytest.raises(ValueError, match="fewer than seq_len"):
        text_windows(stream[:10], 1, 12, torch.Generator())


def test_search_pretraining_text_comes_from_other_worlds(tmp_path):
    from agentenv.envs.search.tasks import WorldConfig, build_world

    cfg = load_config(small_config(tmp_path, pretrain={"enabled": True, "texts": 50}))
    texts = pretraining_texts(cfg)
    assert texts == pretraining_texts(cfg)  # deterministic
    reading = [t for t in texts if "\n<answer> " in t]
    assert len(reading) == 50 and all(t.endswith(" </answer>") for t in reading)
    played = set(build_world(WorldConfig(0, 30)).names)
    assert not any(name in text for text in texts for name in played)


def test_a_config_whose_envs_have_no_pretraining_text_is_refused(tmp_path, monkeypatch):
    import dataclasses

    from agentenv import registry

    info = registry.env_info("search-v0")
    monkeypatch.setitem(registry._ENVS, info.id, dataclasses.replace(info, pretraining=None))
    cfg = load_config(small_config(tmp_path, pretrain={"enabled": True}))
    with pytest.raises(ConfigError, match="provides pretraining text"):
        pretraining_texts(cfg)


async def test_warm_start_pretrains_then_fine_tunes_from_the_pretrained_model(tmp_path):
    cfg = load_config(
        small_config(
            tmp_path,
            pretrain={"enabled": True, "steps": 25, "texts": 40, "batch_sequences": 8,
                      "seq_len": 48, "copy_fraction": 0.5, "warmup_steps": 2},
            sft={"enabled": True, "episodes": 4, "epochs": 1},
            rollout={"max_tokens_per_turn": 64},
        )
    )  # fmt: skip
    run_dir = tmp_path / "run"
    sources, _ = await probe_envs(cfg)
    start = await warm_start(cfg, run_dir, sources)
    assert start == run_dir / "sft" / "model"
    losses = [r["loss"] for r in read_metrics(run_dir / "pretrain", "pretrain")]
    assert len(losses) == 25 and losses[-1] < losses[0] - 0.5
    pretrained = run_dir / "pretrain" / "model"
    mtime = (pretrained / "model.safetensors").stat().st_mtime
    assert await warm_start(cfg, run_dir, sources) == start  # a resumed run reuses both stages
    assert (pretrained / "model.safetensors").stat().st_mtime == mtime


def test_model_prefix_cache_mib_gives_the_trained_policy_a_prefix_cache(tmp_path):
    learners = [
        build_learner(cfg, model_path(cfg), total_optimizer_steps=1)
        for cfg in (
            load_config(small_config(tmp_path)),
            load_config(small_config(tmp_path, model={"prefix_cache_mib": 8})),
        )
    ]
    assert learners[0].policy.prefix_cache is None
    assert learners[1].policy.prefix_cache.max_bytes == 8 * 2**20
