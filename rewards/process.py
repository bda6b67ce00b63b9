"""Process (step) rewards: LLM-as-judge, implicit process rewards, progress attribution.

(a) :class:`LLMJudge` — a policy grades each step from a prompt template; the score is parsed
    from its reply and mapped to [0, 1]; unparsable replies get ``failure_value`` and are counted.
    Or, in ``expected`` mode, the score is the expectation of the judge's own distribution over
    the scale's scores (G-Eval, Liu et al., arXiv 2303.16634). :func:`judge_steps` turns a
    trajectory's turns into what the judge sees.
(b) Implicit process rewards (PRIME, Cui et al., arXiv 2502.01456; OPRL/iStar, arXiv
    2509.19199): r_step = β·Σ_{tokens of the step} (log π_φ − log π_ref), with the PRM trained by
    cross-entropy on the outcome (PRIME) or by a trajectory-level DPO (OPRL); and OPRL's
    advantage A = A^E + w·A^S.
(c) SPA-RL progress attribution (Wang et al., arXiv 2505.20732): a linear head maps each step's
    features to a contribution ĉ_t trained so that Σ_t ĉ_t ≈ R; RL step reward α·ĉ_t + β·g_t.

Needs torch (the ``train`` extra).
"""

from __future__ import annotations

import math
import re
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F

from agentenv.policies.base import Policy, SamplingParams
from agentenv.rewards.advantages import _array, _factorize, _layout, rloo
from agentenv.trajectory import Trajectory

__all__ = [
    "DEFAULT_JUDGE_TEMPLATE",
    "JudgeConfig",
    "JudgeStep",
    "LLMJudge",
    "ProgressHead",
    "grounded_steps",
    "implicit_step_rewards",
    "judge_steps",
    "oprl_advantages",
    "prime_ce_loss",
    "spa_loss",
    "spa_step_rewards",
    "step_features",
    "train_progress_head",
    "trajectory_dpo_loss",
]

# ---------------------------------------------------------------------------------------------
# (a) LLM-as-judge
# ---------------------------------------------------------------------------------------------
DEFAULT_JUDGE_TEMPLATE = """\
You are grading one step of an agent working on a task.

Task: {task}

Earlier steps:
{history}

Step to grade
Action: {action}
Result: {observation}

How much does this step move the agent toward solving the task? Answer with one line
"Score: N" where N is a number from 0 (useless or harmful) to 10 (decisive)."""


@dataclass(frozen=True)
class JudgeStep:
    """What the judge sees about one step (fields fill the template's placeholders)."""

    task: str
    action: str
    observation: str = ""
    history: str = "(none)"


@dataclass(frozen=True)
class JudgeConfig:
    """Judge prompt and parsing.

    Attributes:
        template: ``str.format`` template with ``{task} {history} {action} {observation}``.
        score_pattern: regex whose first group is the score (the last match counts).
        score_range: (low, high) of the judge's scale; scores are clipped to it and mapped to
            [0, 1] by (s − low)/(high − low).
        failure_value: the reward of a step whose reply holds no parsable score.
        max_tokens, temperature: sampling of the judge's reply (greedy by default).
        batch_size: most prompts per ``generate`` (or ``score``) call.
        cache_size: scores kept per prompt text (LRU); 0 disables the cache.
        mode: ``"generate"`` samples a reply and parses it; ``"expected"`` reads the judge's
            distribution over the integer scores k of ``score_range`` as its reply after
            ``answer_prefix`` — log π(k) teacher-forced with ``Policy.score``, each k followed by
            the tokenizer's end-of-sequence token so that "1" and "10" are distinct replies —
            and takes s = Σ_k k·p_k with p ∝ π(k) restricted to the scale (G-Eval, arXiv
            2303.16634). It never fails to parse and is deterministic.
        answer_prefix: what the judge's reply starts with in ``expected`` mode.
    """

    template: str = DEFAULT_JUDGE_TEMPLATE
    score_pattern: str = r"score\W{0,4}(-?\d+(?:\.\d+)?)"
    score_range: tuple[float, float] = (0.0, 10.0)
    failure_value: float = 0.0
    max_tokens: int = 48
    temperature: float = 0.0
    batch_size: int = 64
    cache_size: int = 100_000
    mode: Literal["generate", "expected"] = "generate"
    answer_prefix: str = "Score: "


class LLMJudge:
    """Step rewards from any :class:`~agentenv.policies.Policy` acting as a judge.

    ``failures`` counts replies without a parsable score; ``requests`` counts prompts sent to the
    policy (cache misses).
    """

    def __init__(self, policy: Policy, config: JudgeConfig | None = None) -> None:
        self.policy = policy
        self.config = config or JudgeConfig()
        lo, hi = self.config.score_range
        if not hi > lo:
            raise ValueError(f"score_range: high must exceed low, got {self.config.score_range}")
        self._scale = np.arange(math.ceil(lo), math.floor(hi) + 1, dtype=np.float64)
        if self.config.mode == "expected" and self._scale.size < 2:
            raise ValueError(
                f"score_range: expected mode needs two integer scores in {self.config.score_range}"
            )
        self._pattern = re.compile(self.config.score_pattern, re.IGNORECASE)
        self._cache: OrderedDict[str, float] = OrderedDict()
        self.failures = 0
        self.requests = 0

    def prompt(self, step: JudgeStep) -> str:
        return self.config.template.format(
            task=step.task, history=step.history, action=step.action, observation=step.observation
        )

    def parse(self, reply: str) -> float | None:
        """The reply's score mapped to [0, 1], or None if it holds none."""
        found = self._pattern.findall(reply)
        if not found:
            return None
        lo, hi = self.config.score_range
        return (min(max(float(found[-1]), lo), hi) - lo) / (hi - lo)

    def _encode(self, text: str) -> list[int]:
        ids = self.policy.tokenizer.apply_chat_template(
            [{"role": "user", "content": text}], add_generation_prompt=True, tokenize=False
        )
        return self.policy.tokenizer.encode(ids, add_special_tokens=False)

    async def score(self, steps: Sequence[JudgeStep]) -> np.ndarray:
        """One reward in [0, 1] (or ``failure_value``) per step."""
        prompts = [self.prompt(s) for s in steps]
        results: dict[str, float | None] = {}
        for p in prompts:
            if p in self._cache:
                self._cache.move_to_end(p)
                results[p] = self._cache[p]
        todo = list(dict.fromkeys(p for p in prompts if p not in results))
        fetch = self._expected if self.config.mode == "expected" else self._generated
        size = self.config.batch_size
        for start in range(0, len(todo), size):
            chunk = todo[start : start + size]
            values = await fetch(chunk)
            self.requests += len(chunk)
            for p, value in zip(chunk, values, strict=True):
                results[p] = value
                if results[p] is not None and self.config.cache_size > 0:
                    self._cache[p] = results[p]
                    if len(self._cache) > self.config.cache_size:
                        self._cache.popitem(last=False)
        out = np.empty(len(prompts))
        for i, p in enumerate(prompts):
            value = results[p]
            if value is None:
                self.failures += 1
                value = self.config.failure_value
            out[i] = value
        return out

    async def _generated(self, prompts: list[str]) -> list[float | None]:
        sampling = SamplingParams(
            max_tokens=self.config.max_tokens, temperature=self.config.temperature
        )
        completions = await self.policy.generate([self._encode(p) for p in prompts], sampling)
        return [self.parse(c.text) for c in completions]

    async def _expected(self, prompts: list[str]) -> list[float | None]:
        tokenizer = self.policy.tokenizer
        end = [] if tokenizer.eos_token_id is None else [int(tokenizer.eos_token_id)]
        answers = [tokenizer.encode(f"{k:g}", add_special_tokens=False) + end for k in self._scale]
        prefix = tokenizer.encode(self.config.answer_prefix, add_special_tokens=False)
        heads = [self._encode(p) + prefix for p in prompts]
        scores = await self.policy.score(
            [h for h in heads for _ in answers], [a for _ in heads for a in answers]
        )
        logp = np.array([float(np.sum(s)) for s in scores]).reshape(len(heads), len(answers))
        weights = np.exp(logp - logp.max(axis=1, keepdims=True))
        expected = (weights @ self._scale) / weights.sum(axis=1)
        lo, hi = self.config.score_range
        return [float(v) for v in (expected - lo) / (hi - lo)]


def judge_steps(trajectory: Trajectory, *, history_turns: int | None = None) -> list[JudgeStep]:
    """One :class:`JudgeStep` per turn of ``trajectory``: the task is the episode's first
    observation, the history the ``history_turns`` turns before (None: all) as their action
    and result."""
    opening = [m for m in trajectory.messages if m.get("role") != "system"]
    task = str(opening[0].get("content") or "") if opening else ""
    seen = [f"Action: {t.action}\nResult: {t.observation}" for t in trajectory.turns]
    steps = []
    for i, turn in enumerate(trajectory.turns):
        first = 0 if history_turns is None else max(0, i - history_turns)
        history = "\n\n".join(seen[first:i]) or "(none)"
        steps.append(JudgeStep(task, turn.action, turn.observation, history))
    return steps


# ---------------------------------------------------------------------------------------------
# (b) implicit process rewards: PRIME / OPRL
# ---------------------------------------------------------------------------------------------
def implicit_step_rewards(
    logp: torch.Tensor,
    ref_logp: torch.Tensor,
    step_ids: torch.Tensor,
    *,
    beta: float = 0.05,
    num_steps: int | None = None,
) -> torch.Tensor:
    """Per-step implicit reward r_{b,s} = β·Σ_{tokens of step s} (log π_φ − log π_ref).

    Inputs are [B, L] token tensors; ``step_ids`` gives each token's step (turn) index and −1 on
    tokens that belong to no step (prompt, observations, padding). Returns [B, num_steps].
    (PRIME's reference is a frozen π_ref; OPRL's is π_θold.)
    """
    batch = logp.shape[0]
    steps = int(step_ids.max().item()) + 1 if num_steps is None else num_steps
    steps = max(steps, 0)
    keep = step_ids >= 0
    q = torch.where(keep, beta * (logp - ref_logp), torch.zeros_like(logp))
    rows = torch.arange(batch, device=logp.device)[:, None].expand_as(step_ids)
    flat = (rows * steps + step_ids.clamp(min=0)).reshape(-1)
    out = torch.zeros(batch * steps, dtype=logp.dtype, device=logp.device)
    return out.index_add_(0, flat, q.reshape(-1)).reshape(batch, steps)


def prime_ce_loss(
    log_ratio_sum: torch.Tensor, accuracy: torch.Tensor, *, beta: float = 0.05
) -> torch.Tensor:
    """PRIME's PRM loss: BCE(σ(β·Σ_t (log π_φ − log π_ref)), acc), mean over sequences."""
    return F.binary_cross_entropy_with_logits(beta * log_ratio_sum, accuracy.to(log_ratio_sum))


def trajectory_dpo_loss(
    step_rewards: torch.Tensor,
    step_mask: torch.Tensor,
    success: torch.Tensor,
    group: torch.Tensor,
) -> torch.Tensor:
    """OPRL's trajectory DPO: mean over all (success, failure) pairs of a group of
    −log σ(Q⁺ − Q⁻), with Q the mean over a trajectory's steps of its implicit step rewards
    (already β-scaled, as :func:`implicit_step_rewards` returns). Zero if no pair exists."""
    mask = step_mask.to(step_rewards.dtype)
    q = (step_rewards * mask).sum(-1) / mask.sum(-1).clamp(min=1)
    win = success.bool()
    pair = (group[:, None] == group[None, :]) & win[:, None] & ~win[None, :]
    if not pair.any():
        return q.sum() * 0.0
    diff = q[:, None] - q[None, :]
    return -F.logsigmoid(diff[pair]).mean()


def oprl_advantages(
    step_rewards: Any,
    outcome: Any,
    group: Any,
    traj: Any,
    turn: Any,
    *,
    step_weight: float = 1.0,
    step_baseline: Literal["first_step", "all_steps"] = "first_step",
) -> np.ndarray:
    """OPRL/iStar RLOO advantage per step row: A = A^E + w·A^S.

    A^E: RLOO over the trajectories' outcomes in the prompt group (``outcome`` per row, constant
    within a trajectory). A^S = (s − mean_pool)·n/(n−1) over the group's step-reward pool of size
    n: ``"first_step"`` pools only each trajectory's first step (what iStar's code does, although
    it centres every step) and ``"all_steps"`` pools every step (its docstring).
    """
    lay = _layout(traj, turn, group)
    n = lay.order.shape[0]
    s = _array("step_rewards", step_rewards, n)[lay.order]
    out = _array("outcome", outcome, n)[lay.order]
    g = _factorize(_array("group", group, n, dtype=np.int64))[0][lay.order]
    first = lay.start == np.arange(n)
    a_ep = rloo(out[first], g[first])[lay.traj_code]
    if step_baseline == "first_step":
        pool = first
    elif step_baseline == "all_steps":
        pool = np.ones(n, dtype=bool)
    else:
        raise ValueError(
            f"step_baseline: expected 'first_step' or 'all_steps', got {step_baseline!r}"
        )
    k = int(g.max()) + 1
    count = np.bincount(g[pool], minlength=k).astype(np.float64)
    mean = np.bincount(g[pool], weights=s[pool], minlength=k) / np.maximum(count, 1.0)
    scale = count / np.maximum(count - 1.0, 1.0)
    a_step = np.where(count[g] > 1, (s - mean[g]) * scale[g], 0.0)
    return lay.unsort(a_ep + step_weight * a_step)


# ---------------------------------------------------------------------------------------------
# (c) SPA-RL progress attribution
# ---------------------------------------------------------------------------------------------
class ProgressHead(torch.nn.Module):
    """ĉ_t = w·x_t + b: a linear map of each step's feature vector (SPA-RL applies it to the
    vocabulary logits at the step's last token; hidden states work the same way)."""

    def __init__(self, in_features: int) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(in_features, 1)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.linear(features).squeeze(-1)


def step_features(states: torch.Tensor, step_end: torch.Tensor) -> torch.Tensor:
    """Gather [B, L, D] per-token states at each step's last token: ``step_end`` [B, T] holds
    token positions (−1 for missing steps, which get zeros). Returns [B, T, D]."""
    index = step_end.clamp(min=0)[..., None].expand(-1, -1, states.shape[-1])
    out = torch.gather(states, 1, index)
    return out * (step_end >= 0)[..., None].to(out.dtype)


def spa_loss(contrib: torch.Tensor, step_mask: torch.Tensor, reward: torch.Tensor) -> torch.Tensor:
    """SPA-RL's progress loss: mean over episodes of (R − Σ_t ĉ_t)² (masked steps)."""
    total = (contrib * step_mask.to(contrib.dtype)).sum(-1)
    return ((reward.to(total.dtype) - total) ** 2).mean()


def spa_step_rewards(
    contrib: Any, grounded: Any, *, alpha: float = 1.0, beta: float = 0.5
) -> np.ndarray:
    """RL step reward r_t = α·ĉ_t + β·g_t (SPA-RL; its code amounts to α = 1, β = 0.5)."""
    return alpha * np.asarray(contrib, dtype=np.float64) + beta * np.asarray(grounded, float)


def grounded_steps(
    observations: Sequence[str], failure_marker: str = "Nothing happens"
) -> np.ndarray:
    """g_t = 1 if the observation after step t lacks ``failure_marker``; the last step is always
    grounded (SPA-RL's ALFWorld rule)."""
    g = np.array([failure_marker not in o for o in observations], dtype=np.float64)
    if g.size:
        g[-1] = 1.0
    return g


def train_progress_head(
    head: torch.nn.Module,
    features: torch.Tensor,
    step_mask: torch.Tensor,
    reward: torch.Tensor,
    *,
    steps: int = 200,
    lr: float = 1e-2,
    batch_size: int | None = None,
    seed: int = 0,
) -> list[float]:
    """Fit ``head`` by Adam on :func:`spa_loss`; returns the loss per optimisation step."""
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(head.parameters(), lr=lr)
    n = features.shape[0]
    losses = []
    for _ in range(steps):
        idx = torch.randperm(n, generator=gen)[: batch_size or n]
        loss = spa_loss(head(features[idx]), step_mask[idx], reward[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    return losses
