"""The trainer on a tool env: SFT on expert tool calls, then RL with per-call credit as a
process reward — tool-call tokens are trained, tool results never are."""

import json

import numpy as np

from agentenv.train.loop import train
from agentenv.train.metrics import read_metrics
from agentenv.train.stages import sft

WORLD = {"num_customers": 40, "num_products": 12, "test_size": 8, "compositional_size": 4,
         "max_calls": 3, "max_turns": 4}  # fmt: skip


def tool_config(tmp_path, **sections):
    data = {
        "name": "tools",
        "output_dir": str(tmp_path / "runs"),
        "total_steps": 1,
        "model": {"spec": "tiny", "max_batch_size": 8},
        "envs": [{"id": "tooluse-v0", "kwargs": WORLD}],
        "rollout": {
            "group_size": 2,
            "tasks_per_step": 2,
            "max_tokens_per_turn": 160,
            "max_context_tokens": 4096,
        },
        "algorithm": {"estimator": "grpo", "process_rewards": {"call_credit": 0.5}},
        "optim": {"lr": 1e-3, "micro_batch_tokens": 8192},
        "eval": {"tasks": 0},
        "checkpoint": {"every": 1},
        "logging": {"live": False},
    }
    data.update(sections)
    return data


def test_sft_trains_tool_call_tokens_and_never_tool_results(tmp_path):
    data = tool_config(
        tmp_path, sft={"enabled": True, "episodes": 6, "epochs": 1, "batch_sequences": 4}
    )
    run_dir = sft(data)
    demos = [json.loads(x) for x in (run_dir / "demonstrations.jsonl").read_text().splitlines()]
    assert demos and all(d["success"] for d in demos)
    assert any(t["tool_calls"] for d in demos for t in d["turns"]), "the expert calls tools"
    for demo in demos:
        ids, mask = np.array(demo["token_ids"]), np.array(demo["loss_mask"])
        # every generated token is a target; the tool results that came back are not
        assert mask.sum() == sum(t["action_tokens"] for t in demo["turns"])
        assert mask[: demo["prompt_length"]].sum() == 0
        for turn in demo["turns"]:
            in_turn = np.array(demo["turn_ids"]) == turn["index"]
            assert mask[in_turn].sum() == turn["action_tokens"]
            assert (mask[in_turn] == 0).sum() == turn["observation_tokens"]
        assert len(ids) == len(mask)
    assert read_metrics(run_dir, "sft")


def test_rl_step_on_a_tool_env_reports_its_components(tmp_path):
    (row,) = read_metrics(train(tool_config(tmp_path)), "train")
    assert row["episodes"] == 4 and row["errors"] == 0 and np.isfinite(row["loss"])
    for name in ("call_credit", "format", "outcome", "state_match", "toolrl_score"):
        assert f"reward/{name}" in row
