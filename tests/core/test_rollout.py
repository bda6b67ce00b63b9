"""The rollout engine on the tiny model: token faithfulness, masks, budgets, isolation, no waste."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from transformers import PreTrainedTokenizerFast

import agentenv
from agentenv import EnvServiceError
from agentenv.env import TextEnv
from agentenv.rollout import (
    EpisodeRequest,
    RolloutConfig,
    RolloutEngine,
    group_requests,
    turn_template,
)
from agentenv.trajectory import Trajectory, read_jsonl, write_jsonl

QWEN_STYLE_TEMPLATE = (
    "{%- if messages[0]['role'] != 'system' %}"
    "{{- '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}{%- endif %}"
    "{%- for m in messages %}"
    "{%- if m['role'] == 'tool' %}"
    "{{- '<|im_start|>user\\n<tool_response>\\n' + m['content'] + '\\n</tool_response><|im_end|>\\n' }}"
    "{%- else %}{{- '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' }}{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)


class ScriptedObservationsEnv(TextEnv):
    """Answers every action with the next of ``observations``; ends after the last one.

    ``fail_at`` raises a service error at that step; ``lengths`` makes the episode length depend
    on the seed (for uneven-length batches).
    """

    stop_strings = ("</act>",)

    def __init__(
        self,
        observations: Sequence[str] = ("obs one", "obs two", "obs three"),
        fail_at: int | None = None,
        lengths: Sequence[int] | None = None,
        role: str = "user",
        render_mode: str | None = None,
    ) -> None:
        super().__init__(render_mode)
        self.observations = list(observations)
        self.fail_at = fail_at
        self.lengths = lengths
        self.observation_role = role

    async def _areset(self, *, seed, options):
        self.task = {"id": f"t{seed}"}
        self.length = (
            self.lengths[seed % len(self.lengths)] if self.lengths else len(self.observations)
        )
        return "first observation ✓", {
            "task_id": self.task["id"],
            "system_prompt": "act, then stop",
            "ground_truth": "x",
        }

    async def _astep(self, action):
        if self.fail_at is not None and self.turn == self.fail_at:
            raise EnvServiceError("service at http://127.0.0.1:1 is gone", url="http://127.0.0.1:1")
        done = self.turn + 1 >= self.length
        obs = self.observations[self.turn % len(self.observations)]
        return (
            obs,
            float(done),
            done,
            False,
            {
                "anchor": (self.turn,),
                "success": done,
                "reward_components": {"step": 1.0},
            },
        )


agentenv.register("scripted-obs-test-v0", f"{__name__}:ScriptedObservationsEnv")


class RecordingPolicy:
    """Delegates to a real policy and records every prompt it was fed."""

    def __init__(self, inner):
        self.inner = inner
        self.tokenizer = inner.tokenizer
        self.name = "recording"
        self.prompts: list[list[int]] = []
        self.outputs: list[list[int]] = []

    async def generate(self, prompts, sampling, *, contexts=None):
        self.prompts.extend(list(p) for p in prompts)
        out = await self.inner.generate(prompts, sampling, contexts=contexts)
        self.outputs.extend(c.token_ids for c in out)
        return out

    async def score(self, prompts, continuations):
        return await self.inner.score(prompts, continuations)

    async def aclose(self):
        pass


@pytest.fixture(scope="module")
def tiny_policy():
    from agentenv.models import tiny
    from agentenv.policies.hf import HFPolicy

    return HFPolicy.from_pretrained(tiny(), device="cpu")


def _with_template(tokenizer, template: str):
    clone = PreTrainedTokenizerFast(tokenizer_object=tokenizer.backend_tokenizer)
    clone.eos_token, clone.pad_token = tokenizer.eos_token, tokenizer.pad_token
    clone.chat_template = template
    return clone


def _check_faithful(traj: Trajectory, policy: RecordingPolicy) -> None:
    """Every prompt fed is a prefix of the trajectory and is followed by what was generated."""
    ids = traj.token_ids
    assert len(policy.prompts) == traj.num_turns
    for prompt, output in zip(policy.prompts, policy.outputs, strict=True):
        assert ids[: len(prompt)] == prompt
        assert ids[len(prompt) : len(prompt) + len(output)] == output
    arr = traj.arrays()
    assert np.all(arr["loss_mask"][: traj.prompt_length] == 0)
    assert np.all(arr["turn_ids"][: traj.prompt_length] == -1)
    generated = np.concatenate([np.asarray(o) for o in policy.outputs]) if policy.outputs else []
    assert arr["token_ids"][arr["loss_mask"] == 1].tolist() == list(generated)


observation_text = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",)), min_size=0, max_size=40
)


@pytest.mark.parametrize("template", ["tiny", "qwen"])
@settings(
    max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(observations=st.lists(observation_text, min_size=1, max_size=3), seed=st.integers(0, 50))
def test_token_faithful_for_any_observation_text(tiny_policy, template, observations, seed):
    tokenizer = tiny_policy.tokenizer
    if template == "qwen":
        tokenizer = _with_template(tokenizer, QWEN_STYLE_TEMPLATE)
    policy = RecordingPolicy(tiny_policy)
    policy.tokenizer = tokenizer
    engine = RolloutEngine(policy, RolloutConfig(max_tokens_per_turn=8, temperature=1.0))
    request = EpisodeRequest(
        "scripted-obs-test-v0",
        seed,
        env_kwargs={"observations": observations, "role": "tool" if template == "qwen" else "user"},
        sample_seed=seed,
    )
    (traj,) = asyncio.run(engine.run([request]))
    assert traj.status == "done", traj.reason
    _check_faithful(traj, policy)
    # observations are rendered through the template, never merged into generated ids
    tpl = turn_template(tokenizer, "tool" if template == "qwen" else "user")
    assert tpl.observation_suffix.endswith("assistant\n")


async def test_masks_turn_ids_and_jsonl_round_trip(tiny_policy, tmp_path):
    engine = RolloutEngine(tiny_policy, RolloutConfig(max_tokens_per_turn=6))
    (traj,) = await engine.run([EpisodeRequest("scripted-obs-test-v0", 3, sample_seed=1)])
    arr = traj.arrays()
    assert traj.num_turns == 3 and traj.success and traj.reward == 1.0
    assert set(np.unique(arr["turn_ids"])) == {-1, 0, 1, 2}
    # each turn: generated tokens first, then its observation tokens (mask 0)
    for t in range(2):
        mask = arr["loss_mask"][arr["turn_ids"] == t]
        first_obs = np.argmin(mask)
        assert mask[:first_obs].all() and not mask[first_obs:].any()
        assert traj.turns[t].observation_tokens == int((mask == 0).sum())
    assert np.all(arr["logprobs"][arr["loss_mask"] == 0] == 0.0)
    assert np.all(arr["logprobs"][arr["loss_mask"] == 1] < 0.0)
    assert traj.turns[0].reward_components == {"step": 1.0}
    write_jsonl([traj], tmp_path / "t.jsonl")
    (back,) = read_jsonl(tmp_path / "t.jsonl")
    assert back.token_ids == traj.token_ids and back.turns[2].anchor == [2]


async def test_finished_episodes_never_generate_again(tiny_policy):
    policy = RecordingPolicy(tiny_policy)
    engine = RolloutEngine(policy, RolloutConfig(max_tokens_per_turn=4))
    lengths = [1, 5, 2, 3]
    requests = [
        EpisodeRequest("scripted-obs-test-v0", s, env_kwargs={"lengths": lengths}, sample_seed=s)
        for s in range(4)
    ]
    trajs = await engine.run(requests)
    assert [t.num_turns for t in trajs] == lengths
    assert engine.generate_calls == sum(lengths)
    assert len(policy.prompts) == sum(lengths)


def test_one_engine_serves_successive_event_loops_at_its_caps(tiny_policy):
    config = RolloutConfig(
        max_tokens_per_turn=4,
        max_concurrent_episodes=1,
        env_concurrency={"scripted-obs-test-v0": 1},
    )
    engine = RolloutEngine(tiny_policy, config)
    requests = [
        EpisodeRequest("scripted-obs-test-v0", s, env_kwargs={"lengths": [2, 3]}, sample_seed=s)
        for s in range(2)
    ]
    for _ in range(2):  # each asyncio.run is a new loop; the caps are contended in both
        trajs = asyncio.run(engine.run(requests))
        assert [(t.status, t.num_turns) for t in trajs] == [("done", 2), ("done", 3)]


async def test_budgets_truncate_with_reasons(tiny_policy):
    engine = RolloutEngine(tiny_policy, RolloutConfig(max_turns=2, max_tokens_per_turn=4))
    (t,) = await engine.run([EpisodeRequest("scripted-obs-test-v0", 0, sample_seed=0)])
    assert (t.status, t.reason, t.num_turns) == ("truncated", "max_turns", 2)

    engine = RolloutEngine(
        tiny_policy, RolloutConfig(max_tokens_per_turn=16, max_context_tokens=40)
    )
    (t,) = await engine.run([EpisodeRequest("scripted-obs-test-v0", 0, sample_seed=0)])
    assert (t.status, t.reason) == ("truncated", "max_context_tokens")
    assert len(t.token_ids) <= 40

    engine = RolloutEngine(tiny_policy, RolloutConfig(max_tokens_per_turn=3, temperature=1.0))
    (t,) = await engine.run([EpisodeRequest("scripted-obs-test-v0", 0, sample_seed=0)])
    assert all(turn.action_tokens <= 3 for turn in t.turns)


async def test_service_error_aborts_only_that_episode(tiny_policy):
    engine = RolloutEngine(tiny_policy, RolloutConfig(max_tokens_per_turn=4))
    requests = [
        EpisodeRequest("scripted-obs-test-v0", 0, env_kwargs={"fail_at": 1}, sample_seed=0),
        EpisodeRequest("scripted-obs-test-v0", 1, sample_seed=1),
    ]
    bad, good = await engine.run(requests)
    assert bad.status == "error" and "127.0.0.1:1" in bad.reason and not bad.trainable
    assert bad.num_turns == 1
    assert good.status == "done" and good.trainable


async def test_groups_share_the_task_and_mix_envs(tiny_policy):
    engine = RolloutEngine(tiny_policy, RolloutConfig(max_tokens_per_turn=4, max_turns=1))
    requests = group_requests("scripted-obs-test-v0", [7, 8], group_size=3)
    requests += group_requests("search-v0", [0], group_size=2)
    trajs = await engine.run(requests)
    groups = [t.group_id for t in trajs]
    assert groups[:3] == ["scripted-obs-test-v0:t7"] * 3
    assert len(set(groups[3:6])) == 1 and groups[3] != groups[0]
    assert trajs[6].env_id == "search-v0" and trajs[6].group_id == trajs[7].group_id
    assert len({t.traj_id for t in trajs}) == len(trajs)


async def test_killing_the_search_service_mid_rollout_errors_only_unfinished_episodes():
    """A real retriever on 127.0.0.1 dies after the first episode ends: the rest end as
    errors naming its URL, promptly; nothing is dropped; finished episodes stay done."""
    import time

    from agentenv.envs.search.env import SERVICE_FACTORY
    from agentenv.launch import LocalServer
    from agentenv.policies.scripted import ScriptedPolicy

    server = LocalServer(SERVICE_FACTORY, {}).start()
    policy = ScriptedPolicy()
    engine = RolloutEngine(policy, RolloutConfig(max_concurrent_episodes=2))
    kwargs = {"service": server.url, "min_hops": 4, "max_hops": 4, "timeout": 5.0}
    requests = [EpisodeRequest("search-v0", s, env_kwargs=kwargs) for s in range(6)]

    def kill_after_first(traj: Trajectory) -> None:
        server.process.kill()

    start = time.perf_counter()
    try:
        trajs = await engine.run(requests, on_episode=kill_after_first)
    finally:
        server.stop()
    assert len(trajs) == 6 and time.perf_counter() - start < 60
    statuses = [t.status for t in trajs]
    assert statuses.count("done") >= 1 and statuses.count("error") >= 1, statuses
    for t in trajs:
        if t.status == "error":
            assert server.url in t.reason and not t.trainable
