"""policies/sampling.py: vLLM's extra sampling knobs as a logits processor (what HFPolicy's
sampling loop runs and serve-policy passes through), and teacher-forced top logprobs.

``generate`` below is the reference loop, one row without a KV cache: processed logits go to
``sample_tokens``, every sampled token is pushed, and ``finished`` says which rows end.
HFPolicy, with its cache, batching and raw logprobs, must sample the same tokens."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM

from agentenv.policies import SamplingParams
from agentenv.policies.hf import HFPolicy, request_seeds, row_uniforms, sample_tokens
from agentenv.policies.sampling import LogitsProcessor, SamplingExtras, top_logprobs

PROMPT = [5, 17, 99, 230, 41]
EOS = 2


@pytest.fixture(scope="module")
def model(tiny_path):
    return AutoModelForCausalLM.from_pretrained(tiny_path).eval()


@pytest.fixture(scope="module")
def policy(tiny_path):
    p = HFPolicy.from_pretrained(tiny_path, device="cpu", max_wait_ms=0)
    yield p
    p.close()


@torch.inference_mode()
def generate(
    model, extras: SamplingExtras, max_tokens: int = 12, temperature: float = 0.0, seed: int = 0
) -> list[int]:
    """One row through the reference sampling loop."""
    vocab = int(model.config.vocab_size)
    processor = LogitsProcessor([extras], [PROMPT], vocab_size=vocab, eos_token_ids=[EOS])
    seeds = request_seeds(seed, 1, np.random.default_rng(0))
    ids, out = list(PROMPT), []
    temp, top_p, top_k = torch.tensor([temperature]), torch.tensor([1.0]), torch.tensor([0])
    for step in range(max_tokens):
        logits = model(input_ids=torch.tensor([ids])).logits[:, -1]
        uniforms = torch.from_numpy(row_uniforms(seeds, np.array([step])))
        token = sample_tokens(processor(logits, temp), temp, top_p, top_k, uniforms)
        processor.push(token)
        out.append(int(token))
        ids.append(int(token))
        if processor.finished(token)[0]:
            break
    return out


def test_logit_bias_bans_and_forces_tokens(model):
    plain = generate(model, SamplingExtras())
    banned = generate(model, SamplingExtras(logit_bias=((plain[0], -100.0),)))
    assert plain[0] not in banned
    forced = generate(model, SamplingExtras(logit_bias=((77, 100.0),)), max_tokens=5)
    assert forced == [77] * 5


def test_min_tokens_delays_eos_and_ignore_eos_runs_to_max_tokens(model):
    eager = SamplingExtras(logit_bias=((EOS, 100.0),))
    assert generate(model, eager) == [EOS]
    delayed = generate(model, SamplingExtras(logit_bias=((EOS, 100.0),), min_tokens=4))
    assert len(delayed) == 5 and delayed[-1] == EOS and EOS not in delayed[:-1]
    endless = generate(model, SamplingExtras(logit_bias=((EOS, 100.0),), ignore_eos=True))
    assert endless == [EOS] * 12


def test_stop_token_ids_end_the_row_after_min_tokens(model):
    plain = generate(model, SamplingExtras())
    stop = plain[2]
    assert generate(model, SamplingExtras(stop_token_ids=(stop,))) == plain[: plain.index(stop) + 1]
    forced = SamplingExtras(logit_bias=((stop, 100.0),), stop_token_ids=(stop,), min_tokens=3)
    out = generate(model, forced)
    assert len(out) == 4 and out[-1] == stop and stop not in out[:-1]


@pytest.mark.parametrize(
    "extras",
    [
        SamplingExtras(frequency_penalty=2.0),
        SamplingExtras(presence_penalty=2.0),
        SamplingExtras(repetition_penalty=3.0),
    ],
)
def test_penalties_change_seeded_samples_deterministically(model, extras):
    plain = generate(model, SamplingExtras(), max_tokens=24, temperature=1.0, seed=3)
    penalised = generate(model, extras, max_tokens=24, temperature=1.0, seed=3)
    assert penalised == generate(model, extras, max_tokens=24, temperature=1.0, seed=3)
    assert penalised != plain
    assert len(set(penalised)) >= len(set(plain))  # fewer repeats


def test_min_p_samples_only_tokens_near_the_most_likely(model):
    def ratios(extras: SamplingExtras) -> np.ndarray:
        """Each sampled token's probability over the most likely one's (raw distribution)."""
        out = generate(model, extras, max_tokens=24, temperature=1.0, seed=5)
        with torch.inference_mode():
            logits = model(input_ids=torch.tensor([[*PROMPT, *out]])).logits[0, len(PROMPT) - 1 :]
        logprobs = torch.log_softmax(logits[:-1].float(), dim=-1)
        chosen = logprobs.gather(-1, torch.tensor(out)[:, None])[:, 0]
        return (chosen - logprobs.max(dim=-1).values).exp().numpy()

    assert ratios(SamplingExtras()).min() < 0.3  # plain sampling strays from the top
    assert ratios(SamplingExtras(min_p=0.3)).min() >= 0.3 - 1e-5


CASES = [
    (SamplingExtras(), 1.0),
    (SamplingExtras(logit_bias=((41, -100.0), (7, 3.0))), 0.0),
    (SamplingExtras(logit_bias=((EOS, 100.0),), min_tokens=4), 0.0),
    (SamplingExtras(logit_bias=((EOS, 100.0),), ignore_eos=True), 0.0),
    (SamplingExtras(logit_bias=((77, 4.0),), stop_token_ids=(77,)), 1.0),
    (SamplingExtras(logit_bias=((77, 100.0),), stop_token_ids=(77,), min_tokens=3), 1.0),
    (SamplingExtras(frequency_penalty=2.0), 1.0),
    (SamplingExtras(presence_penalty=2.0), 1.0),
    (SamplingExtras(repetition_penalty=3.0), 0.0),
    (SamplingExtras(min_p=0.2), 1.0),
    (SamplingExtras(min_p=0.05, frequency_penalty=0.5, repetition_penalty=1.5, min_tokens=3), 0.8),
]


@pytest.mark.parametrize(("extras", "temperature"), CASES)
async def test_hf_policy_samples_as_the_reference_loop(model, policy, extras, temperature):
    """HFPolicy (KV cache, batched sampling, processor state across steps) gives the reference
    loop's tokens; its logprobs are the raw teacher-forced ones, whatever the extras."""
    expected = generate(model, extras, max_tokens=24, temperature=temperature, seed=3)
    sampling = SamplingParams(max_tokens=24, temperature=temperature, seed=3, extras=extras)
    (completion,) = await policy.generate([PROMPT], sampling)
    assert completion.token_ids == expected
    last = expected[-1]
    stopped = last in extras.stop_token_ids or (last == EOS and not extras.ignore_eos)
    assert completion.finish_reason == ("eos" if stopped else "length")
    (raw,) = await policy.score([PROMPT], [expected])
    np.testing.assert_allclose(completion.logprobs, raw, atol=1e-4)


def test_processor_arithmetic():
    logits = torch.tensor([[2.0, -2.0, 1.0, 0.5]])
    rep = LogitsProcessor(
        [SamplingExtras(repetition_penalty=2.0)], [[0, 1]], vocab_size=4, eos_token_ids=[3]
    )
    assert rep(logits, torch.tensor([1.0])).tolist() == [[1.0, -4.0, 1.0, 0.5]]
    counted = LogitsProcessor(
        [SamplingExtras(frequency_penalty=0.5, presence_penalty=0.25)],
        [[]],
        vocab_size=4,
        eos_token_ids=[3],
    )
    counted.push(torch.tensor([2]))
    counted.push(torch.tensor([2]))
    assert counted(logits, torch.tensor([1.0])).tolist() == [[2.0, -2.0, -0.25, 0.5]]
    probs = torch.tensor([[0.5, 0.3, 0.15, 0.05]])
    min_p = LogitsProcessor([SamplingExtras(min_p=0.2)], [[]], vocab_size=4, eos_token_ids=[3])
    kept = min_p(probs.log(), torch.tensor([1.0]))
    assert torch.isinf(kept[0, 3]) and torch.isfinite(kept[0, :3]).all()
    # at temperature 2 the distribution flattens: 0.05 is within 0.2 of the top one
    assert torch.isfinite(min_p(probs.log(), torch.tensor([2.0]))).all()
    assert torch.isfinite(min_p(probs.log(), torch.tensor([0.0]))).all()  # greedy: no cut


def test_select_keeps_the_state_of_the_remaining_rows():
    extras = [SamplingExtras(frequency_penalty=1.0), SamplingExtras(min_tokens=2)]
    processor = LogitsProcessor(extras, [[], []], vocab_size=4, eos_token_ids=[3])
    processor.push(torch.tensor([1, 1]))
    processor.select(torch.tensor([1]))
    out = processor(torch.zeros(1, 4), torch.tensor([1.0]))
    assert out[0, 3] == -math.inf and out[0, 1] == 0.0  # row 1: eos banned, no penalty
    processor.push(torch.tensor([0]))
    assert torch.isfinite(processor(torch.zeros(1, 4), torch.tensor([1.0]))).all()
    assert processor.finished(torch.tensor([3])).tolist() == [True]
    joining = LogitsProcessor(
        [SamplingExtras(logit_bias=((0, 5.0),))], [[]], vocab_size=4, eos_token_ids=[3]
    )
    processor.extend(joining)
    assert processor(torch.zeros(2, 4), torch.tensor([1.0, 1.0]))[:, 0].tolist() == [0.0, 5.0]
    assert SamplingExtras().neutral and not SamplingExtras(ignore_eos=True).neutral


def test_top_logprobs_are_the_teacher_forced_distribution(model):
    ids = [*PROMPT, 7, 8, 9]
    tokens, values = top_logprobs(model, ids, len(PROMPT), 3)
    with torch.inference_mode():
        full = torch.log_softmax(model(input_ids=torch.tensor([ids])).logits[0].float(), -1)
    expected = full[len(PROMPT) - 1 : -1].topk(3, dim=-1)
    assert tokens == expected.indices.tolist()
    assert np.allclose(values, expected.values.numpy(), atol=1e-5)
    assert top_logprobs(model, ids, len(ids), 3) == ([], [])
    with pytest.raises(ValueError, match="start"):
        top_logprobs(model, ids, 0, 3)


def test_request_fields_are_the_changed_extras_as_vllm_names_them():
    assert SamplingExtras().request_fields() == {}
    extras = SamplingExtras(logit_bias=((5, -100.0),), min_tokens=2, stop_token_ids=(7,))
    assert extras.request_fields() == {
        "logit_bias": {5: -100.0},
        "min_tokens": 2,
        "stop_token_ids": [7],
    }
