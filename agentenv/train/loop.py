"""The RL loop: rollouts → per-turn credit → token loss → optimizer step → weights to the policy.

One step of :func:`train`:

1. pick ``rollout.tasks_per_step`` training tasks (seeds in order from each env's cursor) and
   play ``rollout.group_size`` episodes of each with :class:`~agentenv.rollout.RolloutEngine`;
   with dynamic sampling, groups whose returns have zero variance are dropped and refilled;
2. turn the trainable trajectories into a :class:`~agentenv.trajectory.TurnTable` and per-turn
   advantages (:mod:`agentenv.train.credit`);
3. broadcast advantages to tokens and optimise the clipped surrogate for ``optim.epochs`` passes
   of ``optim.mini_batches`` optimizer steps, micro-batched by ``optim.micro_batch_tokens``;
4. the policy generating rollouts is the model being trained (in-process sync), or a served
   model that receives the new LoRA adapter (:class:`ServerSync`).

Every ``checkpoint.every`` steps the full state is checkpointed; ``train(resume=RUN_DIR)``
continues from the latest checkpoint with nothing lost or repeated.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from agentenv.launch import service_scope
from agentenv.planner import (
    TaskSource,
)
from agentenv.policies.hf import HFPolicy
from agentenv.rollout import (
    RolloutEngine,
    check_not_all_failed,
)
from agentenv.runfiles import eval_trajectories_name
from agentenv.train import checkpoint as ckpt
from agentenv.train.batching import TokenBatch, build_batch, micro_batches
from agentenv.train.config import ConfigError, TrainConfig
from agentenv.train.credit import TurnCredit, compute_credit
from agentenv.train.episodes import DataCursor, eval_requests, probe_envs, rollout_config
from agentenv.train.losses import AggNorm, masked_token_logprobs, rl_loss
from agentenv.train.metrics import (
    ROLLOUTS,
    MetricsLogger,
    log_sizes,
    summarize_values,
    truncate_logs,
)
from agentenv.train.model import (
    FINAL_MODEL,
    build_optimizer,
    optimizer_step,
    quiet_transformers,
    resolve_device,
    resolve_dtype,
    save_model,
    seed_everything,
)
from agentenv.train.stages import prepare_run, warm_start
from agentenv.trajectory import Trajectory, write_jsonl
from agentenv.transcript import build_transcript

# ---------------------------------------------------------------------------------------------
# Set-up
# ---------------------------------------------------------------------------------------------


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

    @property
    def tokenizer(self) -> Any:
        return self.policy.tokenizer

    def exclusive(self) -> contextlib.AbstractContextManager[Any]:
        """The policy's weight lock: no generation batch runs while weights change."""
        return getattr(self.policy, "weights_lock", None) or contextlib.nullcontext()

    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        return [p for p in self.model.parameters() if p.requires_grad]

    @torch.no_grad()
    def reference_logprobs(self, batch: TokenBatch) -> torch.Tensor:
        args = (batch.input_ids, batch.attention_mask, batch.loss_mask)
        if self.reference_is_adapter_off:
            with self.model.disable_adapter():
                return masked_token_logprobs(self.model, *args, with_entropy=False)[0]
        return masked_token_logprobs(self.reference, *args, with_entropy=False)[0]


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


def build_learner(config: TrainConfig, path: Path, *, total_optimizer_steps: int) -> Learner:
    """Load the policy from ``path``, add LoRA if asked, build the reference and optimizer."""
    device = resolve_device(config.model.device)
    dtype = resolve_dtype(config.model.dtype, device)
    policy = HFPolicy.from_pretrained(
        path,
        device=str(device),
        dtype=dtype,
        max_batch_size=config.model.max_batch_size,
        batch_invariant=config.model.batch_invariant,
    )
    base = policy.model
    ref_kind = needs_reference(config)
    reference = None
    if ref_kind == "frozen":
        reference = copy.deepcopy(base).eval().requires_grad_(False)
    model = base
    if config.model.lora.enabled:
        from peft import LoraConfig, get_peft_model

        lora = config.model.lora
        model = get_peft_model(
            base,
            LoraConfig(
                r=lora.r,
                lora_alpha=lora.alpha,
                lora_dropout=lora.dropout,
                target_modules=lora.target_modules,
                task_type="CAUSAL_LM",
            ),
        )
        policy.model = model
    model.eval()
    optim = config.optim
    optimizer, scheduler = build_optimizer(
        [p for p in model.parameters() if p.requires_grad],
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
    )


# ---------------------------------------------------------------------------------------------
# Data: which tasks each step plays
# ---------------------------------------------------------------------------------------------


def group_returns_vary(trajectories: list[Trajectory]) -> dict[str, bool]:
    """Per group id: whether its trainable trajectories' returns differ (dynamic sampling)."""
    returns: dict[str, list[float]] = {}
    for t in trajectories:
        if t.trainable:
            returns.setdefault(t.group_id, []).append(t.reward)
    return {g: len(r) > 1 and float(np.ptp(r)) > 0 for g, r in returns.items()}


async def collect(
    engine: RolloutEngine, config: TrainConfig, cursor: DataCursor, sources: list[TaskSource]
) -> tuple[list[Trajectory], dict[str, Any]]:
    """One step's trajectories (with dynamic sampling: only groups whose returns vary)."""
    want = config.rollout.tasks_per_step
    played = await engine.run(cursor.take(config, sources, want))
    stats = {"groups_played": want, "groups_dropped": 0}
    if not config.dynamic_sampling.enabled:
        return played, stats
    kept: list[Trajectory] = []
    for round_ in range(config.dynamic_sampling.max_rounds + 1):
        varying = group_returns_vary(played)
        groups = [g for g in dict.fromkeys(t.group_id for t in played) if varying.get(g)]
        stats["groups_dropped"] += len(set(varying)) - len(groups)
        have = len({t.group_id for t in kept})
        take = set(groups[: max(0, want - have)])
        kept += [t for t in played if t.group_id in take]
        have = len({t.group_id for t in kept})
        if have >= want or round_ == config.dynamic_sampling.max_rounds:
            break
        played = await engine.run(cursor.take(config, sources, want - have))
        stats["groups_played"] += want - have
    return kept, stats


async def evaluate_policy(
    policy: Any, config: TrainConfig, sources: list[TaskSource]
) -> tuple[dict[str, Any], list[Trajectory]]:
    """Success and mean return on the held-out tasks."""
    engine = RolloutEngine(policy, rollout_config(config, config.eval.temperature))
    t0 = time.perf_counter()
    trajectories = await engine.run(eval_requests(config, sources))
    check_not_all_failed(trajectories, "the held-out evaluation")
    ok = [t for t in trajectories if t.status != "error"]
    row: dict[str, Any] = {
        "episodes": len(trajectories),
        "errors": len(trajectories) - len(ok),
        "success": float(np.mean([t.success for t in ok])) if ok else 0.0,
        "reward": float(np.mean([t.reward for t in ok])) if ok else 0.0,
        "turns": float(np.mean([t.num_turns for t in ok])) if ok else 0.0,
        "eval_s": time.perf_counter() - t0,
    }
    for env in config.envs:
        mine = [t for t in ok if t.env_id == env.id]
        if len(config.envs) > 1 and mine:
            row[f"success/{env.id}"] = float(np.mean([t.success for t in mine]))
    return row, trajectories


# ---------------------------------------------------------------------------------------------
# Update
# ---------------------------------------------------------------------------------------------
@dataclass
class UpdateStats:
    loss: float = 0.0
    kl: float = 0.0
    entropy: float = 0.0
    clip_fraction: float = 0.0
    ratio_mean: float = 0.0
    approx_kl: float = 0.0
    grad_norm: float = 0.0
    tokens: int = 0
    optimizer_steps: int = 0
    _weights: float = 0.0

    def add_micro(self, terms: Any, tokens: int) -> None:
        self.loss += float(terms.loss.detach())
        self.kl += terms.kl
        self.entropy += terms.entropy
        self.clip_fraction += terms.policy.clip_fraction * tokens
        self.ratio_mean += terms.policy.ratio_mean * tokens
        self.approx_kl += terms.policy.approx_kl * tokens
        self.tokens += tokens
        self._weights += tokens

    def finish(self) -> dict[str, float]:
        passes = max(1, self.optimizer_steps)
        w = max(1.0, self._weights)
        return {
            "loss": self.loss / passes,
            "kl": self.kl / passes,
            "entropy": self.entropy / passes,
            "clip_fraction": self.clip_fraction / w,
            "ratio_mean": self.ratio_mean / w,
            "approx_kl": self.approx_kl / w,
            "grad_norm": self.grad_norm / passes,
            "optimizer_steps": self.optimizer_steps,
            "trained_tokens": self.tokens,
        }


def update(learner: Learner, batch: TokenBatch, config: TrainConfig) -> dict[str, float]:
    """Several epochs of clipped-surrogate optimisation over one rollout batch."""
    optim, loss_cfg = config.optim, config.loss
    device = learner.device
    model = learner.model
    use_ref = learner.reference is not None or learner.reference_is_adapter_off
    length = loss_cfg.norm_length or config.rollout.max_context_tokens
    budget = optim.micro_batch_tokens
    if use_ref:
        model.eval()
        parts = []
        for rows in micro_batches(batch.lengths.tolist(), budget):
            mb = batch.select(rows).to(device)
            ref = torch.zeros_like(batch.old_logprobs[rows])
            ref[:, : mb.input_ids.shape[1]] = learner.reference_logprobs(mb).float().cpu()
            parts.append((rows, ref))
        batch.ref_logprobs = torch.zeros_like(batch.old_logprobs)
        for rows, ref in parts:
            batch.ref_logprobs[rows] = ref
    stats = UpdateStats()
    params = learner.trainable_parameters()
    model.train()
    for _ in range(optim.epochs):
        order = torch.randperm(batch.size)
        for mini in torch.tensor_split(order, min(optim.mini_batches, batch.size)):
            sub = batch.select(mini)
            norm = AggNorm.of(sub.loss_mask, length)
            for rows in micro_batches(sub.lengths.tolist(), budget):
                mb = sub.select(rows).to(device)
                logp, entropy = masked_token_logprobs(
                    model, mb.input_ids, mb.attention_mask, mb.loss_mask
                )
                if not loss_cfg.entropy_coef:
                    entropy = entropy.detach()
                terms = rl_loss(
                    logp,
                    mb.old_logprobs,
                    mb.advantages,
                    mb.loss_mask,
                    entropy=entropy,
                    ref_logp=mb.ref_logprobs,
                    kl_coef=loss_cfg.kl_coef,
                    kl_kind=loss_cfg.kl_kind,
                    entropy_coef=loss_cfg.entropy_coef,
                    agg_mode=loss_cfg.agg_mode,
                    norm=norm,
                    clip_low=loss_cfg.clip_low,
                    clip_high=loss_cfg.clip_high,
                    dual_clip=loss_cfg.dual_clip,
                    turn_ids=mb.turn_ids if loss_cfg.turn_ratio else None,
                    clip_scale=mb.clip_scale if loss_cfg.turn_clip_scale else None,
                )
                terms.loss.backward()
                stats.add_micro(terms, mb.num_loss_tokens)
            with learner.exclusive():
                stats.grad_norm += optimizer_step(
                    params, learner.optimizer, learner.scheduler, optim.grad_clip
                )
            stats.optimizer_steps += 1
    model.eval()
    return stats.finish()


# ---------------------------------------------------------------------------------------------
# Weight sync to a served policy
# ---------------------------------------------------------------------------------------------
class ServerSync:
    """Push the LoRA adapter to an OpenAI-compatible server after every step.

    The adapter is saved to ``RUN/adapters/step-N`` and loaded with
    ``POST {server}/v1/load_lora_adapter {"lora_name": name, "lora_path": path}``; rollouts then
    request ``model=name``.
    """

    def __init__(self, server: str, run_dir: Path, name: str = "agentenv-policy") -> None:
        self.server = server.rstrip("/")
        self.folder = run_dir / "adapters"
        self.name = name

    async def push(self, model: torch.nn.Module, step: int) -> Path:
        import httpx

        path = (self.folder / f"step-{step:06d}").resolve()
        model.save_pretrained(path)
        url = f"{self.server}/v1/load_lora_adapter"
        async with httpx.AsyncClient(timeout=60.0) as client:
            for attempt in range(3):
                try:
                    response = await client.post(
                        url, json={"lora_name": self.name, "lora_path": str(path)}
                    )
                    response.raise_for_status()
                    return path
                except httpx.HTTPError as exc:
                    if attempt == 2:
                        raise RuntimeError(f"weight sync to {url} failed: {exc}") from exc
                    await asyncio.sleep(0.5 * 2**attempt)
        return path


# ---------------------------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------------------------
def trajectory_metrics(trajectories: list[Trajectory]) -> dict[str, Any]:
    """Reward, success, per-component rewards, lengths and statuses of a batch of episodes."""
    ok = [t for t in trajectories if t.trainable]
    row: dict[str, Any] = {
        "episodes": len(trajectories),
        "errors": len(trajectories) - len(ok),
        "truncated": sum(t.status == "truncated" for t in ok),
    }
    if not ok:
        return row
    row["reward"] = float(np.mean([t.reward for t in ok]))
    row["success"] = float(np.mean([t.success for t in ok]))
    row["turns"] = float(np.mean([t.num_turns for t in ok]))
    row["response_tokens"] = float(np.mean([sum(t.loss_mask) for t in ok]))
    components: dict[str, list[float]] = {}
    for i, t in enumerate(ok):
        for turn in t.turns:
            for name, value in turn.reward_components.items():
                components.setdefault(name, [0.0] * len(ok))[i] += float(value)
    for name, values in components.items():
        row[f"reward/{name}"] = float(np.mean(values))
    return row


class Run:
    """State of one training run; :meth:`step` does one RL step."""

    def __init__(
        self,
        config: TrainConfig,
        run_dir: Path,
        start: Path,
        sources: tuple[list[TaskSource], list[TaskSource]],
        *,
        resume: bool,
    ) -> None:
        self.config = config
        self.run_dir = run_dir
        self.sources, self.held_out = sources
        self.step_count = 0
        self.cursor = DataCursor([0] * len(config.envs))
        seed_everything(config.seed)
        total_opt = config.total_steps * config.optim.epochs * config.optim.mini_batches
        self.learner = build_learner(config, start, total_optimizer_steps=max(1, total_opt))
        self.sync: ServerSync | None = None
        self.rollout_policy = self.learner.policy
        if config.model.server:
            if not config.model.lora.enabled:
                raise ConfigError("model.server: syncing to a server needs model.lora.enabled")
            from agentenv.policies.openai import OpenAIPolicy

            self.sync = ServerSync(config.model.server, run_dir)
            self.rollout_policy = OpenAIPolicy(
                config.model.server, self.sync.name, tokenizer=self.learner.tokenizer
            )
        self.engine = RolloutEngine(self.rollout_policy, rollout_config(config))
        replayed_from = self._restore() if resume else None
        self.logger = MetricsLogger(
            run_dir,
            total_steps=config.total_steps,
            tensorboard=config.logging.tensorboard,
            live=config.logging.live,
            purge_step=replayed_from,
        )

    @classmethod
    async def open(cls, config: TrainConfig, run_dir: Path, *, resume: bool) -> Run:
        """Probe every env, then build the run on :func:`warm_start`'s model."""
        sources = await probe_envs(config)
        start = await warm_start(config, run_dir, sources[0])
        return cls(config, run_dir, start, sources, resume=resume)

    def _restore(self) -> int:
        """Continue from the latest checkpoint, the logs cut back to what they held then (no
        checkpoint: start over, logs emptied); return the first step that will be logged again."""
        folder = ckpt.latest_checkpoint(self.run_dir)
        if folder is None:
            truncate_logs(self.run_dir, {})
            return 0
        state = ckpt.load_checkpoint(
            folder,
            model=self.learner.model,
            optimizer=self.learner.optimizer,
            scheduler=self.learner.scheduler,
        )
        if "logs" not in state:
            raise ConfigError(f"--resume: {folder} predates log sizes in checkpoints")
        self.step_count = int(state["step"])
        self.cursor = DataCursor(list(state["consumed"]))
        truncate_logs(self.run_dir, state["logs"])
        return self.step_count + 1

    def checkpoint(self) -> None:
        ckpt.save_checkpoint(
            self.run_dir,
            self.step_count,
            model=self.learner.model,
            optimizer=self.learner.optimizer,
            scheduler=self.learner.scheduler,
            state={"consumed": self.cursor.consumed, "logs": log_sizes(self.run_dir)},
            tokenizer=self.learner.tokenizer,
            keep=self.config.checkpoint.keep,
        )

    async def evaluate(self) -> dict[str, Any]:
        row, trajectories = await evaluate_policy(self.rollout_policy, self.config, self.held_out)
        row = {"kind": "eval", "step": self.step_count, **row}
        path = self.run_dir / eval_trajectories_name(self.step_count)
        write_jsonl(trajectories, path, transcript=self._transcript())
        self.logger.log(row)
        return row

    async def step(self) -> dict[str, Any]:
        config = self.config
        t0 = time.perf_counter()
        generated_before = self.engine.generated_tokens
        trajectories, sample_stats = await collect(self.engine, config, self.cursor, self.sources)
        check_not_all_failed(trajectories, f"training step {self.step_count + 1}")
        rollout_s = time.perf_counter() - t0
        generated = self.engine.generated_tokens - generated_before
        trainable = [t for t in trajectories if t.trainable]
        row: dict[str, Any] = {"kind": "train", "step": self.step_count + 1}
        row.update(trajectory_metrics(trajectories))
        row.update(sample_stats)
        t1 = time.perf_counter()
        credit = None
        if trainable:
            credit = await compute_credit(config.algorithm, trainable, self.rollout_policy)
            row.update(credit.metrics)
            batch = build_batch(
                trainable,
                credit.advantages,
                pad_id=self.learner.pad_id,
                turn_clip_scale=credit.clip_scale,
            )
            row.update(summarize_values("adv", batch.advantages[batch.loss_mask > 0].tolist()))
            row.update(update(self.learner, batch, config))
        update_s = time.perf_counter() - t1
        self.step_count += 1
        if self.sync is not None:
            await self.sync.push(self.learner.model, self.step_count)
        if config.logging.save_trajectories:
            self.save_rollouts(trajectories, trainable, credit)
        row.update(
            lr=self.learner.scheduler.get_last_lr()[0],
            rollout_s=rollout_s,
            update_s=update_s,
            tokens_per_s=(generated + row.get("trained_tokens", 0))
            / max(1e-9, rollout_s + update_s),
            generated_tokens=generated,
        )
        self.logger.log(row)
        return row

    def _transcript(self) -> Callable[[Trajectory], dict[str, Any]] | None:
        """What gives each saved trajectory its transcript (None: ``logging.transcripts`` off)."""
        if not self.config.logging.transcripts:
            return None
        tokenizer = self.learner.tokenizer
        return lambda trajectory: build_transcript(trajectory, tokenizer)

    def save_rollouts(
        self, trajectories: list[Trajectory], trainable: list[Trajectory], credit: TurnCredit | None
    ) -> None:
        """Append the step's trajectories to ``RUN/rollouts.jsonl``, each with ``metadata.step``
        and, for the trainable ones, ``metadata.credit`` (:meth:`TurnCredit.per_trajectory`)."""
        for t in trajectories:
            t.metadata["step"] = self.step_count
        if credit is not None:
            records = credit.per_trajectory(self.config.algorithm.estimator)
            for t, record in zip(trainable, records, strict=True):
                t.metadata["credit"] = record
        write_jsonl(
            trajectories, self.run_dir / ROLLOUTS, append=True, transcript=self._transcript()
        )

    async def run(self) -> None:
        config = self.config
        if self.sync is not None:
            await self.sync.push(self.learner.model, self.step_count)
        if self.step_count == 0 and config.eval.at_start and config.eval.tasks:
            await self.evaluate()
        while self.step_count < config.total_steps:
            await self.step()
            done = self.step_count == config.total_steps
            if config.eval.every and self.step_count % config.eval.every == 0 and not done:
                await self.evaluate()
            if (config.checkpoint.every and self.step_count % config.checkpoint.every == 0) or done:
                self.checkpoint()
        if config.eval.at_end and config.eval.tasks:
            await self.evaluate()
        self.export()

    def export(self) -> None:
        """Write the final policy as a plain model folder (LoRA merged) to ``RUN/model``."""
        out = self.run_dir / FINAL_MODEL
        model = self.learner.model
        if hasattr(model, "merge_and_unload"):
            model = copy.deepcopy(model).merge_and_unload()
        save_model(model, self.learner.tokenizer, out)

    def close(self) -> None:
        self.logger.close()


def train(
    config: str | Path | dict | TrainConfig | None = None,
    overrides: list[str] | None = None,
    resume: Path | None = None,
) -> Path:
    """Run (or resume) RL training and return the run folder."""
    cfg, run_dir = prepare_run(config, overrides, resume)
    quiet_transformers()

    async def main() -> None:
        async with service_scope():  # one launched server per service for the whole run
            run = await Run.open(cfg, run_dir, resume=resume is not None)
            try:
                await run.run()
            finally:
                run.close()
                for policy in {id(p): p for p in (run.rollout_policy, run.learner.policy)}.values():
                    await _close(policy)

    asyncio.run(main())
    return run_dir


async def _close(policy: Any) -> None:
    close = getattr(policy, "aclose", None)
    if close is not None:
        await close()
