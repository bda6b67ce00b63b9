"""The prefix cache: finished rows' keys and values reused by the next turn's prompt, within a
byte budget, dropped when the weights change; HFPolicy with it matches HFPolicy without."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
import torch

from agentenv.policies import SamplingParams
from agentenv.policies.hf import HFPolicy
from agentenv.policies.prefix_cache import PrefixCache, weights_version

pytestmark = pytest.mark.filterwarnings("error::DeprecationWarning", "error::FutureWarning")


def kv(tokens: int, heads: int = 2, dim: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.zeros(heads, tokens, dim), torch.ones(heads, tokens, dim)


def test_the_longest_common_prefix_of_the_same_weights_is_reused() -> None:
    cache = PrefixCache(1 << 20)
    cache.put([1, 2], [kv(2), None], version=0)
    cache.put([1, 2, 3, 4], [kv(4), None], version=0)
    cache.put([1, 9, 9], [kv(3), None], version=0)

    def reused(prompt: list[int], version: int = 0) -> tuple | None:
        match = cache.match(prompt, version)
        return None if match is None else (match[0].tokens, match[1])

    assert reused([1, 2, 3, 4, 5]) == ((1, 2, 3, 4), 4)
    assert reused([1, 2, 3, 7, 7]) == ((1, 2, 3, 4), 3)  # up to the first difference
    assert reused([1, 2, 3, 4]) == ((1, 2, 3, 4), 3)  # the last prompt token must run
    assert reused([1, 9])[1] == 1  # any entry that starts with 1
    assert reused([1]) is None and reused([7, 1, 2]) is None
    assert (cache.hits, cache.misses, cache.reused_tokens) == (4, 2, 11)
    assert reused([1, 2, 3, 4, 5], version=1) is None
    assert len(cache) == 0 and cache.nbytes == 0  # entries of other weights were dropped


def test_the_byte_budget_evicts_the_least_recently_used() -> None:
    one = sum(t.nbytes for t in kv(4))
    cache = PrefixCache(2 * one)
    cache.put([1, 2, 3, 4], [kv(4)], 0)
    cache.put([5, 6, 7, 8], [kv(4)], 0)
    assert cache.match([1, 2, 3, 4, 0], 0) is not None  # now the most recent
    cache.put([9, 9, 9, 9], [kv(4)], 0)
    assert cache.match([5, 6, 7, 8, 0], 0) is None
    assert cache.match([1, 2, 3, 4, 0], 0) is not None
    assert len(cache) == 2 and cache.nbytes == 2 * one
    cache.put(list(range(100)), [kv(100)], 0)  # larger than the whole budget: not kept
    assert len(cache) == 2
    with pytest.raises(ValueError, match="max_bytes"):
        PrefixCache(-1)


def test_weights_version_grows_with_in_place_changes() -> None:
    model = torch.nn.Linear(3, 3)
    before = weights_version(model)
    with torch.no_grad():
        model.weight.add_(1.0)
    assert weights_version(model) > before


async def play(policy: HFPolicy, seed: int, turns: int = 4) -> list:
    """A multi-turn episode: each turn's prompt is the last one + its completion + new tokens."""
    context = [5, 6, 7, 8, 9, 10 + seed]
    out = []
    for turn in range(turns):
        sampling = SamplingParams(max_tokens=10, temperature=1.0, seed=100 * seed + turn)
        (completion,) = await policy.generate([context], sampling)
        out.append((completion.token_ids, completion.logprobs))
        context = [*context, *completion.token_ids, 11, 12 + turn, 13]
    return out


@pytest.mark.parametrize("batch_invariant", [True, False])
async def test_multi_turn_episodes_reuse_their_turns_and_match_no_cache(
    tiny_path, batch_invariant
) -> None:
    kwargs = {"device": "cpu", "max_batch_size": 8, "batch_invariant": batch_invariant}
    plain = HFPolicy.from_pretrained(tiny_path, **kwargs)
    cached = HFPolicy(plain.model, plain.tokenizer, prefix_cache_mib=16, **kwargs)
    try:
        expected = await asyncio.gather(*(play(plain, s) for s in range(6)))
        got = await asyncio.gather(*(play(cached, s) for s in range(6)))
        for episode, reference in zip(got, expected, strict=True):
            for (tokens, logprobs), (ref_tokens, ref_logprobs) in zip(
                episode, reference, strict=True
            ):
                assert tokens == ref_tokens
                np.testing.assert_allclose(logprobs, ref_logprobs, atol=1e-4)
        assert cached.prefix_cache.hits == 6 * 3 and cached.prefix_cache.misses == 6
        assert cached.stats.prefilled_tokens < plain.stats.prefilled_tokens / 3
    finally:
        plain.close()
        cached.close()


async def test_results_do_not_depend_on_what_ran_beside(tiny_path) -> None:
    """With the cache on, episodes played one at a time and all at once (hits and misses
    prefilled in the same passes) give the same tokens and logprobs, bit for bit."""
    policy = HFPolicy.from_pretrained(
        tiny_path, device="cpu", max_batch_size=8, prefix_cache_mib=16
    )
    try:
        alone = [await play(policy, s) for s in range(5)]
        policy.prefix_cache.clear()
        together = await asyncio.gather(*(play(policy, s) for s in range(5)))
        assert together == alone
    finally:
        policy.close()


async def test_changed_weights_are_never_read_from_the_cache(tiny_path) -> None:
    policy = HFPolicy.from_pretrained(
        tiny_path, device="cpu", max_batch_size=8, prefix_cache_mib=16
    )
    try:
        prompt = [5, 6, 7, 8, 9]
        greedy = SamplingParams(max_tokens=6, temperature=0.0)
        (first,) = await policy.generate([prompt], greedy)
        with policy.weights_lock, torch.no_grad():
            for parameter in policy.model.parameters():
                parameter.mul_(1.5)
        follow_up = [*prompt, *first.token_ids, 11, 12]
        (after,) = await policy.generate([follow_up], greedy)
        assert policy.prefix_cache.hits == 0
        fresh = HFPolicy(policy.model, policy.tokenizer, device="cpu")
        (expected,) = await fresh.generate([follow_up], greedy)
        fresh.close()
        assert after.token_ids == expected.token_ids and after.logprobs == expected.logprobs
    finally:
        policy.close()


def test_prefix_cache_needs_full_attention_and_a_budget(tiny_path) -> None:
    policy = HFPolicy.from_pretrained(tiny_path, device="cpu")
    try:
        with pytest.raises(ValueError, match="prefix_cache_mib"):
            HFPolicy(policy.model, policy.tokenizer, prefix_cache_mib=-1)
        policy.model.config.sliding_window = 16
        with pytest.raises(ValueError, match="full attention"):
            HFPolicy(policy.model, policy.tokenizer, prefix_cache_mib=1)
    finally:
        policy.model.config.sliding_window = None
        policy.close()
