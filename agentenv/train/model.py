"""The trained model's plumbing, shared by every stage (warm-up, SFT, RL): seeding, loading on
the device and in the dtype :mod:`agentenv.devices` picks, the model folders (where training
starts, load, save) and the optimizer with its schedule and one optimizer step."""

from __future__ import annotations

import math
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
from transformers.utils import logging as hf_logging

from agentenv import models
from agentenv.devices import resolve_device, resolve_dtype
from agentenv.train.config import ConfigError, TrainConfig

FINAL_MODEL = "model"


def quiet_transformers() -> None:
    """No per-file progress bars from transformers while saving and loading checkpoints."""
    hf_logging.disable_progress_bar()


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def model_path(config: TrainConfig) -> Path:
    """The folder the policy starts from: ``init_from`` (a model or run folder) or ``spec``."""
    if config.model.init_from:
        start = Path(config.model.init_from)
        for candidate in (start / FINAL_MODEL, start):
            if (candidate / "config.json").is_file():
                return candidate
        raise ConfigError(f"model.init_from: {start} holds no model (no config.json)")
    spec = config.model.spec
    if spec == "tiny":
        return models.tiny(**config.model.tiny)
    if spec in models.PREPARERS:
        return models.prepare(spec)
    path = Path(spec)
    if not (path / "config.json").is_file():
        raise ConfigError(f"model.spec: {spec!r} is not 'tiny', 'smollm2' or a model folder")
    return path


def load_trainable(config: TrainConfig, start: Path) -> tuple[Any, Any, torch.device]:
    """The model at ``start`` (on ``model.device`` in ``model.dtype``), its tokenizer, the device."""
    device = resolve_device(config.model.device)
    dtype = resolve_dtype(config.model.dtype, device)
    model = AutoModelForCausalLM.from_pretrained(start, dtype=dtype).to(device)
    return model, AutoTokenizer.from_pretrained(start), device


def save_model(model: Any, tokenizer: Any, folder: Path) -> Path:
    """``model`` and ``tokenizer`` as one plain model folder; returns ``folder``."""
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def lr_lambda(total: int, warmup: int, schedule: str, floor: float):
    """Multiplier of the base lr at optimizer step s: linear warm-up, then cosine to ``floor``."""

    def factor(s: int) -> float:
        if warmup and s < warmup:
            return (s + 1) / warmup
        if schedule == "constant" or total <= warmup:
            return 1.0
        progress = min(1.0, (s - warmup) / max(1, total - warmup))
        return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))

    return factor


def build_optimizer(
    params: list[torch.nn.Parameter] | list[dict[str, Any]],
    lr: float,
    betas: tuple[float, float],
    eps: float,
    weight_decay: float,
    total: int,
    warmup: int,
    schedule: str,
    floor: float,
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """AdamW over ``params`` (parameters, or parameter groups, a group's own ``lr`` replacing
    ``lr``) and its schedule, which scales every group's lr alike."""
    optimizer = torch.optim.AdamW(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lr_lambda(total, warmup, schedule, floor)
    )
    return optimizer, scheduler


def optimizer_step(
    params: list[torch.nn.Parameter],
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    grad_clip: float | None,
) -> float:
    """Clip the gradient norm to ``grad_clip`` (None: no clipping), step the optimizer and
    the schedule, zero the gradients; return the norm before clipping."""
    norm = torch.nn.utils.clip_grad_norm_(params, grad_clip or float("inf"))
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return float(norm)
