"""The policy being trained: its model (with LoRA when configured), the optional frozen KL
reference, PPO's value head on its trunk, the optimizer and its schedule.

With ``model.mixed_precision`` the parameters (and so AdamW's state) are float32 master weights
and every training forward pass runs under ``torch.autocast(bfloat16)`` (:meth:`Learner.forward`),
on CUDA and on the CPU alike. The value head's parameters are a second optimizer group with the
learning rate ``optim.lr × value.lr_scale``; the schedule scales both.
"""

from __future__ import annotations

import contextlib
import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from peft import LoraConfig, get_peft_model

from agentenv.devices import resolve_device, resolve_dtype
from agentenv.policies.hf import HFPolicy
from agentenv.train.batching import TokenBatch, build_batch
from agentenv.train.config import ConfigError, TrainConfig
from agentenv.train.losses import masked_token_logprobs
from agentenv.train.model import build_optimizer
from agentenv.train.value import TurnValues, ValueHead, turn_values
from agentenv.trajectory import Trajectory


@dataclass
class Learner:
    """The policy being trained, its optional KL reference, optimizer and schedule."""

    policy: Any
    model: torch.nn.Module
    device: torch.device
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    reference: torch.nn.Module | None = None
    reference_is_adapter_off: bool = False
    pad_id: int = 0
    value_head: ValueHead | None = None
    mixed_precision: bool = False

    @property
    def tokenizer(self) -> Any:
        return self.policy.tokenizer

    @property
    def uses_reference(self) -> bool:
        return self.reference is not None or self.reference_is_adapter_off

    def exclusive(self) -> contextlib.AbstractContextManager[Any]:
        """The policy's weight lock: no generation batch runs while weights change."""
        return getattr(self.policy, "weights_lock", None) or contextlib.nullcontext()

    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        """The policy's trainable parameters, then the value head's."""
        head = [] if self.value_head is None else list(self.value_head.parameters())
        return [p for p in self.model.parameters() if p.requires_grad] + head

    def forward(self) -> contextlib.AbstractContextManager[Any]:
        """The context of every training forward pass: bfloat16 autocast with
        ``model.mixed_precision``, nothing otherwise."""
        if not self.mixed_precision:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=torch.bfloat16)

    @torch.no_grad()
    def reference_logprobs(self, batch: TokenBatch) -> torch.Tensor:
        args = (batch.input_ids, batch.attention_mask, batch.loss_mask)
        with self.forward():
            if self.reference_is_adapter_off:
                with self.model.disable_adapter():
                    return masked_token_logprobs(self.model, *args, with_entropy=False)[0]
            return masked_token_logprobs(self.reference, *args, with_entropy=False)[0]

    def values_of(self, trajectories: list[Trajectory], token_budget: int) -> TurnValues:
        """The value head's per-turn values (and end values) of ``trajectories``, before an
        update: what GAE reads and the value loss clips around."""
        if self.value_head is None:
            raise ValueError("values_of: this learner has no value head (value.enabled)")
        num_turns = np.array([len(t.turns) for t in trajectories], dtype=np.int64)
        batch = build_batch(trajectories, np.zeros(num_turns.sum()), pad_id=self.pad_id)
        self.model.eval()
        return turn_values(
            self.model,
            self.value_head,
            batch,
            num_turns,
            token_budget=token_budget,
            device=self.device,
            context=self.forward,
        )


def needs_reference(config: TrainConfig) -> str:
    """``none``, ``frozen`` or ``adapters`` after resolving ``model.reference: auto``."""
    choice = config.model.reference
    if choice == "auto":
        if config.loss.kl_coef == 0:
            return "none"
        return "adapters" if config.model.lora.enabled else "frozen"
    if choice == "adapters" and not config.model.lora.enabled:
        raise ConfigError("model.reference: 'adapters' needs model.lora.enabled")
    return choice


def with_lora(model: torch.nn.Module, config: TrainConfig) -> torch.nn.Module:
    """``model`` wrapped with the configured LoRA adapters (``model.lora``)."""
    lora = config.model.lora
    return get_peft_model(
        model,
        LoraConfig(
            r=lora.r,
            lora_alpha=lora.alpha,
            lora_dropout=lora.dropout,
            target_modules=lora.target_modules,
            task_type="CAUSAL_LM",
        ),
    )


def build_learner(config: TrainConfig, path: Path, *, total_optimizer_steps: int) -> Learner:
    """Load the policy from ``path``, add LoRA if asked, build the reference and optimizer."""
    device = resolve_device(config.model.device)
    mixed = config.model.mixed_precision
    dtype = torch.float32 if mixed else resolve_dtype(config.model.dtype, device)
    policy = HFPolicy.from_pretrained(
        path,
        device=str(device),
        dtype=dtype,
        max_batch_size=config.model.max_batch_size,
        batch_invariant=config.model.batch_invariant,
        prefix_cache_mib=config.model.prefix_cache_mib,
    )
    base = policy.model
    ref_kind = needs_reference(config)
    reference = None
    if ref_kind == "frozen":
        reference = copy.deepcopy(base).eval().requires_grad_(False)
    model = base
    if config.model.lora.enabled:
        model = with_lora(base, config)
        policy.model = model
    model.eval()
    optim = config.optim
    groups: list[dict[str, Any]] = [{"params": [p for p in model.parameters() if p.requires_grad]}]
    head = None
    if config.value.enabled:
        head = ValueHead.for_model(model)
        groups.append({"params": list(head.parameters()), "lr": optim.lr * config.value.lr_scale})
    optimizer, scheduler = build_optimizer(
        groups,
        optim.lr,
        optim.betas,
        optim.eps,
        optim.weight_decay,
        total_optimizer_steps,
        optim.warmup_steps,
        optim.schedule,
        optim.min_lr_ratio,
    )
    pad = policy.tokenizer.pad_token_id
    return Learner(
        policy=policy,
        model=model,
        device=device,
        optimizer=optimizer,
        scheduler=scheduler,
        reference=reference,
        reference_is_adapter_off=ref_kind == "adapters",
        pad_id=int(pad if pad is not None else 0),
        value_head=head,
        mixed_precision=mixed,
    )
