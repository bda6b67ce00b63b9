"""Loss functions against hand-computed values (the KL example: docs/training.md, "Loss options")."""

import math

import pytest
import torch

from agentenv.train.losses import (
    AggNorm,
    agg_loss,
    importance_log_ratio,
    kl_penalty,
    masked_token_logprobs,
    ppo_clip_loss,
    rl_loss,
    token_logprobs_and_entropy,
    turn_mean,
)

LOSS = torch.tensor([[1.0, 2.0, 9.0, 9.0], [3.0, 3.0, 3.0, 3.0]])
MASK = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1]])


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        ("token-mean", 2.5),
        ("seq-mean-token-mean", 2.25),
        ("seq-mean-token-sum", 7.5),
        ("seq-mean-token-sum-norm", 3.75),
    ],
)
def test_aggregation_golden(mode, expected):
    assert agg_loss(LOSS, MASK, mode).item() == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize(
    "mode", ["token-mean", "seq-mean-token-mean", "seq-mean-token-sum", "seq-mean-token-sum-norm"]
)
def test_micro_batches_sum_to_the_batch_aggregate(mode):
    values = torch.randn(6, 7)
    mask = (torch.rand(6, 7) > 0.4).int()
    norm = AggNorm.of(mask)
    parts = sum(agg_loss(values[i : i + 2], mask[i : i + 2], mode, norm) for i in range(0, 6, 2))
    assert parts.item() == pytest.approx(agg_loss(values, mask, mode).item(), abs=1e-5)


def test_unknown_agg_mode_is_named():
    with pytest.raises(ValueError, match="agg_mode"):
        agg_loss(LOSS, MASK, "sum")


@pytest.mark.parametrize(
    ("logp", "ref", "k1", "k2", "k3"),
    [(-1.0, -1.5, 0.5, 0.125, 0.106531), (-1.5, -1.0, -0.5, 0.125, 0.148721)],
)
def test_kl_estimators_golden(logp, ref, k1, k2, k3):
    a, b = torch.tensor([logp]), torch.tensor([ref])
    assert kl_penalty(a, b, "k1").item() == pytest.approx(k1, abs=1e-6)
    assert kl_penalty(a, b, "k2").item() == pytest.approx(k2, abs=1e-6)
    assert kl_penalty(a, b, "k3").item() == pytest.approx(k3, abs=1e-6)


def test_k3_is_clamped():
    value = kl_penalty(torch.tensor([-100.0]), torch.tensor([0.0]), "k3").item()
    assert value == pytest.approx(math.exp(10) - 11, rel=1e-6)


def _clip(ratio, adv, **kw):
    old = torch.zeros(1, len(ratio))
    logp = torch.log(torch.tensor([ratio]))
    out = ppo_clip_loss(logp, old, torch.tensor([adv]), torch.ones(1, len(ratio)), **kw)
    return out


@pytest.mark.parametrize(
    ("ratio", "adv", "kw", "expected"),
    [
        (1.5, 1.0, {}, -1.2),  # A>0 above 1+ε: clipped
        (0.5, 1.0, {}, -0.5),  # A>0 below 1−ε: pessimistic bound keeps r
        (0.5, -1.0, {}, 0.8),  # A<0 below 1−ε: clipped at 1−ε
        (1.5, -1.0, {}, 1.5),  # A<0 above 1+ε: unclipped (pessimistic)
        (1.5, 1.0, {"clip_high": 0.28}, -1.28),  # asymmetric clip-higher
        (0.5, -1.0, {"clip_low": 0.1}, 0.9),
        (5.0, -1.0, {"dual_clip": 3.0}, 3.0),  # dual clip caps −A·r at −A·c
        (2.0, -1.0, {"dual_clip": 3.0}, 2.0),  # below the dual bound: unchanged
        (5.0, 1.0, {"dual_clip": 3.0}, -1.2),  # dual clip never touches A>0
    ],
)
def test_ppo_clip_hand_computed(ratio, adv, kw, expected):
    assert _clip([ratio], [adv], **kw).loss.item() == pytest.approx(expected, abs=1e-6)


def test_clip_fraction_counts_clipped_tokens():
    out = _clip([1.5, 1.0, 0.5, 1.1], [1.0, 1.0, -1.0, 1.0])
    assert out.clip_fraction == pytest.approx(0.5)


def test_dual_clip_must_exceed_one():
    with pytest.raises(ValueError, match="dual_clip"):
        _clip([1.0], [1.0], dual_clip=1.0)


def test_turn_level_ratio_a2tgpo_example():
    # Token log-ratios [0.01, -0.002, 0.004] of one turn: ratio = exp(mean) = exp(0.004).
    log_ratio = torch.tensor([[0.0, 0.01, -0.002, 0.004, 0.5]])
    mask = torch.tensor([[0, 1, 1, 1, 0]])
    turns = torch.tensor([[-1, 0, 0, 0, 0]])
    logp = torch.zeros(1, 5, requires_grad=True)
    r = importance_log_ratio(logp, -log_ratio, mask, turns).exp()
    assert r[0, 1:4].tolist() == pytest.approx([1.004008] * 3, abs=1e-6)
    # Clip window for c = 1.163738 with ε_low=3e-3, ε_high=4e-3: [0.996509, 1.004655].
    c = torch.full((1, 5), 1.163738)
    out = ppo_clip_loss(
        logp,
        -log_ratio,
        torch.ones(1, 5),
        mask,
        clip_low=3e-3,
        clip_high=4e-3,
        turn_ids=turns,
        clip_scale=c,
    )
    assert out.clip_fraction == 0.0
    assert out.loss.item() == pytest.approx(-1.004008, abs=1e-6)
    # Per-token gradient of the value exp(sg(m)) · exp(logp − sg(logp)): each token gets r/3.
    out.loss.backward()
    assert logp.grad[0, 1:4].tolist() == pytest.approx([-1.004008 / 3] * 3, abs=1e-6)
    assert logp.grad[0, [0, 4]].tolist() == [0.0, 0.0]


def test_turn_scaled_clip_window():
    # With c = 1.163738 the upper bound is 1 + 4e-3·c = 1.004655: a ratio of 1.01 is clipped there.
    logp = torch.log(torch.tensor([[1.01]]))
    out = ppo_clip_loss(
        logp,
        torch.zeros(1, 1),
        torch.ones(1, 1),
        torch.ones(1, 1),
        clip_low=3e-3,
        clip_high=4e-3,
        clip_scale=torch.tensor([[1.163738]]),
    )
    assert out.loss.item() == pytest.approx(-1.004655, abs=1e-6)


def test_turn_mean_separates_sequences_and_turns():
    values = torch.tensor([[9.0, 1.0, 3.0, 5.0, 7.0], [9.0, 2.0, 4.0, 4.0, 9.0]])
    mask = torch.tensor([[0, 1, 1, 1, 1], [0, 1, 1, 1, 0]])
    turns = torch.tensor([[-1, 0, 0, 1, 1], [-1, 0, 1, 1, 1]])
    out = turn_mean(values, mask, turns)
    assert out[0, 1:].tolist() == [2.0, 2.0, 6.0, 6.0]
    assert out[1, 1:].tolist() == [2.0, 4.0, 4.0, 4.0]


def test_observation_tokens_get_no_gradient():
    """Gradient check through a real (small) LM: positions predicting masked tokens get 0 grad."""
    torch.manual_seed(0)
    vocab, length = 11, 9
    emb, head = torch.nn.Embedding(vocab, 8), torch.nn.Linear(8, vocab)
    ids = torch.randint(0, vocab, (2, length))
    # prompt(2) action(3) observation(2) action(2) / prompt(3) action(6)
    mask = torch.tensor([[0, 0, 1, 1, 1, 0, 0, 1, 1], [0, 0, 0, 1, 1, 1, 1, 1, 1]])
    logits = head(emb(ids))
    logits.retain_grad()
    logp, entropy = token_logprobs_and_entropy(logits, ids)
    old = logp.detach() + 0.05 * torch.randn_like(logp)
    ref = logp.detach() - 0.1
    adv = torch.randn(2, length)
    out = rl_loss(
        logp, old, adv, mask, entropy=entropy, ref_logp=ref, kl_coef=0.1, entropy_coef=0.01
    )
    out.loss.backward()
    # logits[:, t-1] predict token t: their gradient must vanish exactly where mask[:, t] == 0.
    grad_norm = logits.grad[:, :-1].abs().sum(-1)
    target_mask = mask[:, 1:].bool()
    assert torch.all(grad_norm[~target_mask] == 0)
    assert torch.all(grad_norm[target_mask] > 0)
    assert logits.grad[:, -1].abs().sum() == 0


def test_logprobs_match_log_softmax():
    logits = torch.randn(1, 4, 6)
    ids = torch.tensor([[1, 2, 3, 4]])
    logp, ent = token_logprobs_and_entropy(logits, ids)
    expected = torch.log_softmax(logits, -1)[0, torch.arange(3), ids[0, 1:]]
    assert torch.allclose(logp[0, 1:], expected)
    assert logp[0, 0] == 0
    p = torch.softmax(logits[0, 0], -1)
    assert ent[0, 1].item() == pytest.approx(-(p * p.log()).sum().item(), abs=1e-5)


@pytest.mark.parametrize("lora", [False, True])
def test_masked_logprobs_match_the_full_computation(lora):
    """LM head on masked positions only: same values and gradients there, zeros elsewhere
    (also through a peft LoRA wrapper, whose adapters must stay in the path)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=50,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
    )
    model = LlamaForCausalLM(config)
    if lora:
        from peft import LoraConfig, get_peft_model

        lora_config = LoraConfig(r=2, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
        model = get_peft_model(model, lora_config)
    ids = torch.randint(0, 50, (3, 12))
    attention = torch.ones_like(ids)
    attention[2, 9:] = 0
    mask = torch.zeros(3, 12)
    mask[0, 4:7] = 1
    mask[1, 8:12] = 1
    mask[2, 2:5] = 0.5  # weights, not just 0/1, select positions too

    def grads(loss):
        model.zero_grad()
        loss.backward()
        return [p.grad.clone() for p in model.parameters() if p.requires_grad]

    logp, ent = masked_token_logprobs(model, ids, attention, mask)
    g_masked = grads(((logp + ent) * mask).sum())
    logits = model(input_ids=ids, attention_mask=attention).logits
    full_logp, full_ent = token_logprobs_and_entropy(logits, ids)
    g_full = grads(((full_logp + full_ent) * mask).sum())
    on = mask > 0
    assert torch.allclose(logp[on], full_logp[on], atol=1e-6)
    assert torch.allclose(ent[on], full_ent[on], atol=1e-6)
    assert torch.all(logp[~on] == 0) and torch.all(ent[~on] == 0)
    for a, b in zip(g_masked, g_full, strict=True):
        assert torch.allclose(a, b, atol=1e-6)
