"""Where a model runs and in which precision: one choice for evaluation and training alike.

``"auto"`` means CUDA when a CUDA device is visible, else the CPU; and bfloat16 on a CUDA device
with native bf16 (compute capability 8.0 and later, or ROCm), float32 everywhere else. A CUDA
device without native bf16 (V100, T4) gets float32, not float16: the trainer has no loss
scaling, without which float16 gradients underflow, and a policy sampled in float16 while
trained in another precision would see its logprobs drift apart. Ask for ``"float16"`` by name
where it is wanted.

Needs torch (the ``train`` extra); only the modules that hold models import it.
"""

from __future__ import annotations

import torch

AUTO = "auto"


def resolve_device(name: str | torch.device = AUTO) -> torch.device:
    """The device ``name`` means: ``"auto"`` is CUDA when available, else CPU; any other name is
    read by torch (``"cpu"``, ``"cuda"``, ``"cuda:1"``)."""
    if isinstance(name, torch.device):
        return name
    if name == AUTO:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def native_bf16(device: str | torch.device) -> bool:
    """Whether ``device`` computes in bfloat16 natively (a CUDA device of compute capability
    >= 8.0, or ROCm); emulated bf16 does not count."""
    device = torch.device(device)
    if device.type != "cuda" or not torch.cuda.is_available():
        return False
    with torch.cuda.device(device):
        return torch.cuda.is_bf16_supported(including_emulation=False)


def resolve_dtype(name: str | torch.dtype, device: str | torch.device) -> torch.dtype:
    """The dtype ``name`` means on ``device``: ``"auto"`` is bfloat16 where :func:`native_bf16`,
    else float32; a dtype or a torch dtype name (``"float32"``, ``"bfloat16"``, ``"float16"``)
    is taken as given. An unknown name is a :class:`ValueError`."""
    if isinstance(name, torch.dtype):
        return name
    if name == AUTO:
        return torch.bfloat16 if native_bf16(device) else torch.float32
    value = getattr(torch, name, None)
    if not isinstance(value, torch.dtype):
        raise ValueError(f"unknown dtype {name!r}; use e.g. 'float32', 'bfloat16', 'auto'")
    return value
