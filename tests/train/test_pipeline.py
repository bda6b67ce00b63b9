"""The whole pipeline on the tiny model for every combination of warm-up stages before RL: each
enabled stage saves its model and metrics, RL starts from the last one, the run exports
``RUN/model`` and writes ``summary.json``."""

import json

import pytest
from safetensors.torch import load_file

from agentenv.train.loop import train
from agentenv.train.metrics import read_metrics
from tests.train.test_train import small_config

PRETRAIN = {"steps": 6, "texts": 20, "batch_sequences": 4, "seq_len": 32, "warmup_steps": 1}
SFT = {"episodes": 4, "epochs": 1}


@pytest.mark.parametrize(
    ("pretrain", "sft"), [(False, False), (True, False), (False, True), (True, True)]
)
def test_every_stage_combination_runs_and_chains_its_models(tmp_path, pretrain, sft):
    cfg = small_config(
        tmp_path,
        total_steps=1,
        pretrain={"enabled": pretrain, **PRETRAIN},
        sft={"enabled": sft, **SFT},
        eval={"tasks": 2},
        rollout={"max_tokens_per_turn": 64},  # room for the expert's actions
        checkpoint={"every": 0},
    )
    run_dir = train(cfg)
    for stage, enabled, kind in (("pretrain", pretrain, "pretrain"), ("sft", sft, "sft")):
        assert (run_dir / stage / "model" / "config.json").is_file() == enabled
        if enabled:
            assert len(read_metrics(run_dir / stage, kind)) > 0
    assert [r["step"] for r in read_metrics(run_dir, "eval")] == [0, 1]
    assert len(read_metrics(run_dir, "train")) == 1
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["rl_steps"] == 1 and summary["eval_episodes"] == 2
    final = load_file(run_dir / "model" / "model.safetensors")
    if sft:  # RL started from SFT's model and changed it
        start = load_file(run_dir / "sft" / "model" / "model.safetensors")
        assert final.keys() == start.keys()
        assert any(not (final[k] == start[k]).all() for k in final)
