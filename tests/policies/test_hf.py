"""HFPolicy on the tiny model: coalescing, exact ids and logprobs, stops, seeds, scoring."""

from __future__ import annotations

import asyncio
import math

import numpy as np
import pytest
import torch

from agentenv.policies import Policy, SamplingParams
from agentenv.policies.base import SamplingExtras
from agentenv.policies.hf import HFPolicy, StopWatcher, sample_tokens, token_logprobs

GREEDY = SamplingParams(max_tokens=24, temperature=0.0)
PENALISED = SamplingExtras(
    frequency_penalty=1.0, repetition_penalty=1.3, min_p=0.02, logit_bias=((5, 2.0),), min_tokens=3
)


@pytest.fixture
def policy(tiny_path):
    p = HFPolicy.from_pretrained(tiny_path, device="cpu", max_batch_size=4, max_wait_ms=20)
    yield p
    p.close()


def test_is_a_policy(policy):
    assert isinstance(policy, Policy)
    assert policy.model.dtype == torch.float32


@pytest.mark.parametrize("requests", [1, 4, 10, 17])
async def test_concurrent_requests_are_coalesced(policy, chat_prompts, requests):
    prompts = chat_prompts(requests)
    sampling = SamplingParams(max_tokens=6, seed=1)
    results = await asyncio.gather(*(policy.generate([p], sampling) for p in prompts))
    assert all(len(r[0].token_ids) <= 6 for r in results)
    assert policy.stats.rows == requests
    assert policy.stats.batches <= math.ceil(requests / policy.max_batch_size)
    assert policy.stats.max_batch_rows == min(requests, policy.max_batch_size)


async def test_logprobs_equal_teacher_forced_scores(policy, chat_prompts):
    prompts = chat_prompts(6)
    sampled = await policy.generate(prompts, SamplingParams(max_tokens=20, top_p=0.9, seed=3))
    scores = await policy.score(prompts, [c.token_ids for c in sampled])
    for completion, score in zip(sampled, scores, strict=True):
        assert len(completion.logprobs) == len(completion.token_ids) == len(score)
        np.testing.assert_allclose(completion.logprobs, score, atol=1e-4)


async def test_text_is_the_decoded_ids(policy, tokenizer, chat_prompts):
    (completion,) = await policy.generate(chat_prompts(1), SamplingParams(max_tokens=16, seed=5))
    assert completion.text == tokenizer.decode(completion.token_ids, skip_special_tokens=True)


async def test_greedy_is_deterministic_and_independent_of_batching(policy, chat_prompts):
    prompts = chat_prompts(5)
    alone = [(await policy.generate([p], GREEDY))[0].token_ids for p in prompts]
    together = [c.token_ids for c in await policy.generate(prompts, GREEDY)]
    again = [c.token_ids for c in await policy.generate(prompts, GREEDY)]
    assert alone == together == again


async def test_seeds_reproduce_and_differ(policy, chat_prompts):
    prompts = chat_prompts(3)
    sampling = SamplingParams(max_tokens=16, seed=11)
    first = await policy.generate(prompts, sampling)
    # the same call again, this time batched beside unrelated requests
    crowd = policy.generate(chat_prompts(3), SamplingParams(max_tokens=16))
    second, _ = await asyncio.gather(policy.generate(prompts, sampling), crowd)
    other = await policy.generate(prompts, SamplingParams(max_tokens=16, seed=12))
    assert [c.token_ids for c in first] == [c.token_ids for c in second]
    assert [c.token_ids for c in first] != [c.token_ids for c in other]
    # rows of one seeded call get distinct streams
    same_prompt = await policy.generate([prompts[0]] * 2, sampling)
    assert same_prompt[0].token_ids != same_prompt[1].token_ids


@pytest.mark.parametrize("extras", [SamplingExtras(), PENALISED], ids=["plain", "penalised"])
def test_a_row_does_not_depend_on_its_batch_mates(policy, chat_prompts, extras):
    """A seeded row alone and among rows of other lengths and sampling settings (extras
    included): same bits. A plain row batched with penalised ones, and a penalised row with
    plain ones, sample as they would alone."""
    assert policy.batch_invariant  # the default on CPU
    target = chat_prompts(1)
    mates = [p + p[1:] * (i % 4) for i, p in enumerate(chat_prompts(8)[1:])]
    sampling = SamplingParams(max_tokens=20, seed=9, extras=extras)
    (alone,) = policy.generate_batch(policy.make_requests(target, sampling))
    settings = (
        SamplingParams(max_tokens=8, temperature=0.7, top_p=0.8, seed=1),
        SamplingParams(max_tokens=30, top_k=5, seed=2),
        SamplingParams(max_tokens=3, temperature=0.0),
        SamplingParams(max_tokens=12, seed=3, extras=SamplingExtras(presence_penalty=1.5)),
    )
    crowd = [r for i, m in enumerate(mates) for r in policy.make_requests([m], settings[i % 4])]
    for batch in (crowd[:2], crowd, crowd[::-1]):
        requests = [*batch[: len(batch) // 2], *policy.make_requests(target, sampling)]
        requests += batch[len(batch) // 2 :]
        completion = policy.generate_batch(requests)[len(batch) // 2]
        assert completion.token_ids == alone.token_ids
        assert completion.logprobs == alone.logprobs  # bit-identical, not merely close


def test_a_row_left_padded_and_alone_after_its_longer_mates_finish(policy, chat_prompts):
    """Longer rows that stop after one token leave the target alone but still left-padded: it
    must go on attending to its own tokens only, never to its padding."""
    target = chat_prompts(1)
    longer = [p + p[1:] * 2 for p in chat_prompts(3)[1:]]
    sampling = SamplingParams(max_tokens=24, seed=4)
    (alone,) = policy.generate_batch(policy.make_requests(target, sampling))
    mates = policy.make_requests(longer, SamplingParams(max_tokens=1, seed=5))
    together = policy.generate_batch([*mates, *policy.make_requests(target, sampling)])[-1]
    assert len(alone.token_ids) > 2
    assert together.token_ids == alone.token_ids and together.logprobs == alone.logprobs


def test_batch_invariance_needs_an_sdpa_model(tiny_path, tokenizer):
    from transformers import AutoModelForCausalLM

    eager = AutoModelForCausalLM.from_pretrained(tiny_path, attn_implementation="eager")
    assert not HFPolicy(eager, tokenizer).batch_invariant
    with pytest.raises(ValueError, match="needs an SDPA model"):
        HFPolicy(eager, tokenizer, batch_invariant=True)


async def test_stop_string_ends_at_the_completing_token(policy, tokenizer, chat_prompts):
    prompt = chat_prompts(1)[0]
    (free,) = await policy.generate([prompt], SamplingParams(max_tokens=40, seed=21))
    ids, full = free.token_ids, free.text
    stop = next(
        piece
        for cut in range(3, len(ids))
        if (prefix := tokenizer.decode(ids[:cut], skip_special_tokens=True))
        and (piece := prefix[-2:]).strip()
        and "\ufffd" not in piece
        and full.find(piece) == len(prefix) - 2
    )
    expected = next(
        m
        for m in range(1, len(ids) + 1)
        if stop in tokenizer.decode(ids[:m], skip_special_tokens=True)
    )
    sampling = SamplingParams(max_tokens=40, seed=21, stop=("never-there", stop))
    (stopped,) = await policy.generate([prompt], sampling)
    assert stopped.finish_reason == "stop"
    assert stopped.stop_string == stop
    assert stopped.token_ids == ids[:expected]
    assert stop in stopped.text


async def test_extras_change_sampling_and_raw_logprobs_stay(policy, chat_prompts):
    """A penalised row samples differently from a plain one with the same seed; its logprobs
    are still the raw teacher-forced ones (vLLM's default)."""
    prompts = chat_prompts(2)
    plain = await policy.generate(prompts, SamplingParams(max_tokens=20, seed=9))
    penalised = await policy.generate(
        prompts, SamplingParams(max_tokens=20, seed=9, extras=PENALISED)
    )
    assert [c.token_ids for c in plain] != [c.token_ids for c in penalised]
    scores = await policy.score(prompts, [c.token_ids for c in penalised])
    for completion, score in zip(penalised, scores, strict=True):
        np.testing.assert_allclose(completion.logprobs, score, atol=1e-4)


async def test_min_tokens_skips_stop_strings_completed_before_it(policy, tokenizer, chat_prompts):
    """As in vLLM, a stop string counts only if it ends in the text of a token after the
    first ``min_tokens``: a forced "aaaa..." with stop "aa" ends at token 2, or at token
    ``min_tokens + 1``."""
    (token,) = tokenizer.encode("a", add_special_tokens=False)
    forced = SamplingExtras(logit_bias=((token, 100.0),))
    prompt = chat_prompts(1)
    for min_tokens, length in ((0, 2), (1, 2), (5, 6)):
        extras = SamplingExtras(logit_bias=forced.logit_bias, min_tokens=min_tokens)
        sampling = SamplingParams(max_tokens=20, temperature=0.0, stop=("aa",), extras=extras)
        (completion,) = await policy.generate(prompt, sampling)
        assert completion.token_ids == [token] * length
        assert (completion.finish_reason, completion.stop_string) == ("stop", "aa")


async def test_stop_token_ids_and_ignore_eos_end_rows(policy, chat_prompts):
    prompt = chat_prompts(1)
    (free,) = await policy.generate(prompt, SamplingParams(max_tokens=20, seed=4))
    stop = free.token_ids[5]
    stopped_sampling = SamplingParams(
        max_tokens=20, seed=4, extras=SamplingExtras(stop_token_ids=(stop,))
    )
    (stopped,) = await policy.generate(prompt, stopped_sampling)
    assert stopped.token_ids == free.token_ids[: free.token_ids.index(stop) + 1]
    assert stopped.finish_reason == "eos"
    (eos,) = policy.eos_token_ids
    endless = SamplingExtras(logit_bias=((eos, 100.0),), ignore_eos=True)
    (long_,) = await policy.generate(prompt, SamplingParams(max_tokens=7, extras=endless))
    assert long_.token_ids == [eos] * 7 and long_.finish_reason == "length"


@pytest.mark.parametrize(
    ("field", "value"),
    [("repetition_penalty", 0.0), ("min_p", 1.5), ("min_tokens", 30),
     ("logit_bias", ((10**6, 1.0),)), ("stop_token_ids", (-1,)),
     ("frequency_penalty", math.nan)],
)  # fmt: skip
async def test_out_of_range_extras_are_refused_naming_the_field(policy, field, value):
    extras = SamplingExtras(**{field: value})
    with pytest.raises(ValueError, match=f"SamplingParams.extras.{field}="):
        await policy.generate([[1]], SamplingParams(max_tokens=20, extras=extras))


async def test_eos_and_length_finish_rows_exactly(policy, chat_prompts):
    prompts = chat_prompts(3)
    (probe,) = await policy.generate(prompts[:1], GREEDY)
    policy.eos_token_ids = {probe.token_ids[0]}
    policy.reset_stats()
    short, long_, eos_row = await asyncio.gather(
        policy.generate([prompts[1]], SamplingParams(max_tokens=3, temperature=0)),
        policy.generate([prompts[2]], SamplingParams(max_tokens=12, temperature=0)),
        policy.generate(prompts[:1], GREEDY),
    )
    assert eos_row[0].finish_reason == "eos" and eos_row[0].token_ids == probe.token_ids[:1]
    for (completion,), limit in ((short, 3), (long_, 12)):
        eos_at = [i for i, t in enumerate(completion.token_ids) if t in policy.eos_token_ids]
        if eos_at:
            assert completion.finish_reason == "eos" and eos_at == [len(completion.token_ids) - 1]
        else:
            assert completion.finish_reason == "length" and len(completion.token_ids) == limit
    # finished rows stop growing: every generated token was returned to some caller
    returned = sum(len(r[0].token_ids) for r in (short, long_, eos_row))
    assert policy.stats.generated_tokens == returned


async def test_zero_max_tokens(policy, chat_prompts):
    (completion,) = await policy.generate(chat_prompts(1), SamplingParams(max_tokens=0))
    assert completion.token_ids == [] and completion.finish_reason == "length"


async def test_in_place_weight_updates_are_used(policy, chat_prompts):
    prompts = chat_prompts(2)
    before = await policy.generate(prompts, GREEDY)
    with policy.weights_lock, torch.no_grad():
        for parameter in policy.model.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.5)
    after = await policy.generate(prompts, GREEDY)
    assert [c.token_ids for c in before] != [c.token_ids for c in after]


async def test_score_handles_ragged_and_empty_continuations(policy, chat_prompts):
    prompts = chat_prompts(3)
    continuations = [[5, 6, 7], [], [9]]
    scores = await policy.score(prompts, continuations)
    assert [len(s) for s in scores] == [3, 0, 1]
    alone = await policy.score(prompts[:1], continuations[:1])
    np.testing.assert_allclose(scores[0], alone[0], atol=1e-5)
    assert all((s <= 0).all() for s in scores)


async def test_bad_prompts_are_rejected(policy):
    with pytest.raises(ValueError, match="prompt 0 is empty"):
        await policy.generate([[]], GREEDY)
    with pytest.raises(ValueError, match="outside"):
        await policy.generate([[1, 10**6]], GREEDY)
    with pytest.raises(ValueError, match="top_p"):
        await policy.generate([[1]], SamplingParams(top_p=0.0))
    with pytest.raises(ValueError, match="one continuation per prompt"):
        await policy.score([[1]], [])


@pytest.mark.parametrize(
    ("field", "value"),
    [("temperature", math.nan), ("temperature", math.inf), ("top_p", math.nan),
     ("top_k", 10**30), ("max_tokens", -1), ("stop", (3,))],
)  # fmt: skip
async def test_out_of_range_sampling_is_refused_naming_the_field(policy, field, value):
    with pytest.raises(ValueError, match=f"SamplingParams.{field}="):
        await policy.generate([[1]], SamplingParams(**{field: value}))


def test_a_row_samples_the_same_token_whatever_its_neighbours_truncate():
    logits = torch.log(torch.tensor([[0.1, 0.2, 0.3, 0.4]] * 2))
    uniforms = torch.full((2,), 0.05)
    ones, zeros = torch.ones(2), torch.zeros(2, dtype=torch.long)
    plain = sample_tokens(logits, ones, torch.ones(2), zeros, uniforms)
    mixed = sample_tokens(logits, ones, torch.tensor([1.0, 0.5]), zeros, uniforms)
    assert plain[0] == mixed[0] == 0  # inverse CDF in vocabulary order
    assert mixed[1] == 3  # the truncated row samples from the sorted head


def test_sampling_respects_top_k_and_top_p():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]] * 3))
    temperature = torch.ones(3)
    uniforms = torch.linspace(0, 0.999, 200)
    for top_p, top_k, allowed in (
        (1.0, 1, {0}),
        (1.0, 2, {0, 1}),
        (0.7, 0, {0, 1}),
        (0.85, 0, {0, 1, 2}),
    ):
        seen = set()
        for u in uniforms:
            tokens = sample_tokens(
                logits, temperature, torch.full((3,), top_p), torch.full((3,), top_k), u.repeat(3)
            )
            seen.update(tokens.tolist())
            np.testing.assert_allclose(token_logprobs(logits, tokens), logits[0, tokens], atol=1e-6)
        assert seen == allowed, (top_p, top_k)


def test_stop_watcher_handles_split_utf8(tokenizer):
    text = "ok 日本語 done"
    ids = tokenizer.encode(text, add_special_tokens=False)
    watcher = StopWatcher(tokenizer, ("本語",))
    hits = [watcher.push(t) for t in ids]
    first = next(i for i, h in enumerate(hits) if h)
    assert hits[first] == "本語"
    assert "本語" in tokenizer.decode(ids[: first + 1]) and "本語" not in tokenizer.decode(
        ids[:first]
    )


class PoisonedRowPolicy(HFPolicy):
    """Prefill fails for any group holding the prompt ``[7, 7, 7]`` (like a row that runs the
    device out of memory)."""

    def _prefill(self, rows):
        if any(list(r.request.prompt) == [7, 7, 7] for r in rows):
            raise RuntimeError("row 7 broke the batch")
        return super()._prefill(rows)


async def test_a_failing_batch_fails_only_the_row_that_fails(tiny_path, chat_prompts):
    policy = PoisonedRowPolicy.from_pretrained(
        tiny_path, device="cpu", max_batch_size=4, max_wait_ms=50
    )
    try:
        calls = [policy.generate([p], GREEDY) for p in chat_prompts(3)]
        calls.append(policy.generate([[7, 7, 7]], GREEDY))
        results = await asyncio.gather(*calls, return_exceptions=True)
    finally:
        policy.close()
    assert all(isinstance(r, list) and r[0].token_ids for r in results[:3])
    assert isinstance(results[3], RuntimeError) and "row 7" in str(results[3])
