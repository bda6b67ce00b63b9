"""Judged, learned and rubric rewards of the RL stage: ``algorithm.judge``, ``algorithm.prm``,
``algorithm.spa`` and ``algorithm.rubric``.

Each enabled section adds one reward component per turn (:data:`JUDGE`, :data:`PRM`,
:data:`SPA`, :data:`RUBRIC`), which credit assignment (:mod:`agentenv.train.credit`) adds to the turn's reward
times the section's ``weight``, as ``algorithm.process_rewards`` does for an env's components.
The formulas live in :mod:`agentenv.rewards.process`; here are the models, their training on each
step's batch and their checkpointed state.

- **judge** (:class:`JudgeReward`): any policy spec grades every turn with
  :class:`~agentenv.rewards.process.LLMJudge`; judge_t ∈ [0, 1].
- **prm** (:class:`ImplicitPRM`): a PRM π_φ, a copy of the starting policy, gives the implicit
  reward prm_t = β·Σ_{action tokens of turn t} (log π_φ − log π_ref) (PRIME, Cui et al., arXiv
  2502.01456: π_ref the frozen starting policy, loss BCE(σ(β·Σ_τ log π_φ/π_ref), success); OPRL,
  arXiv 2509.19199: π_ref the rollout policy π_θold, loss the trajectory DPO
  −log σ(Q⁺ − Q⁻) over a group's (success, failure) pairs, Q the mean of a trajectory's prm_t).
  The PRM is trained on each batch before rewarding it (``update: before``, PRIME's default) or
  after (OPRL's).
- **spa** (:class:`ProgressReward`): SPA-RL (Wang et al., arXiv 2505.20732): a linear head maps
  the policy's last hidden state at each turn's last action token to a contribution ĉ_t, fitted
  on each batch so that Σ_t ĉ_t ≈ R (the trajectory's return); spa_t = ĉ_t + β·g_t with g_t the
  turn's ``action_valid`` (1 on the last turn).
- **rubric** (:class:`RubricReward`): named functions of the finished episode
  (``verifiers``-style), R = Σ_k w_k·f_k(**context), on the last turn: rubric_t = 1[t = T−1]·R.

The PRM's losses couple the rows of a batch (OPRL pairs a group's trajectories), while memory
allows one micro-batch at a time. So the per-turn log-ratios L are computed for the whole batch
without gradients, the loss's gradient ∂ℓ/∂L is taken on them, and each micro-batch then
backpropagates Σ L·∂ℓ/∂L: the exact gradient, at the memory of one micro-batch.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from agentenv.policies.base import Policy
from agentenv.policies.specs import PolicySpecError, load_policy
from agentenv.rewards.process import (
    JudgeConfig,
    LLMJudge,
    ProgressHead,
    implicit_step_rewards,
    judge_steps,
    prime_ce_loss,
    spa_step_rewards,
    step_features,
    train_progress_head,
    trajectory_dpo_loss,
)
from agentenv.rewards.rubric import Rubric, episode_context, load_function
from agentenv.train.batching import TokenBatch, build_batch, micro_batches
from agentenv.train.config import (
    AlgorithmConfig,
    ConfigError,
    JudgeSection,
    PRMSection,
    RubricSection,
    SPASection,
    TrainConfig,
)
from agentenv.train.losses import base_model, last_hidden_states, masked_token_logprobs
from agentenv.train.model import build_optimizer, load_trainable, optimizer_step
from agentenv.trajectory import Trajectory, TurnTable

JUDGE = "judge"
PRM = "prm"
SPA = "spa"
RUBRIC = "rubric"


def component_names(algorithm: AlgorithmConfig) -> list[str]:
    """The reward components the enabled sections of ``algorithm`` add."""
    sections = {
        JUDGE: algorithm.judge,
        PRM: algorithm.prm,
        SPA: algorithm.spa,
        RUBRIC: algorithm.rubric,
    }
    return [name for name, section in sections.items() if section.enabled]


class ProcessSource(Protocol):
    """One section's reward: per-row values (TurnTable order) and step metrics."""

    weight: float

    async def __call__(
        self, trajectories: list[Trajectory], table: TurnTable
    ) -> tuple[np.ndarray, dict[str, float]]: ...


# ---------------------------------------------------------------------------------------------
# token-level plumbing
# ---------------------------------------------------------------------------------------------
def token_batch(trajectories: list[Trajectory], table: TurnTable, pad_id: int) -> TokenBatch:
    """The trajectories' padded tokens (advantages 0: only ids, masks and turn ids are used)."""
    return build_batch(trajectories, np.zeros(table.traj.shape[0]), pad_id=pad_id)


def action_turns(batch: TokenBatch) -> torch.Tensor:
    """Each token's turn where it is an action token, −1 elsewhere (``step_ids`` of the PRM)."""
    return torch.where(batch.loss_mask > 0, batch.turn_ids, -1)


def turn_ends(batch: TokenBatch, num_turns: int) -> torch.Tensor:
    """``(B, num_turns)`` position of each turn's last action token (−1 for a missing turn)."""
    steps = action_turns(batch)
    rows, length = steps.shape
    position = torch.arange(length).expand(rows, length)
    slot = torch.arange(rows)[:, None] * num_turns + steps.clamp(min=0)
    ends = torch.full((rows * num_turns,), -1, dtype=torch.long)
    keep = steps >= 0
    ends.scatter_reduce_(0, slot[keep], position[keep], reduce="amax")
    return ends.reshape(rows, num_turns)


def _device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


def _per_row(values: torch.Tensor, table: TurnTable) -> np.ndarray:
    """``(B, T)`` per-turn values as one value per table row."""
    return values.detach().double().cpu().numpy()[table.traj, table.turn]


# ---------------------------------------------------------------------------------------------
# rubric
# ---------------------------------------------------------------------------------------------
class RubricReward:
    """``algorithm.rubric``: each finished episode's rubric total R = Σ_k w_k·f_k(**context)
    (:class:`~agentenv.rewards.rubric.Rubric` over
    :func:`~agentenv.rewards.rubric.episode_context`), on the episode's last turn."""

    def __init__(self, section: RubricSection) -> None:
        self.weight = section.weight
        self.rubric = Rubric(
            [(name, load_function(f.function), f.weight) for name, f in section.functions.items()]
        )

    async def __call__(
        self, trajectories: list[Trajectory], table: TurnTable
    ) -> tuple[np.ndarray, dict[str, float]]:
        results = await self.rubric.ascore_batch([episode_context(t) for t in trajectories])
        totals = np.array([r.total for r in results], dtype=np.float64)
        values = np.where(table.last_turn, totals[table.traj], 0.0)
        metrics = {
            f"rubric/{name}": float(np.mean([r.components[name] for r in results]))
            for name in self.rubric.weights
        }
        metrics["rubric_failures"] = float(sum(len(r.failed) for r in results))
        return values, metrics


# ---------------------------------------------------------------------------------------------
# judge
# ---------------------------------------------------------------------------------------------
class JudgeReward:
    """``algorithm.judge``: every turn graded by a policy through :class:`LLMJudge`."""

    def __init__(self, section: JudgeSection, policy: Policy) -> None:
        self.weight = section.weight
        self.history_turns = section.history_turns
        self.policy = policy
        self.judge = LLMJudge(policy, JudgeConfig(**section.options))

    @classmethod
    def from_section(cls, section: JudgeSection) -> JudgeReward:
        try:
            policy = load_policy(section.policy, **section.policy_kwargs)
        except (PolicySpecError, TypeError) as exc:
            raise ConfigError(f"algorithm.judge.policy: {exc}") from exc
        return cls(section, policy)

    async def __call__(
        self, trajectories: list[Trajectory], table: TurnTable
    ) -> tuple[np.ndarray, dict[str, float]]:
        steps = [s for t in trajectories for s in judge_steps(t, history_turns=self.history_turns)]
        failures, requests = self.judge.failures, self.judge.requests
        scores = await self.judge.score(steps)
        return scores, {
            "judge_failures": float(self.judge.failures - failures),
            "judge_requests": float(self.judge.requests - requests),
        }

    async def aclose(self) -> None:
        await self.policy.aclose()


# ---------------------------------------------------------------------------------------------
# implicit PRM
# ---------------------------------------------------------------------------------------------
class ImplicitPRM:
    """``algorithm.prm``: PRIME's or OPRL's implicit PRM, trained on every batch (module docs).

    ``reference`` is PRIME's frozen π_ref; None for OPRL, whose reference is the rollout's own
    log-probabilities. A trajectory's label is its ``success``. ``mixed_precision``: the models
    hold float32 weights and run under bfloat16 autocast, as the policy does with
    ``model.mixed_precision``.
    """

    def __init__(
        self,
        section: PRMSection,
        model: torch.nn.Module,
        reference: torch.nn.Module | None,
        *,
        micro_batch_tokens: int,
        pad_id: int,
        mixed_precision: bool = False,
    ) -> None:
        self.section = section
        self.weight = section.weight
        self.mixed_precision = mixed_precision
        self.model = model.eval()
        self.reference = reference
        self.micro_batch_tokens = micro_batch_tokens
        self.pad_id = pad_id
        self.update = section.update or ("before" if section.kind == "prime" else "after")
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.optimizer, self.scheduler = build_optimizer(
            self.params, section.lr, (0.9, 0.999), 1e-8, 0.0, 1, 0, "constant", 1.0
        )

    @classmethod
    def from_start(cls, section: PRMSection, config: TrainConfig, start: Path) -> ImplicitPRM:
        """A PRM (and, for PRIME, a frozen reference) loaded from the starting policy."""
        mixed = config.model.mixed_precision
        if mixed:
            precise = config.model.model_copy(update={"dtype": "float32"})
            config = config.model_copy(update={"model": precise})
        model, tokenizer, _ = load_trainable(config, start)
        reference = None
        if section.kind == "prime":
            reference = load_trainable(config, start)[0].eval().requires_grad_(False)
        pad = tokenizer.pad_token_id
        return cls(
            section,
            model,
            reference,
            micro_batch_tokens=config.optim.micro_batch_tokens,
            pad_id=int(pad if pad is not None else 0),
            mixed_precision=mixed,
        )

    def _forward(self, model: torch.nn.Module) -> contextlib.AbstractContextManager[Any]:
        if not self.mixed_precision:
            return contextlib.nullcontext()
        return torch.autocast(_device(model).type, dtype=torch.bfloat16)

    def _chunks(self, batch: TokenBatch) -> list[list[int]]:
        return micro_batches(batch.lengths.tolist(), self.micro_batch_tokens)

    @torch.no_grad()
    def _reference_logprobs(self, batch: TokenBatch) -> torch.Tensor:
        if self.reference is None:
            return batch.old_logprobs
        out = torch.zeros_like(batch.old_logprobs)
        device = _device(self.reference)
        for rows in self._chunks(batch):
            mb = batch.select(rows).to(device)
            with self._forward(self.reference):
                logp = masked_token_logprobs(
                    self.reference,
                    mb.input_ids,
                    mb.attention_mask,
                    mb.loss_mask,
                    with_entropy=False,
                )[0]
            out[rows, : logp.shape[1]] = logp.float().cpu()
        return out

    def _log_ratios(self, mb: TokenBatch, num_turns: int) -> torch.Tensor:
        """``(rows, num_turns)`` Σ_turn (log π_φ − log π_ref), on the PRM's graph."""
        with self._forward(self.model):
            logp = masked_token_logprobs(
                self.model, mb.input_ids, mb.attention_mask, mb.loss_mask, with_entropy=False
            )[0]
        return implicit_step_rewards(
            logp.float(), mb.ref_logprobs, action_turns(mb), beta=1.0, num_steps=num_turns
        )

    @torch.no_grad()
    def _all_log_ratios(self, batch: TokenBatch, num_turns: int) -> torch.Tensor:
        out = torch.zeros(batch.size, num_turns)
        device = _device(self.model)
        for rows in self._chunks(batch):
            out[rows] = self._log_ratios(batch.select(rows).to(device), num_turns).cpu()
        return out

    def _loss(
        self,
        ratios: torch.Tensor,
        turn_mask: torch.Tensor,
        success: torch.Tensor,
        group: torch.Tensor,
    ) -> torch.Tensor:
        beta = self.section.beta
        if self.section.kind == "prime":
            return prime_ce_loss(ratios.sum(-1), success, beta=beta)
        return trajectory_dpo_loss(beta * ratios, turn_mask, success, group)

    def _train(self, batch: TokenBatch, ratios: torch.Tensor, *labels: torch.Tensor) -> float:
        leaf = ratios.clone().requires_grad_(True)
        loss = self._loss(leaf, *labels)
        (grad,) = torch.autograd.grad(loss, leaf, allow_unused=True)
        device = _device(self.model)
        if grad is not None:
            for rows in self._chunks(batch):
                part = self._log_ratios(batch.select(rows).to(device), ratios.shape[1])
                (part * grad[rows].to(part)).sum().backward()
        optimizer_step(self.params, self.optimizer, self.scheduler, self.section.grad_clip)
        return float(loss.detach())

    async def __call__(
        self, trajectories: list[Trajectory], table: TurnTable
    ) -> tuple[np.ndarray, dict[str, float]]:
        batch = token_batch(trajectories, table, self.pad_id)
        counts = torch.tensor([len(t.turns) for t in trajectories])
        num_turns = int(counts.max())
        batch.ref_logprobs = self._reference_logprobs(batch)
        turn_mask = torch.arange(num_turns)[None, :] < counts[:, None]
        success = torch.tensor([float(t.success) for t in trajectories])
        group = torch.from_numpy(table.traj_group)
        ratios = self._all_log_ratios(batch, num_turns)
        loss = self._train(batch, ratios, turn_mask, success, group)
        if self.update == "before":
            ratios = self._all_log_ratios(batch, num_turns)
        return _per_row(self.section.beta * ratios, table), {"prm_loss": loss}

    def state_dict(self) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])


# ---------------------------------------------------------------------------------------------
# SPA progress head
# ---------------------------------------------------------------------------------------------
class ProgressReward:
    """``algorithm.spa``: SPA-RL's progress head on the trained policy's hidden states."""

    def __init__(
        self, section: SPASection, model: torch.nn.Module, *, micro_batch_tokens: int, pad_id: int
    ) -> None:
        self.section = section
        self.weight = section.weight
        self.model = model
        self.micro_batch_tokens = micro_batch_tokens
        self.pad_id = pad_id
        self.head = ProgressHead(int(base_model(model).config.hidden_size))
        self.fits = 0

    @torch.no_grad()
    def features(self, batch: TokenBatch, ends: torch.Tensor) -> torch.Tensor:
        """``(B, T, D)`` hidden states at each turn's last action token (zeros where none)."""
        out = torch.zeros(*ends.shape, self.head.linear.in_features)
        device = _device(self.model)
        for rows in micro_batches(batch.lengths.tolist(), self.micro_batch_tokens):
            mb = batch.select(rows).to(device)
            states = last_hidden_states(self.model, mb.input_ids, mb.attention_mask)
            out[rows] = step_features(states.float(), ends[rows].to(device)).cpu()
        return out

    async def __call__(
        self, trajectories: list[Trajectory], table: TurnTable
    ) -> tuple[np.ndarray, dict[str, float]]:
        batch = token_batch(trajectories, table, self.pad_id)
        ends = turn_ends(batch, int(max(len(t.turns) for t in trajectories)))
        features = self.features(batch, ends)
        mask = (ends >= 0).float()
        outcome = torch.from_numpy(table.outcome).float()
        losses = train_progress_head(
            self.head,
            features,
            mask,
            outcome,
            steps=self.section.steps,
            lr=self.section.lr,
            seed=self.fits,
        )
        self.fits += 1
        with torch.no_grad():
            contribution = _per_row(self.head(features) * mask, table)
        grounded = np.where(table.last_turn, 1.0, table.action_valid.astype(np.float64))
        values = spa_step_rewards(contribution, grounded, alpha=1.0, beta=self.section.grounding)
        return values, {"spa_loss": losses[-1]}

    def state_dict(self) -> dict[str, Any]:
        return {"head": self.head.state_dict(), "fits": self.fits}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.head.load_state_dict(state["head"])
        self.fits = int(state["fits"])


# ---------------------------------------------------------------------------------------------
# the run's process rewards
# ---------------------------------------------------------------------------------------------
class ProcessRewards:
    """The enabled sections' sources, by component name, built once per run."""

    def __init__(self, sources: dict[str, ProcessSource] | None = None) -> None:
        self.sources = dict(sources or {})

    @classmethod
    def for_run(
        cls, config: TrainConfig, start: Path, model: torch.nn.Module, *, pad_id: int
    ) -> ProcessRewards:
        """The sources of ``config.algorithm``: the PRM loaded from ``start`` (the starting
        policy), SPA's features from ``model`` (the policy being trained)."""
        algorithm = config.algorithm
        sources: dict[str, ProcessSource] = {}
        if algorithm.judge.enabled:
            sources[JUDGE] = JudgeReward.from_section(algorithm.judge)
        if algorithm.prm.enabled:
            sources[PRM] = ImplicitPRM.from_start(algorithm.prm, config, start)
        if algorithm.rubric.enabled:
            sources[RUBRIC] = RubricReward(algorithm.rubric)
        if algorithm.spa.enabled:
            sources[SPA] = ProgressReward(
                algorithm.spa,
                model,
                micro_batch_tokens=config.optim.micro_batch_tokens,
                pad_id=pad_id,
            )
        return cls(sources)

    @property
    def weights(self) -> dict[str, float]:
        return {name: source.weight for name, source in self.sources.items()}

    async def __call__(
        self, trajectories: list[Trajectory], table: TurnTable
    ) -> tuple[dict[str, np.ndarray], dict[str, float]]:
        """Per-row values of every component (TurnTable order) and the step's metrics, among
        them ``reward/NAME``: the mean over trajectories of Σ_t NAME_t."""
        components: dict[str, np.ndarray] = {}
        metrics: dict[str, float] = {}
        n = table.outcome.shape[0]
        for name, source in self.sources.items():
            values, source_metrics = await source(trajectories, table)
            components[name] = np.asarray(values, dtype=np.float64)
            metrics.update(source_metrics)
            totals = np.bincount(table.traj, weights=components[name], minlength=n)
            metrics[f"reward/{name}"] = float(totals.mean()) if n else 0.0
        return components, metrics

    def state_dict(self) -> dict[str, Any]:
        """The learned sources' state (a checkpoint's ``extra_state``)."""
        return {
            name: source.state_dict()
            for name, source in self.sources.items()
            if hasattr(source, "state_dict")
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        learned = [name for name, s in self.sources.items() if hasattr(s, "load_state_dict")]
        missing = [name for name in learned if name not in state]
        if missing:
            raise ConfigError(f"--resume: the checkpoint holds no state of {', '.join(missing)}")
        for name in learned:
            self.sources[name].load_state_dict(state[name])

    async def aclose(self) -> None:
        for source in self.sources.values():
            close = getattr(source, "aclose", None)
            if close is not None:
                await close()
