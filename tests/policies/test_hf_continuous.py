"""HFPolicy's continuous batching on the tiny model: finished rows come back at once, requests
join the running batch mid-flight, per-row stops, budgets and seeds, cancellation."""

from __future__ import annotations

import asyncio

import pytest
import torch

from agentenv.policies import SamplingParams
from agentenv.policies.base import SamplingExtras
from agentenv.policies.hf import HFPolicy, PaddedKVLayer

pytestmark = pytest.mark.filterwarnings("error::DeprecationWarning", "error::FutureWarning")

GREEDY = SamplingParams(max_tokens=24, temperature=0.0)
PENALISED = SamplingExtras(frequency_penalty=1.0, repetition_penalty=1.3, min_p=0.02, min_tokens=3)


def make_policy(tiny_path, **kwargs) -> HFPolicy:
    kwargs = {"device": "cpu", "max_batch_size": 8, "max_wait_ms": 20, **kwargs}
    return HFPolicy.from_pretrained(tiny_path, **kwargs)


@pytest.fixture
def policy(tiny_path):
    p = make_policy(tiny_path)
    yield p
    p.close()


@pytest.fixture
def no_eos(policy, tokenizer):
    """No token ends a row: every row runs to its own ``max_tokens``."""
    policy.eos_token_ids = {len(tokenizer)}
    return policy


def one(policy: HFPolicy, prompt: list[int], sampling: SamplingParams) -> asyncio.Task:
    return asyncio.ensure_future(policy.generate([prompt], sampling))


async def until_decoding(policy: HFPolicy, steps: int) -> None:
    """Wait (yielding to the loop) until the worker has run ``steps`` decode steps."""
    while policy.stats.decode_steps < steps:
        await asyncio.sleep(0.001)


def test_continuous_is_the_default_for_full_attention_models(policy):
    assert policy.scheduling == "continuous"
    with pytest.raises(ValueError, match="scheduling must be"):
        HFPolicy(policy.model, policy.tokenizer, scheduling="eager")


@pytest.mark.parametrize("scheduling", ["continuous", "static"])
async def test_a_short_request_is_not_held_back_by_a_long_one(
    tiny_path, tokenizer, chat_prompts, scheduling
):
    """Head-of-line: a 2-token request batched with a 400-token one. Continuous scheduling hands
    it back after its own two tokens; static scheduling once the long row has finished."""
    policy = make_policy(tiny_path, scheduling=scheduling, max_batch_size=2, max_wait_ms=500)
    policy.eos_token_ids = {len(tokenizer)}
    try:
        long_prompt, short_prompt = chat_prompts(2)
        steps_when_short_done: list[int] = []
        long_ = one(policy, long_prompt, SamplingParams(max_tokens=400, seed=1))
        short = one(policy, short_prompt, SamplingParams(max_tokens=2, seed=2))
        short.add_done_callback(lambda _: steps_when_short_done.append(policy.stats.decode_steps))
        (short_completion,) = await short
        long_done_with_short = long_.done()
        (long_completion,) = await long_
    finally:
        policy.close()
    assert len(short_completion.token_ids) == 2 and len(long_completion.token_ids) == 400
    assert policy.stats.batches == 1 and policy.stats.prefills == 1
    if scheduling == "continuous":
        assert not long_done_with_short
        assert steps_when_short_done[0] < policy.stats.decode_steps
    else:
        assert steps_when_short_done[0] == policy.stats.decode_steps == 399


async def test_a_request_submitted_mid_flight_joins_the_running_batch(no_eos, chat_prompts):
    policy = no_eos
    first, late = chat_prompts(2)
    late_sampling = SamplingParams(max_tokens=12, seed=7)
    (alone,) = await policy.generate([late], late_sampling)
    policy.reset_stats()
    long_ = one(policy, first + first[1:], SamplingParams(max_tokens=300, seed=3))
    await until_decoding(policy, 20)
    (joined,) = await policy.generate([late], late_sampling)
    assert not long_.done()
    assert policy.stats.batches == 1 and policy.stats.prefills == 2  # joined, not queued behind
    assert policy.stats.max_batch_rows == 2
    assert joined.token_ids == alone.token_ids and joined.logprobs == alone.logprobs
    (long_completion,) = await long_
    assert len(long_completion.token_ids) == 300


@pytest.mark.parametrize("extras", [SamplingExtras(), PENALISED], ids=["plain", "penalised"])
@pytest.mark.parametrize("join_after", [0, 3, 17])
async def test_seeded_rows_do_not_depend_on_who_shared_the_batch(
    policy, chat_prompts, join_after, extras
):
    """A seeded request alone, and joining at different points a batch of rows of other prompt
    lengths, settings, extras and budgets: the same tokens and logprobs, bit for bit."""
    target = chat_prompts(1)[0]
    sampling = SamplingParams(max_tokens=20, top_p=0.9, seed=9, extras=extras)
    (alone,) = await policy.generate([target], sampling)
    settings = (
        SamplingParams(max_tokens=40, temperature=0.7, top_p=0.8, seed=1),
        SamplingParams(max_tokens=60, top_k=5, seed=2),
        SamplingParams(max_tokens=5, temperature=0.0),
        SamplingParams(max_tokens=12, seed=3, extras=SamplingExtras(presence_penalty=1.5)),
    )
    mates = [
        one(policy, p + p[1:] * (i % 3), settings[i % 4]) for i, p in enumerate(chat_prompts(9)[1:])
    ]
    await until_decoding(policy, join_after)
    (together,) = await policy.generate([target], sampling)
    await asyncio.gather(*mates)
    assert together.token_ids == alone.token_ids
    assert together.logprobs == alone.logprobs


async def test_the_logits_processor_follows_rows_that_join_and_leave(no_eos, chat_prompts):
    """Rows with extras join a running batch without them and leave it, plain rows join rows
    with extras: every row samples as it would alone, bit for bit (the processor is built for
    the joining rows, neutral rows get a neutral one, and it is dropped when no row needs it)."""
    policy = no_eos
    prompts = chat_prompts(4)
    plain = SamplingParams(max_tokens=40, seed=1)
    penalised = SamplingParams(max_tokens=10, seed=2, extras=PENALISED)
    late = (SamplingParams(max_tokens=8, seed=3), SamplingParams(max_tokens=30, seed=4))
    requests = [(prompts[0], plain), (prompts[1], penalised), (prompts[2], late[0])]
    requests.append((prompts[3], late[1]))
    alone = [(await policy.generate([p], s))[0] for p, s in requests]
    policy.reset_stats()
    first = one(policy, *requests[0])
    await until_decoding(policy, 3)
    second = one(policy, *requests[1])  # extras join plain rows
    await until_decoding(policy, 6)
    third = one(policy, *requests[2])  # a plain row joins rows with extras
    await second
    fourth = one(policy, *requests[3])  # after the rows with extras left
    together = [(await task)[0] for task in (first, second, third, fourth)]
    for row, single in zip(together, alone, strict=True):
        assert row.token_ids == single.token_ids and row.logprobs == single.logprobs


async def test_greedy_equals_transformers_generate(policy, chat_prompts):
    prompts = chat_prompts(3)
    ours = await asyncio.gather(*(policy.generate([p], GREEDY) for p in prompts))
    for prompt, (completion,) in zip(prompts, ours, strict=True):
        with policy.weights_lock:
            reference = policy.model.generate(
                torch.tensor([prompt]),
                attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
                max_new_tokens=GREEDY.max_tokens,
                do_sample=False,
                eos_token_id=sorted(policy.eos_token_ids),
                pad_token_id=policy.pad_token_id,
            )
        assert completion.token_ids == reference[0, len(prompt) :].tolist()


async def test_stop_strings_apply_per_row(policy, tokenizer, chat_prompts):
    prompts = chat_prompts(4)
    free_sampling = [SamplingParams(max_tokens=40, seed=30 + i) for i in range(4)]
    free = await asyncio.gather(
        *(policy.generate([p], s) for p, s in zip(prompts, free_sampling, strict=True))
    )
    stops, expected = [], []
    for (completion,) in free[:3]:
        ids = completion.token_ids
        cut = len(ids) // 2
        prefix = tokenizer.decode(ids[:cut], skip_special_tokens=True)
        stop = prefix[-1]
        first = next(
            m
            for m in range(1, len(ids) + 1)
            if stop in tokenizer.decode(ids[:m], skip_special_tokens=True)
        )
        stops.append((stop,))
        expected.append(ids[:first])
    stops.append(())  # the fourth row has no stop string
    expected.append(free[3][0].token_ids)
    results = await asyncio.gather(
        *(
            policy.generate([p], SamplingParams(max_tokens=40, seed=30 + i, stop=stops[i]))
            for i, p in enumerate(prompts)
        )
    )
    for (completion,), stop, ids in zip(results, stops, expected, strict=True):
        assert completion.token_ids == ids
        assert completion.finish_reason == ("stop" if stop else free[3][0].finish_reason)
        assert completion.stop_string == (stop[0] if stop else None)


async def test_max_tokens_apply_per_row(tiny_path, tokenizer, chat_prompts):
    limits = [1, 2, 5, 9, 3, 17, 1, 6]
    # the worker stops waiting for a burst once max_batch_size requests have arrived
    policy = make_policy(tiny_path, max_batch_size=len(limits), max_wait_ms=500)
    policy.eos_token_ids = {len(tokenizer)}
    try:
        results = await asyncio.gather(
            *(
                policy.generate([p], SamplingParams(max_tokens=n, seed=i))
                for i, (p, n) in enumerate(zip(chat_prompts(len(limits)), limits, strict=True))
            )
        )
    finally:
        policy.close()
    assert [len(r[0].token_ids) for r in results] == limits
    assert all(r[0].finish_reason == "length" for r in results)
    assert policy.stats.generated_tokens == sum(limits)  # finished rows never generate again
    assert policy.stats.decode_steps == max(limits) - 1


async def test_cancelling_one_request_frees_its_row_for_the_others(
    tiny_path, tokenizer, chat_prompts
):
    policy = make_policy(tiny_path, max_batch_size=2, max_wait_ms=500)
    policy.eos_token_ids = {len(tokenizer)}
    try:
        a, b, c = chat_prompts(3)
        first = one(policy, a, SamplingParams(max_tokens=300, seed=1))
        doomed = one(policy, b, SamplingParams(max_tokens=300, seed=2))
        await until_decoding(policy, 5)
        queued = one(policy, c, SamplingParams(max_tokens=10, seed=3))
        doomed.cancel()
        (late,) = await queued  # took the cancelled row's place
        assert not first.done()
        (survivor,) = await first
    finally:
        policy.close()
    assert doomed.cancelled()
    assert len(late.token_ids) == 10 and len(survivor.token_ids) == 300
    assert policy.stats.rows == 2
    assert policy.stats.generated_tokens < 300 + 300 + 10


async def test_many_concurrent_requests_all_complete(no_eos, chat_prompts):
    policy = no_eos
    limits = [1 + (i * 7) % 23 for i in range(32)]
    prompts = [p + p[1:] * (i % 4) for i, p in enumerate(chat_prompts(32))]
    results = await asyncio.gather(
        *(
            policy.generate([p], SamplingParams(max_tokens=n, seed=i))
            for i, (p, n) in enumerate(zip(prompts, limits, strict=True))
        )
    )
    assert [len(r[0].token_ids) for r in results] == limits
    assert policy.stats.rows == 32
    assert policy.stats.max_batch_rows == policy.max_batch_size
    assert policy.stats.generated_tokens == sum(limits)


async def test_static_scheduling_gives_the_same_completions(tiny_path, policy, chat_prompts):
    prompts = chat_prompts(6)
    samplings = [SamplingParams(max_tokens=4 + 5 * i, seed=i) for i in range(6)]

    async def run(p: HFPolicy) -> list[list[int]]:
        results = await asyncio.gather(
            *(p.generate([x], s) for x, s in zip(prompts, samplings, strict=True))
        )
        return [r[0].token_ids for r in results]

    static = make_policy(tiny_path, scheduling="static")
    try:
        assert await run(static) == await run(policy)
    finally:
        static.close()


async def test_max_prefill_tokens_splits_a_burst_into_prefills(tiny_path, chat_prompts):
    prompts = chat_prompts(6)
    widest = max(len(p) for p in prompts)
    policy = make_policy(
        tiny_path, max_prefill_tokens=2 * widest, max_batch_size=6, max_wait_ms=500
    )
    try:
        await asyncio.gather(*(policy.generate([p], GREEDY) for p in prompts))
    finally:
        policy.close()
    assert policy.stats.prefills == 3 and policy.stats.batches == 1


async def test_joining_rows_attend_through_the_padding_mask_without_batch_invariance(
    tiny_path, tokenizer, chat_prompts
):
    """The GPU path (plain SDPA over the padded cache, with the attention mask): a request that
    joins a running batch of longer rows matches its run alone to float tolerance."""
    policy = make_policy(tiny_path, batch_invariant=False)
    policy.eos_token_ids = {len(tokenizer)}
    try:
        target, *others = chat_prompts(4)
        sampling = SamplingParams(max_tokens=16, temperature=0.0)
        (alone,) = await policy.generate([target], sampling)
        mates = [
            one(policy, p + p[1:] * (i + 1), SamplingParams(max_tokens=200, seed=i))
            for i, p in enumerate(others)
        ]
        await until_decoding(policy, 10)
        (joined,) = await policy.generate([target], sampling)
        await asyncio.gather(*mates)
    finally:
        policy.close()
    assert not policy.batch_invariant
    assert joined.token_ids == alone.token_ids
    assert joined.logprobs == pytest.approx(alone.logprobs, abs=1e-4)


def test_padded_kv_layer_trims_and_joins_rows():
    keys = torch.arange(2 * 1 * 3 * 2, dtype=torch.float32).reshape(2, 1, 3, 2)
    layer, other = PaddedKVLayer(), PaddedKVLayer()
    layer.update(keys, -keys)
    layer.update(keys[:, :, :1] + 100, -keys[:, :, :1])  # a decode step writes in place
    assert layer.get_seq_length() == 4
    torch.testing.assert_close(layer.keys, torch.cat([keys, keys[:, :, :1] + 100], dim=2))
    layer.trim_left(1)
    before = layer.keys.clone()
    other.update(keys[:1, :, :1].repeat(1, 1, 5, 1), keys[:1, :, :1].repeat(1, 1, 5, 1))
    layer.join(other)  # the narrower side (3 columns) is left-padded to the other's 5
    assert layer.keys.shape == (3, 1, 5, 2) and layer.get_seq_length() == 5
    assert (layer.keys[:2, :, :2] == 0).all()
    torch.testing.assert_close(layer.keys[:2, :, 2:], before)
    torch.testing.assert_close(layer.keys[2:], other.keys)
    layer.update(keys[:, :, :1].repeat(2, 1, 1, 1)[:3], keys[:, :, :1].repeat(2, 1, 1, 1)[:3])
    assert layer.get_seq_length() == 6  # the joined buffer has room to grow in place
    expected = layer.keys[[2, 0]].clone()
    layer.batch_select_indices(torch.tensor([2, 0]))
    torch.testing.assert_close(layer.keys, expected)
    torch.testing.assert_close(layer.keys[0, :, :5], other.keys[0])
    torch.testing.assert_close(
        layer.values[1, :, 2:5], -torch.cat([keys[0, :, 1:], keys[0, :, :1]], 1)
    )
