"""The RL stage: a :class:`Run` repeats collection → credit → update → weight sync.

One step of :meth:`Run.step`:

1. **collection** (:mod:`agentenv.train.collect`): ``rollout.tasks_per_step`` training tasks
   (seeds in order from each env's cursor), ``rollout.group_size`` episodes of each through
   :class:`~agentenv.rollout.RolloutEngine` (with a ``ray:`` address, the rollout workers of a
   Ray cluster: :mod:`agentenv.train.fanout`); with dynamic sampling, groups whose returns have
   zero variance are dropped and refilled;
2. **credit** (:mod:`agentenv.train.credit`): the trainable trajectories become a
   :class:`~agentenv.trajectory.TurnTable` and per-turn advantages (for PPO, from the value
   head's per-turn values, :mod:`agentenv.train.value`, computed first);
3. **update** (:mod:`agentenv.train.update`): advantages broadcast to tokens, the clipped
   surrogate optimised for ``optim.epochs`` passes of ``optim.mini_batches`` optimizer steps,
   micro-batched by ``optim.micro_batch_tokens``;
4. **weight sync** (:mod:`agentenv.train.sync`): the policy generating rollouts is the model
   being trained (in-process, nothing to do), a served model that receives the new LoRA
   adapter, or the Ray workers' copies, which receive the new weights through the object store.

:func:`train` is the whole pipeline: the run folder, the warm-up stages
(:mod:`agentenv.train.stages`), held-out evaluation before, during and after RL, the exported
model (``RUN/model``) and ``RUN/summary.json``. Every ``checkpoint.every`` steps the full state
is checkpointed; ``train(resume=RUN_DIR)`` continues from the latest checkpoint with nothing
lost or repeated.
"""

from __future__ import annotations

import asyncio
import copy
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from agentenv.evaluate import EngineFactory
from agentenv.launch import service_scope
from agentenv.planner import TaskSource
from agentenv.policies.openai import OpenAIPolicy
from agentenv.rollout import RolloutEngine, check_not_all_failed
from agentenv.runfiles import eval_trajectories_name
from agentenv.scale import require_ray
from agentenv.train import checkpoint as ckpt
from agentenv.train.batching import build_batch
from agentenv.train.collect import collect, evaluate_policy, trajectory_metrics
from agentenv.train.config import ConfigError, TrainConfig
from agentenv.train.credit import CreditAssigner, TurnCredit
from agentenv.train.episodes import DataCursor, probe_envs, rollout_config
from agentenv.train.learner import build_learner
from agentenv.train.metrics import (
    ROLLOUTS,
    MetricsLogger,
    log_sizes,
    summarize_values,
    truncate_logs,
)
from agentenv.train.model import FINAL_MODEL, quiet_transformers, save_model, seed_everything
from agentenv.train.stages import prepare_run, warm_start
from agentenv.train.summary import run_summary, write_summary
from agentenv.train.sync import ServerSync, WeightSync
from agentenv.train.update import update
from agentenv.train.value import VALUE_HEAD, with_value_targets
from agentenv.trajectory import Trajectory, write_jsonl
from agentenv.transcript import build_transcript

if TYPE_CHECKING:
    from agentenv.scale.ray import RayFanout

CREDIT_STATE = "credit"
"""The key of the credit assigner's state (PRM, progress head) in a checkpoint's extra state."""


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
        self.credit_assigner = CreditAssigner.for_run(
            config, start, self.learner.model, pad_id=self.learner.pad_id
        )
        served: ServerSync | None = None
        self.rollout_policy = self.learner.policy
        if config.model.server:
            if not config.model.lora.enabled:
                raise ConfigError("model.server: syncing to a server needs model.lora.enabled")
            served = ServerSync(config.model.server, run_dir)
            self.rollout_policy = OpenAIPolicy(
                config.model.server, served.name, tokenizer=self.learner.tokenizer
            )
        self.sync: WeightSync | None = served
        replayed_from = self._restore() if resume else None
        self.logger = MetricsLogger(
            run_dir,
            total_steps=config.total_steps,
            tensorboard=config.logging.tensorboard,
            live=config.logging.live,
            purge_step=replayed_from,
        )
        self.fanout: RayFanout | None = None
        self.make_engine: EngineFactory = RolloutEngine
        if config.ray.address is not None:
            # the ray extra: imported only when the config asks for Ray
            from agentenv.train.fanout import start_fanout

            self.fanout = start_fanout(
                config,
                start,
                self.learner.tokenizer,
                served_as=None if served is None else served.name,
            )
            self.make_engine = self.fanout.engine
            self.sync = self.sync or self.fanout
        self.engine = self.make_engine(self.rollout_policy, rollout_config(config))

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
        extra = ckpt.load_extra_state(folder)
        head = self.learner.value_head
        if head is not None:
            if VALUE_HEAD not in extra:
                raise ConfigError(f"--resume: {folder} holds no value head (value.enabled)")
            head.load_state_dict(extra[VALUE_HEAD])
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
        self.credit_assigner.load_state_dict(extra.get(CREDIT_STATE, {}))
        truncate_logs(self.run_dir, state["logs"])
        return self.step_count + 1

    def checkpoint(self) -> None:
        extra: dict[str, Any] = {}
        if credit := self.credit_assigner.state_dict():
            extra[CREDIT_STATE] = credit
        if self.learner.value_head is not None:
            extra[VALUE_HEAD] = self.learner.value_head.state_dict()
        ckpt.save_checkpoint(
            self.run_dir,
            self.step_count,
            model=self.learner.model,
            optimizer=self.learner.optimizer,
            scheduler=self.learner.scheduler,
            state={"consumed": self.cursor.consumed, "logs": log_sizes(self.run_dir)},
            tokenizer=self.learner.tokenizer,
            keep=self.config.checkpoint.keep,
            extra_state=extra or None,
        )

    async def evaluate(self) -> dict[str, Any]:
        row, trajectories = await evaluate_policy(
            self.rollout_policy, self.config, self.held_out, make_engine=self.make_engine
        )
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
            values = None
            if self.learner.value_head is not None:
                values = self.learner.values_of(trainable, config.optim.micro_batch_tokens)
            credit = await self.credit_assigner(trainable, self.rollout_policy, values)
            row.update(credit.metrics)
            batch = build_batch(
                trainable,
                credit.advantages,
                pad_id=self.learner.pad_id,
                turn_clip_scale=credit.clip_scale,
            )
            if values is not None and credit.returns is not None:
                num_turns = np.array([len(t.turns) for t in trainable])
                batch = with_value_targets(batch, num_turns, credit.returns, values.values)
            row.update(summarize_values("adv", batch.advantages[batch.loss_mask > 0].tolist()))
            row.update(update(self.learner, batch, config))
        update_s = time.perf_counter() - t1
        self.step_count += 1
        t2 = time.perf_counter()
        if self.sync is not None:
            await self.sync.push(self.learner.model, self.step_count)
        sync_s = time.perf_counter() - t2
        if config.logging.save_trajectories:
            self.save_rollouts(trajectories, trainable, credit)
        row.update(
            lr=self.learner.scheduler.get_last_lr()[0],
            rollout_s=rollout_s,
            update_s=update_s,
            sync_s=sync_s,
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
        if self.fanout is not None:
            self.fanout.close()


def train(
    config: str | Path | dict | TrainConfig | None = None,
    overrides: list[str] | None = None,
    resume: Path | None = None,
) -> Path:
    """Run (or resume) the pipeline — warm-up stages, then RL — and return the run folder, which
    holds ``summary.json`` (:func:`~agentenv.train.summary.run_summary`)."""
    t0 = time.perf_counter()
    cfg, run_dir = prepare_run(config, overrides, resume)
    if cfg.ray.address is not None:
        require_ray()  # before any stage runs: the fan-out starts with the RL stage
    quiet_transformers()

    async def main() -> None:
        async with service_scope():  # one launched server per service for the whole run
            run = await Run.open(cfg, run_dir, resume=resume is not None)
            try:
                await run.run()
            finally:
                run.close()
                await run.credit_assigner.aclose()
                for policy in {id(p): p for p in (run.rollout_policy, run.learner.policy)}.values():
                    await _close(policy)

    asyncio.run(main())
    write_summary(run_dir, run_summary(run_dir, cfg, time.perf_counter() - t0))
    return run_dir


async def _close(policy: Any) -> None:
    close = getattr(policy, "aclose", None)
    if close is not None:
        await close()
