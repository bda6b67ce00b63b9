"""One device and dtype choice (agentenv.devices) for evaluation and training alike."""

from __future__ import annotations

import pytest
import torch

from agentenv.devices import native_bf16, resolve_device, resolve_dtype
from agentenv.policies.hf import HFPolicy
from agentenv.train.config import load_config
from agentenv.train.model import load_trainable


def test_names_and_torch_objects_resolve_as_given():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(torch.device("cuda:1")) == torch.device("cuda:1")
    assert resolve_dtype("float16", "cpu") is torch.float16
    assert resolve_dtype(torch.bfloat16, "cpu") is torch.bfloat16
    assert resolve_dtype("auto", "cpu") is torch.float32
    for bad in ("float64x", "Tensor"):
        with pytest.raises(ValueError, match=f"unknown dtype '{bad}'"):
            resolve_dtype(bad, "cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks a machine without CUDA")
def test_without_cuda_auto_is_the_cpu_in_float32():
    assert resolve_device("auto") == torch.device("cpu")
    assert not native_bf16("cuda")
    assert resolve_dtype("auto", "cuda") is torch.float32


@pytest.mark.parametrize(
    ("dtype", "expected"), [("auto", torch.float32), ("bfloat16", torch.bfloat16)]
)
def test_the_policy_and_the_trainer_load_a_model_the_same_way(tiny_path, dtype, expected):
    policy = HFPolicy.from_pretrained(tiny_path, device="cpu", dtype=dtype)
    try:
        assert policy.model.dtype is expected and policy.device == torch.device("cpu")
    finally:
        policy.close()
    config = load_config({"model": {"spec": str(tiny_path), "device": "cpu", "dtype": dtype}})
    model, _, device = load_trainable(config, tiny_path)
    assert model.dtype is expected and device == torch.device("cpu")
