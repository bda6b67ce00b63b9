"""CUDA checks, run on a GPU machine with `pytest -m gpu` (deselected by default)."""

from __future__ import annotations

import pytest
import torch

from agentenv.policies.base import SamplingParams

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


@pytest.fixture(scope="module")
def cuda_policy():
    from agentenv.models import tiny
    from agentenv.policies.hf import HFPolicy

    return HFPolicy.from_pretrained(tiny(), device="cuda", dtype="bfloat16")


def test_auto_is_cuda_with_bf16_where_native():
    from agentenv.devices import native_bf16, resolve_device, resolve_dtype

    device = resolve_device("auto")
    assert device.type == "cuda"
    native = torch.cuda.get_device_capability(device)[0] >= 8 or torch.version.hip is not None
    assert native_bf16(device) is native
    assert resolve_dtype("auto", device) is (torch.bfloat16 if native else torch.float32)


async def test_bf16_generation_on_cuda_is_exact_and_batched(cuda_policy):
    tok = cuda_policy.tokenizer
    prompts = [tok.encode(f"question {i}") for i in range(16)]
    outs = await cuda_policy.generate(prompts, SamplingParams(max_tokens=8, temperature=0.0))
    assert all(len(o.token_ids) == len(o.logprobs) for o in outs)
    scored = await cuda_policy.score(prompts, [o.token_ids for o in outs])
    for out, lp in zip(outs, scored, strict=True):
        assert torch.allclose(torch.tensor(out.logprobs), torch.tensor(lp), atol=5e-2)


def test_training_steps_run_on_cuda(tmp_path):
    from agentenv.train import train
    from agentenv.train.metrics import read_metrics

    config = {
        "name": "gpu",
        "output_dir": str(tmp_path),
        "total_steps": 2,
        "model": {"spec": "tiny", "device": "cuda", "dtype": "bfloat16"},
        "envs": [
            {"id": "search-v0", "kwargs": {"num_entities": 30, "max_hops": 1, "max_turns": 2}}
        ],
        "rollout": {"group_size": 4, "tasks_per_step": 4, "max_tokens_per_turn": 16},
        "eval": {"tasks": 0},
        "logging": {"live": False},
    }
    run_dir = train(config)
    steps = read_metrics(run_dir, "train")
    assert len(steps) == 2 and all(s["grad_norm"] == s["grad_norm"] for s in steps)


def test_ppo_with_fp32_master_weights_on_cuda(tmp_path):
    from safetensors.torch import load_file

    from agentenv.train import train
    from agentenv.train.metrics import read_metrics

    config = {
        "name": "gpu-ppo",
        "output_dir": str(tmp_path),
        "total_steps": 2,
        "model": {"spec": "tiny", "device": "cuda", "mixed_precision": True},
        "envs": [
            {"id": "search-v0", "kwargs": {"num_entities": 30, "max_hops": 1, "max_turns": 2}}
        ],
        "rollout": {"group_size": 4, "tasks_per_step": 4, "max_tokens_per_turn": 16},
        "algorithm": {"estimator": "ppo"},
        "value": {"enabled": True},
        "loss": {"recompute_old_logprobs": True},
        "eval": {"tasks": 0},
        "logging": {"live": False},
    }
    run_dir = train(config)
    steps = read_metrics(run_dir, "train")
    assert len(steps) == 2
    assert all("value_loss" in s and s["old_logprob_drift"] >= 0 for s in steps)
    weights = load_file(run_dir / "model" / "model.safetensors")
    assert all(w.dtype == torch.float32 for w in weights.values())  # fp32 master weights
