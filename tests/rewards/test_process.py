"""Process rewards: judge, implicit PRM (PRIME / OPRL) and SPA progress attribution."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from agentenv.policies.base import Completion
from agentenv.rewards import process as pr
from agentenv.rewards.advantages import rloo

ATOL = 1e-5


class ScriptedJudge:
    """A judge model stand-in: replies with the score written in the prompt's action text."""

    name = "scripted-judge"

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.batches = []

    async def generate(self, prompts, sampling, *, contexts=None):
        self.batches.append(len(prompts))
        out = []
        for ids in prompts:
            text = self.tokenizer.decode(ids)
            action = text.split("Action: ")[1].split("\n")[0]
            reply = f"Score: {action}" if action[0].isdigit() else "I cannot grade this."
            out.append(Completion(token_ids=[], text=reply, logprobs=[], finish_reason="stop"))
        return out

    async def score(self, prompts, continuations):
        raise NotImplementedError

    async def aclose(self):
        pass


class CharTokenizer:
    """A byte-level tokenizer with a ChatML-like template (no vocabulary files needed)."""

    def apply_chat_template(self, messages, add_generation_prompt=True, tokenize=False):
        text = "".join(f"<{m['role']}>{m['content']}</{m['role']}>" for m in messages)
        return text + ("<assistant>" if add_generation_prompt else "")

    def encode(self, text, add_special_tokens=False):
        return list(text.encode())

    def decode(self, ids):
        return bytes(ids).decode()


async def test_judge_parses_caches_and_batches():
    policy = ScriptedJudge(CharTokenizer())
    judge = pr.LLMJudge(policy, pr.JudgeConfig(batch_size=2, failure_value=-1.0))
    steps = [
        pr.JudgeStep(task="t", action="7"),
        pr.JudgeStep(task="t", action="12"),
        pr.JudgeStep(task="t", action="look around"),
        pr.JudgeStep(task="t", action="7"),
    ]
    got = await judge.score(steps)
    np.testing.assert_allclose(got, [0.7, 1.0, -1.0, 0.7])
    assert judge.failures == 1 and judge.requests == 3 and policy.batches == [2, 1]
    again = await judge.score(steps[:2])
    np.testing.assert_allclose(again, [0.7, 1.0])
    assert judge.requests == 3  # served from the cache
    assert judge.parse("**Score**: 4/10") == pytest.approx(0.4)
    assert judge.parse("no number here") is None
    assert judge.parse("score = 2.5 ... Score: 5") == pytest.approx(0.5)


def test_prime_reference():
    """docs/credit-assignment.md, 'PRIME — worked example'."""
    logp = torch.tensor([[-1.0, -0.5, -2.0, 0.0]])
    ref = torch.tensor([[-1.2, -0.5, -1.5, -3.0]])
    steps = torch.tensor([[0, 0, 0, -1]])
    r = pr.implicit_step_rewards(logp, ref, steps, beta=0.05)
    assert r.shape == (1, 1) and float(r[0, 0]) == pytest.approx(-0.015, abs=ATOL)
    q_sum = (logp - ref)[:, :3].sum(-1)
    assert float(pr.prime_ce_loss(q_sum, torch.tensor([1.0]))) == pytest.approx(0.700675, abs=ATOL)
    assert float(pr.prime_ce_loss(q_sum, torch.tensor([0.0]))) == pytest.approx(0.685675, abs=ATOL)


def test_implicit_rewards_per_step():
    logp = torch.zeros(2, 5)
    ref = -torch.arange(10.0).reshape(2, 5)
    steps = torch.tensor([[0, 0, 1, 1, -1], [0, 1, 1, 2, 2]])
    r = pr.implicit_step_rewards(logp, ref, steps, beta=1.0)
    torch.testing.assert_close(r, torch.tensor([[1.0, 5.0, 0.0], [5.0, 13.0, 17.0]]))


def test_oprl_dpo_reference():
    """docs/credit-assignment.md, 'OPRL — worked example' (trajectory DPO)."""
    step_q = torch.tensor([[0.02, 0.04, 0.0], [-0.01, 0.01, -0.03]])
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    loss = pr.trajectory_dpo_loss(step_q, mask, torch.tensor([1, 0]), torch.tensor([0, 0]))
    assert float(loss) == pytest.approx(0.673347, abs=ATOL)
    none = pr.trajectory_dpo_loss(step_q, mask, torch.tensor([1, 1]), torch.tensor([0, 0]))
    assert float(none) == 0.0


def test_oprl_rloo_reference():
    """docs/credit-assignment.md, 'OPRL — worked example' (advantages, rows shuffled)."""
    np.testing.assert_allclose(rloo([1.0, 0.0, 1.0], [0, 0, 0]), [0.5, -1.0, 0.5])
    traj = np.array([0, 0, 1, 1, 1, 2])
    turn = np.array([0, 1, 0, 1, 2, 0])
    s = np.array([0.5, -0.25, -1.0, 0.25, 0.1, 0.75])
    out = np.array([1, 1, 0, 0, 0, 1.0])
    perm = np.array([3, 0, 5, 1, 4, 2])
    got = pr.oprl_advantages(s[perm], out[perm], np.zeros(6, int), traj[perm], turn[perm])
    expected = np.array([1.125, 0.0, -2.625, -0.75, -0.975, 1.5])
    np.testing.assert_allclose(got, expected[perm], atol=ATOL)


def test_spa_reference():
    """docs/credit-assignment.md, 'SPA-RL — worked example'."""
    loss = pr.spa_loss(torch.tensor([[0.2, 0.5, 0.4]]), torch.ones(1, 3), torch.tensor([1.0]))
    assert float(loss) == pytest.approx(0.01, abs=ATOL)
    g = pr.grounded_steps(["ok", "Nothing happens.", "Nothing happens."])
    np.testing.assert_allclose(g, [1, 0, 1])
    np.testing.assert_allclose(pr.spa_step_rewards([0.2, 0.5, 0.4], g), [0.7, 0.5, 0.9])


def test_spa_head_learns_to_sum_to_reward():
    gen = torch.Generator().manual_seed(0)
    b, t, d = 64, 5, 8
    states = torch.randn(b, 12, d, generator=gen)
    step_end = torch.randint(0, 12, (b, t), generator=gen)
    step_end[:, -1] = torch.where(torch.arange(b) % 2 == 0, -1, step_end[:, -1])
    feats = pr.step_features(states, step_end)
    assert torch.all(feats[0, -1] == 0)
    mask = (step_end >= 0).float()
    true_w = torch.randn(d, generator=gen)
    reward = ((feats @ true_w) * mask).sum(-1)
    torch.manual_seed(0)
    head = pr.ProgressHead(d)
    losses = pr.train_progress_head(head, feats, mask, reward, steps=400, lr=0.05)
    assert losses[-1] < 1e-3 * losses[0]
    with torch.no_grad():
        per_step = head(feats) * mask
    torch.testing.assert_close(per_step.sum(-1), reward, atol=0.05, rtol=0)
