"""PPO in the trainer on the tiny model and search-v0: the value head trained with the policy,
logged and checkpointed; recomputed old log-probabilities; fp32 master weights under autocast."""

import math

import numpy as np
import torch

from agentenv.rollout import RolloutEngine, group_requests
from agentenv.train import checkpoint as ckpt
from agentenv.train.batching import build_batch
from agentenv.train.config import load_config
from agentenv.train.episodes import rollout_config
from agentenv.train.learner import build_learner
from agentenv.train.loop import train
from agentenv.train.metrics import read_metrics
from agentenv.train.model import model_path
from agentenv.train.update import update
from agentenv.train.value import VALUE_HEAD
from agentenv.trajectory import read_jsonl
from tests.train.test_train import ENV_KWARGS, small_config

# The tiny judge grades every turn: dense, varying turn rewards for GAE to assign.
PPO = {
    "algorithm": {
        "estimator": "ppo",
        "options": {"lam": 0.9},
        "judge": {"policy": "tiny", "options": {"mode": "expected"}},
    },
    "value": {"enabled": True},
}


def train_rows(run_dir):
    """The run's train rows without wall-clock timings (``*_s``)."""
    return [
        {k: v for k, v in row.items() if not k.endswith("_s")}
        for row in read_metrics(run_dir, "train")
    ]


def test_ppo_run_logs_its_value_head_and_resumes_with_it(tmp_path):
    run_dir = train(small_config(tmp_path, total_steps=2, checkpoint={"keep": 3}, **PPO))
    rows = train_rows(run_dir)
    assert [r["step"] for r in rows] == [1, 2]
    first, second = rows
    assert first["value_mean"] == 0.0  # a zero-initialised head: A = R − 0 at the first step
    assert first["value_explained_variance"] == 0.0
    assert first["value_loss"] >= 0.5 * first["return_mean"] ** 2 > 0  # ½·mean R² at V = 0
    assert second["value_mean"] != 0.0  # the head learned from the first update
    assert math.isfinite(second["value_explained_variance"]) and second["value_loss"] > 0
    folder = ckpt.latest_checkpoint(run_dir)
    head = ckpt.load_extra_state(folder)[VALUE_HEAD]
    assert head["linear.weight"].abs().sum() > 0
    groups = torch.load(folder / "trainer.pt", weights_only=False)["optimizer"]["param_groups"]
    assert [g["initial_lr"] for g in groups] == [1e-3, 1e-2]  # value.lr_scale 10
    credit = [t.metadata["credit"] for t in read_jsonl(run_dir / "rollouts.jsonl")]
    assert all(len(c["components"]["value"]) == len(c["advantage"]) for c in credit)
    # Replayed from the first checkpoint, the second step comes out the same: the head and
    # its optimizer state were restored.
    (run_dir / "checkpoints" / "latest").write_text("step-000001")
    train(None, resume=run_dir)
    assert train_rows(run_dir) == rows


def test_recompute_old_logprobs_logs_the_drift(tmp_path):
    recompute = {"loss": {"recompute_old_logprobs": True}}
    (row,) = train_rows(train(small_config(tmp_path / "on", total_steps=1, **recompute)))
    (plain,) = train_rows(train(small_config(tmp_path / "off", total_steps=1)))
    assert "old_logprob_drift" not in plain
    # float32 on the CPU: the rollout's and the training pass's log-probs agree to rounding.
    assert 0 <= row["old_logprob_drift"] < 1e-5


async def test_fp32_master_weights_train_under_bf16_autocast(tmp_path):
    data = small_config(
        tmp_path,
        model={"mixed_precision": True},
        loss={"recompute_old_logprobs": True, "entropy_coef": 0.0},
    )
    cfg = load_config(data)
    learner = build_learner(cfg, model_path(cfg), total_optimizer_steps=4)
    try:
        engine = RolloutEngine(learner.policy, rollout_config(cfg))
        trajectories = await engine.run(group_requests("search-v0", [0, 1], 2, ENV_KWARGS))
    finally:
        await learner.policy.aclose()
    rows = sum(len(t.turns) for t in trajectories)
    batch = build_batch(trajectories, np.where(np.arange(rows) % 2, 1.0, -1.0), pad_id=0)
    before = {k: v.clone() for k, v in learner.model.state_dict().items()}
    with torch.no_grad(), learner.forward():
        logits = learner.model(input_ids=batch.input_ids[:1]).logits
    assert logits.dtype == torch.bfloat16  # the forward pass runs in bfloat16 ...
    stats = update(learner, batch, cfg)
    params = list(learner.model.parameters())
    assert all(p.dtype == torch.float32 for p in params)  # ... the weights stay float32,
    state = learner.optimizer.state[params[0]]
    assert state["exp_avg"].dtype == torch.float32  # and so does AdamW's state
    assert any(not torch.equal(before[k], v) for k, v in learner.model.state_dict().items())
    # The rollout sampled in float32; the bf16 training pass sees other log-probs.
    assert stats["old_logprob_drift"] > 1e-5
