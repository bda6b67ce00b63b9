"""The env contract v2: task sources, the planner, required info keys, the end of an episode,
pickling and gymnasium's vector envs."""

from __future__ import annotations

import copy
import json
import pickle
from types import ModuleType

import gymnasium
import pytest

import agentenv
from agentenv.env import EnvContractError, EpisodeOverError, TextEnv
from agentenv.envs import BUILTIN_ENVS
from agentenv.envs.search.tasks import WorldConfig, build_world, save_corpus, save_qa
from agentenv.evaluate import Suite, SuiteEntry, evaluate
from agentenv.planner import PlanError, TaskSource, eval_episodes, probe, train_episodes
from agentenv.policies.scripted import ScriptedPolicy
from agentenv.policies.specs import load_policy


class NoSplitEnv(TextEnv):
    """No ``split`` kwarg, no declared splits: the seed alone picks the task."""

    async def _areset(self, *, seed, options):
        self.task = f"t{seed}"
        return "say ok", {"task_id": self.task, "system_prompt": "say ok"}

    async def _astep(self, action):
        ok = action.strip() == "ok"
        return "", float(ok), True, False, {"success": ok, "anchor": ()}


class FiniteEnv(NoSplitEnv):
    """Three test tasks and an unlimited train split."""

    TEST = ("a", "b", "c")

    def splits(self):
        return {"train": None, "test": len(self.TEST)}

    def task_ids(self, split):
        return list(self.TEST) if self.check_split(split) else super().task_ids(split)

    async def _areset(self, *, seed, options):
        self.task = options.get("task") or f"{options.get('split')}-{seed}"
        return "say ok", {"task_id": self.task}


class NoTaskIdEnv(NoSplitEnv):
    async def _areset(self, *, seed, options):
        return "hi", {"system_prompt": "x"}


SAY_OK = ModuleType("say_ok")
"""An expert module of one function: always says ok."""
SAY_OK.solve = lambda task, messages: "ok"

agentenv.register("nosplit-test-v0", f"{__name__}:NoSplitEnv")
agentenv.register("finite-test-v0", f"{__name__}:FiniteEnv")
agentenv.register("notaskid-test-v0", f"{__name__}:NoTaskIdEnv")


# -- the base class enforces ------------------------------------------------------------------
async def test_reset_without_task_id_is_a_contract_error():
    with pytest.raises(EnvContractError, match="task_id"):
        await NoTaskIdEnv().areset(seed=0)


async def test_unknown_split_option_names_the_declared_splits():
    with pytest.raises(ValueError, match="no split 'dev'.*'train', 'test'"):
        await FiniteEnv().areset(seed=0, options={"split": "dev"})
    with pytest.raises(ValueError, match="no split 'test'.*none"):
        await NoSplitEnv().areset(seed=0, options={"split": "test"})


@pytest.mark.parametrize("env_id", BUILTIN_ENVS)
async def test_no_step_after_the_end_for_every_registered_env(env_id):
    env = agentenv.make(env_id)
    with pytest.raises(EpisodeOverError, match="reset"):
        await env.astep("x")  # before any reset
    await env.areset(seed=0)
    truncated = terminated = False
    for _ in range(100):
        *_, terminated, truncated, info = await env.astep("<answer> x </answer> ok stop")
        if terminated or truncated:
            break
    assert terminated or truncated
    assert info["task_id"]
    with pytest.raises(EpisodeOverError):
        await env.astep("<answer> x </answer> ok stop")
    await env.areset(seed=1)  # a reset opens the next episode
    await env.astep("x")
    await env.aclose()


def test_step_after_the_end_raises_gymnasiums_reset_needed():
    env = agentenv.make("search-v0")
    _, info = env.reset(seed=3)
    env.step(f"<answer> {info['ground_truth'][0]} </answer>")
    with pytest.raises(gymnasium.error.ResetNeeded):
        env.step(f"<answer> {info['ground_truth'][0]} </answer>")
    env.close()


# -- copies and vector envs -------------------------------------------------------------------
def test_env_pickles_and_deep_copies_after_reset():
    env = agentenv.make("search-v0", max_hops=1)
    obs, info = env.reset(seed=5)
    env.step("<search> anything </search>")
    for clone in (copy.deepcopy(env), pickle.loads(pickle.dumps(env))):
        assert clone.task == env.task and clone.turn == 1
        *_, terminated, _, step_info = clone.step(f"<answer> {info['ground_truth'][0]} </answer>")
        assert terminated and step_info["success"]
        clone.close()
    *_, terminated, _, _ = env.step("<search> more </search>")  # the original goes on untouched
    assert not terminated
    env.close()


@pytest.mark.parametrize("mode", ["make_vec", "AsyncVectorEnv"])
def test_async_vector_env_with_default_settings(mode):
    if mode == "make_vec":
        envs = gymnasium.make_vec("agentenv/search-v0", num_envs=2, vectorization_mode="async")
    else:
        envs = gymnasium.vector.AsyncVectorEnv(
            [lambda: gymnasium.make("agentenv/search-v0") for _ in range(2)]
        )
    try:
        observations, infos = envs.reset(seed=[0, 1])
        assert all(o.startswith("Question: ") for o in observations)
        actions = ["<search> ünïcödé — 検索 ✓ </search>", "<answer> x </answer>"]
        observations, rewards, terminated, truncated, _ = envs.step(actions)
        assert observations[0].startswith("<information>") and list(terminated) == [False, True]
        observations, *_ = envs.step(actions)  # env 1 autoresets: no step after its end
        assert observations[1].startswith("Question: ")
    finally:
        envs.close()


# -- the planner ------------------------------------------------------------------------------
async def test_probe_resolves_splits_per_role():
    assert (await probe("nosplit-test-v0", role="eval")).split is None
    finite = await probe("finite-test-v0", role="eval")
    assert (finite.split, finite.size, finite.task_ids) == ("test", 3, ("a", "b", "c"))
    train = await probe("finite-test-v0", role="train")
    assert (train.split, train.size) == ("train", None)
    with pytest.raises(PlanError, match="finite-test-v0.*no split 'dev'"):
        await probe("finite-test-v0", split="dev", role="eval")
    with pytest.raises(PlanError, match="nosplit-test-v0.*split"):
        await probe("nosplit-test-v0", {"split": "test"}, role="eval")
    with pytest.raises(PlanError, match="notaskid-test-v0.*task_id"):
        await probe("notaskid-test-v0", role="eval")


def test_finite_eval_plays_each_task_once_and_refuses_more():
    source = TaskSource("finite-test-v0", {}, "test", 3, ("a", "b", "c"))
    plan = eval_episodes(source, None, 2, 100)
    assert [(r.task, r.seed, s) for r, s in plan] == [
        ("a", 100, 0), ("a", 100, 1), ("b", 101, 0), ("b", 101, 1), ("c", 102, 0), ("c", 102, 1)
    ]  # fmt: skip
    with pytest.raises(PlanError, match="asked for 4 tasks.*at most 3"):
        eval_episodes(source, 4, 1, 100)
    unlimited = TaskSource("finite-test-v0", {}, "train", None)
    plan = eval_episodes(unlimited, None, 1, 0)
    assert len(plan) == 50 and {r.split for r, _ in plan} == {"train"}


def test_training_cycles_a_finite_split_epoch_by_epoch():
    source = TaskSource("finite-test-v0", {}, "test", 3, ("a", "b", "c"))
    kwargs = {"seed_start": 0, "run_seed": 7, "env": 0}
    tasks = [r.task for r in train_episodes(source, 0, 9, 1, **kwargs)]
    assert all(sorted(tasks[i : i + 3]) == ["a", "b", "c"] for i in (0, 3, 6))
    resumed = [r.task for r in train_episodes(source, 4, 5, 1, **kwargs)]
    assert resumed == tasks[4:]  # the position alone says where training goes on


async def test_eval_of_an_env_without_split_argument(tmp_path):
    result = await evaluate(
        ScriptedPolicy(SAY_OK),
        Suite("s", [SuiteEntry("nosplit-test-v0", n=3)]),
        out_dir=tmp_path,
        progress=False,
    )
    assert [r["status"] for r in result.rows] == ["done"] * 3
    assert result.summaries[0].success_rate == 1.0 and result.error_rate == 0.0


async def test_qa_file_is_evaluated_each_task_exactly_once(tmp_path):
    world = build_world(WorldConfig(num_entities=200))
    save_corpus(world.docs, tmp_path / "corpus.jsonl")
    tasks = world.tasks("test", 17, 1, 2)
    save_qa(tasks, tmp_path / "qa.jsonl")
    kwargs = {"corpus": str(tmp_path / "corpus.jsonl"), "qa": str(tmp_path / "qa.jsonl")}
    suite = Suite("qa", [SuiteEntry("search-v0", kwargs)])
    await evaluate(load_policy("random"), suite, out_dir=tmp_path / "out", progress=False)
    rows = [json.loads(line) for line in (tmp_path / "out" / "results.jsonl").open()]
    assert sorted(r["task_id"] for r in rows) == sorted(t.id for t in tasks)
    with pytest.raises(PlanError, match="asked for 18 tasks.*at most 17"):
        await evaluate(load_policy("expert"), Suite("qa", [SuiteEntry("search-v0", kwargs, n=18)]))
