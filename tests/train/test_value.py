"""The value head on the tiny model and real search-v0 episodes: turn alignment, learning, loss."""

import asyncio

import numpy as np
import pytest
import torch

from agentenv import models
from agentenv.policies.hf import HFPolicy
from agentenv.rollout import RolloutConfig, RolloutEngine, group_requests
from agentenv.train.batching import build_batch
from agentenv.train.losses import token_logprobs_and_states
from agentenv.train.value import (
    ValueHead,
    clipped_value_loss,
    decision_positions,
    explained_variance,
    turn_values,
    with_value_targets,
)

ENV_KWARGS = {"num_entities": 30, "max_hops": 1, "max_turns": 3}


@pytest.fixture(scope="module")
def episodes():
    torch.manual_seed(0)
    policy = HFPolicy.from_pretrained(models.tiny(), device="cpu", max_batch_size=8)
    engine = RolloutEngine(policy, RolloutConfig(max_tokens_per_turn=8, max_context_tokens=512))
    requests = group_requests("search-v0", [0, 1, 2], 2, ENV_KWARGS)
    try:
        trajectories = asyncio.run(engine.run(requests))
    finally:
        policy.close()
    return policy.model, policy.tokenizer, trajectories


def _batch(trajectories, pad_id):
    num_turns = np.array([len(t.turns) for t in trajectories])
    return build_batch(trajectories, np.zeros(num_turns.sum()), pad_id=pad_id), num_turns


def test_each_turn_reads_the_token_before_its_first_one(episodes):
    model, tokenizer, trajectories = episodes
    batch, num_turns = _batch(trajectories, tokenizer.pad_token_id)
    assert num_turns.max() > 1  # some episodes searched, then answered
    rows, turns, cols = decision_positions(
        batch.turn_ids, batch.lengths, torch.as_tensor(num_turns)
    )
    expected = []
    for i, t in enumerate(trajectories):
        for k in range(len(t.turns)):
            first = t.turn_ids.index(k) if k in t.turn_ids else len(t.token_ids)
            expected.append((i, k, first - 1))
    assert list(zip(rows.tolist(), turns.tolist(), cols.tolist(), strict=True)) == expected
    assert all(c == trajectories[i].prompt_length - 1 for i, k, c in expected if k == 0)


def test_turn_values_are_the_head_at_each_decision_position(episodes):
    model, tokenizer, trajectories = episodes
    batch, num_turns = _batch(trajectories, tokenizer.pad_token_id)
    head = ValueHead.for_model(model)
    assert torch.all(head(torch.randn(3, model.config.hidden_size)) == 0)  # zero-initialised
    torch.nn.init.normal_(head.linear.weight)
    model.eval()
    got = turn_values(model, head, batch, num_turns, token_budget=600, device="cpu")
    assert got.values.shape == (num_turns.sum(),) and got.end_values.shape == (len(trajectories),)
    expected, ends = [], []
    with torch.no_grad():
        for t in trajectories:
            ids = torch.tensor([t.token_ids])
            hidden = model(input_ids=ids, output_hidden_states=True).hidden_states[-1][0]
            v = head(hidden)
            for k in range(len(t.turns)):
                expected.append(float(v[t.turn_ids.index(k) - 1]))
            ends.append(float(v[-1]))
    np.testing.assert_allclose(got.values, expected, atol=1e-4)
    np.testing.assert_allclose(got.end_values, ends, atol=1e-4)


def test_the_value_head_learns_returns_on_a_fixed_batch(episodes):
    model, tokenizer, trajectories = episodes
    batch, num_turns = _batch(trajectories, tokenizer.pad_token_id)
    first_turn = np.concatenate([np.arange(n) == 0 for n in num_turns])
    returns = np.where(first_turn, 1.0, 0.5)
    batch = with_value_targets(batch, num_turns, returns, np.zeros_like(returns))
    assert batch.value_mask.sum() == num_turns.sum()
    head = ValueHead.for_model(model)
    trunk = {k: v.clone() for k, v in model.state_dict().items()}
    groups = [{"params": list(model.parameters())}, {"params": list(head.parameters()), "lr": 1e-2}]
    optimizer = torch.optim.AdamW(groups, lr=1e-3)  # the trainer's lr and value.lr_scale 10
    at = batch.value_mask > 0
    losses = []
    model.train()
    for _ in range(8):
        _, _, states = token_logprobs_and_states(
            model, batch.input_ids, batch.attention_mask, batch.loss_mask, at, with_entropy=False
        )
        out = clipped_value_loss(
            head(states), batch.old_values[at], batch.returns[at], clip=None, norm=int(at.sum())
        )
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
        losses.append(float(out.loss.detach()))
    model.load_state_dict(trunk)  # the module-scoped model is shared with the other tests
    model.eval()
    assert losses[0] == pytest.approx(0.5 * np.mean(returns**2), rel=1e-5)  # V = 0 at first
    assert losses[-1] < 0.3 * losses[0]


def test_clipped_value_loss_hand_computed():
    v = torch.tensor([0.5, -0.4, 0.1])
    old = torch.tensor([0.0, 0.0, 0.0])
    r = torch.tensor([1.0, 0.0, 0.3])
    out = clipped_value_loss(v, old, r, clip=0.2, norm=4)
    # turn 0: unclipped (0.5−1)² = 0.25, clipped (0.2−1)² = 0.64 → 0.64 (counted as clipped)
    # turn 1: (−0.4)² = 0.16, clipped (−0.2)² = 0.04 → 0.16;  turn 2: 0.04, within the clip
    assert float(out.loss) == pytest.approx(0.5 * (0.64 + 0.16 + 0.04) / 4)
    assert out.clipped == 1.0
    plain = clipped_value_loss(v, old, r, clip=None, norm=3)
    assert float(plain.loss) == pytest.approx(0.5 * (0.25 + 0.16 + 0.04) / 3)


def test_explained_variance():
    r = np.array([0.0, 1.0, 2.0, 3.0])
    assert explained_variance(r, r) == 1.0
    assert explained_variance(np.full(4, r.mean()), r) == 0.0
    assert explained_variance(r[::-1], r) < 0
    assert np.isnan(explained_variance(r, np.ones(4)))
