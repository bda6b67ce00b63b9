"""SearchEnv: the TextEnv contract, the Search-R1 protocol, rewards, anchors, bad actions, and
the scripted expert and random baseline."""

from __future__ import annotations

import json
import re
import time

import gymnasium
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env
from hypothesis import given, settings
from hypothesis import strategies as st

import agentenv
from agentenv.envs import BUILTIN_ENVS
from agentenv.envs.search import expert
from agentenv.envs.search.env import (
    INVALID_ACTION_HINT,
    LAST_TURN_NOTE,
    SEARCH_REFUSED,
    THINK_INSTRUCTION,
    SearchEnv,
)
from agentenv.envs.search.tasks import RELATIONS, WorldConfig, build_world, save_corpus, save_qa
from agentenv.rewards.format import search_r1_action

RESET_KEYS = {"task_id", "ground_truth", "system_prompt", "anchor"}
STEP_KEYS = {"task_id", "reward_components", "action_valid", "anchor", "success"}


@pytest.fixture
async def env():
    env = SearchEnv()
    yield env
    await env.aclose()


def first_query(task) -> str:
    return f"<search>{task.start} {RELATIONS[task.chain[0]].keywords}</search>"


@pytest.mark.parametrize("env_id", BUILTIN_ENVS)
def test_check_env_passes_for_every_registered_env(env_id: str) -> None:
    env = gymnasium.make(f"agentenv/{env_id}")
    check_env(env.unwrapped, skip_render_check=False)
    env.close()


def test_registered_with_stop_strings_and_expert() -> None:
    info = agentenv.env_info("search-v0")
    assert info.expert == "agentenv.envs.search.expert"
    env = agentenv.make("search-v0")
    assert isinstance(env, SearchEnv)
    assert env.stop_strings == ("</search>", "</answer>")
    env.close()


async def test_reset_gives_question_protocol_and_keys(env: SearchEnv) -> None:
    observation, info = await env.areset(seed=3)
    assert set(info) == RESET_KEYS
    assert observation == f"Question: {env.task.question}"
    assert info["task_id"] == env.task.id and info["task_id"].startswith("train-h")
    assert info["ground_truth"] == list(env.task.golden_answers)
    for tag in ("<search>", "</search>", "<answer>", "</answer>", "<information>"):
        assert tag in info["system_prompt"]
    assert info["anchor"] == (("action", "reset"), ("gold", ()), ("other", 0))


async def test_seed_picks_the_task_deterministically() -> None:
    env, other = SearchEnv(), SearchEnv(split="test", min_hops=2, max_hops=2)
    ids = [(await env.areset(seed=s))[1]["task_id"] for s in range(20)]
    assert ids == [(await env.areset(seed=s))[1]["task_id"] for s in range(20)]
    assert len(set(ids)) == 20
    hops = {int(re.match(r"train-h(\d)", i)[1]) for i in ids}
    assert hops == {1, 2, 3, 4}
    test_ids = [(await other.areset(seed=s))[1]["task_id"] for s in range(10)]
    assert all(i.startswith("test-h2-") for i in test_ids)
    await env.aclose()
    await other.aclose()


async def test_options_select_a_task_by_id_or_object(env: SearchEnv) -> None:
    task = env.world.task("test", 3, 12)
    _, info = await env.areset(options={"task": task.id})
    assert env.task == task and info["task_id"] == "test-h3-12"
    await env.areset(options={"task": task})
    assert env.task is task
    with pytest.raises(KeyError, match="unknown task id 'nope'"):
        await env.areset(options={"task": "nope"})


async def test_step_info_keys_and_json_able_anchor(env: SearchEnv) -> None:
    await env.areset(options={"task": "train-h2-0"})
    for action in ("no tags", first_query(env.task), "<answer>x</answer>"):
        *_, info = await env.astep(action)
        assert set(info) == STEP_KEYS
        hash(info["anchor"])
        restored = json.loads(json.dumps(info["anchor"]))
        assert [(k, tuple(v) if isinstance(v, list) else v) for k, v in restored] == list(
            info["anchor"]
        )


async def test_search_returns_information_and_marks_gold(env: SearchEnv) -> None:
    task = env.world.task("train", 2, 3)
    await env.areset(options={"task": task})
    observation, reward, terminated, truncated, info = await env.astep(
        f"<think>first hop</think>\n{first_query(task)}"
    )
    assert observation.startswith("<information>Doc 1(Title: ")
    assert observation.endswith("</information>")
    assert observation.count("\nDoc ") == 2  # topk = 3
    assert (reward, terminated, truncated, info["action_valid"]) == (0.0, False, False, True)
    assert info["reward_components"] == {"format": 1.0, "retrieval_hit": 0.5}
    (kind, (gold_key, gold), (other_key, other)) = info["anchor"]
    assert kind == ("action", "search") and gold == (task.gold_doc_ids[0],) and other == 2
    *_, info = await env.astep(first_query(task))
    assert info["reward_components"]["retrieval_hit"] == 0.0
    assert info["anchor"][1:] == (("gold", (task.gold_doc_ids[0],)), ("other", 2))


async def test_expert_solves_at_least_99_percent(env: SearchEnv, run_episode) -> None:
    tasks = env.world.tasks("test", 200)
    assert {t.hops for t in tasks} == {1, 2, 3, 4}
    results = [await run_episode(env, t) for t in tasks]
    assert sum(r.success for r in results) / len(results) >= 0.99
    assert all(r.rewards[-1] == float(r.success) for r in results)
    turns = [len(r.rewards) for r in results]
    assert max(turns) <= env.max_turns


@pytest.mark.parametrize("think", [True, False])
async def test_the_expert_thinks_only_when_the_prompt_asks(think: bool, run_episode) -> None:
    env = SearchEnv(think=think, max_hops=2)
    try:
        assert (THINK_INSTRUCTION in env.system_prompt) is think
        results = [await run_episode(env, t) for t in env.world.tasks("test", 20, 1, 2)]
    finally:
        await env.aclose()
    assert all(r.success for r in results)
    actions = [m["content"] for r in results for m in r.messages if m["role"] == "assistant"]
    assert all(("<think>" in a) is (think and a.startswith("<think>")) for a in actions)
    assert any("<think>" in a for a in actions) is think


async def test_random_baseline_never_breaks_the_env(env: SearchEnv, run_episode) -> None:
    rng = np.random.default_rng(0)
    results = [
        await run_episode(env, None, lambda t, m: expert.random_action(t, m, rng), seed=s)
        for s in range(60)
    ]
    assert sum(r.success for r in results) / len(results) < 0.2
    assert any(not i["action_valid"] for r in results for i in r.infos[1:])


# -- rewards --------------------------------------------------------------------------------------
async def answer_episode(env: SearchEnv, task_id: str, actions: list[str]):
    await env.areset(options={"task": task_id})
    for action in actions:
        result = await env.astep(action)
    return result


@pytest.mark.parametrize(
    ("reward", "actions", "expected"),
    [
        ("em", ["<answer> {a} </answer>"], 1.0),
        ("em", ["<answer>The {a}!</answer>"], 1.0),
        ("em", ["<answer>{a} and more</answer>"], 0.0),
        ("f1", ["<answer>{a} and more</answer>"], 2 * (1 / 3) / (1 + 1 / 3)),
        ("format", ["<answer>{a}</answer>"], 1.0),
        ("format", ["oops", "<answer>{a}</answer>"], 0.8),
        ("format", ["<answer>wrong</answer>"], 0.2),
        ("format", ["oops", "<answer>wrong</answer>"], 0.1),
        ("format", ["oops"] * 5, 0.0),
        ("format", ["<search>q</search>"] * 4 + ["<answer>wrong</answer>"], 0.2),
        ("format", ["<search>q</search>"] * 5, 0.0),
        ("format", ["<search>q</search>"] * 3 + ["hmm", "<answer>{a}</answer>"], 0.8),
    ],
)
async def test_reward_worked_cases(reward: str, actions: list[str], expected: float) -> None:
    env = SearchEnv(reward=reward)
    task = env.world.task("train", 1, 0)
    answer = task.golden_answers[0]
    assert len(answer.split()) == 1
    *_, reward_value, terminated, truncated, info = await answer_episode(
        env, task.id, [a.format(a=answer) for a in actions]
    )
    assert reward_value == pytest.approx(expected)
    assert terminated or truncated
    assert {"em", "f1", "format_score"} <= set(info["reward_components"])
    await env.aclose()


async def test_aliases_count_as_correct(env: SearchEnv) -> None:
    world = env.world
    task = next(t for t in world.tasks("train", 400, 1, 1) if len(t.golden_answers) > 1)
    _, reward, terminated, _, info = await answer_episode(
        env, task.id, [f"<answer>{task.golden_answers[1]}</answer>"]
    )
    assert reward == 1.0 and terminated and info["success"]


# -- the protocol's edges -------------------------------------------------------------------------
async def test_last_turn_refuses_search_and_truncates() -> None:
    env = SearchEnv(max_turns=2)
    await env.areset(seed=0)
    observation, _, terminated, truncated, info = await env.astep(first_query(env.task))
    assert observation.endswith(LAST_TURN_NOTE) and not (terminated or truncated)
    observation, reward, terminated, truncated, info = await env.astep(first_query(env.task))
    assert observation == SEARCH_REFUSED
    assert (reward, terminated, truncated) == (0.0, False, True)
    assert not info["action_valid"] and not info["success"]
    assert info["anchor"][0] == ("action", "refused")
    assert info["reward_components"]["em"] == 0.0
    await env.aclose()


async def test_answer_on_the_last_turn_is_allowed() -> None:
    env = SearchEnv(max_turns=1)
    await env.areset(options={"task": "train-h1-0"})
    _, reward, terminated, truncated, info = await env.astep(
        f"<answer>{env.task.golden_answers[0]}</answer>"
    )
    assert (reward, terminated, truncated, info["success"]) == (1.0, True, False, True)
    await env.aclose()


@pytest.mark.parametrize(
    "action",
    [
        "",
        "   ",
        "I think the answer is 42",
        "<search>unclosed",
        "<answer>mixed</search>",
        "<search></search>",
        "<search>   </search>",
        "</search><search>",
        "<SEARCH>upper</SEARCH>",
        "<search >spaced</search >",
        "\ud800\x00 \U0001f680",
        "<answer" * 200_000,
        "<search>" * 200_000,
    ],
)
async def test_invalid_actions_get_the_hint_and_the_episode_goes_on(
    env: SearchEnv, action: str
) -> None:
    await env.areset(seed=1)
    start = time.perf_counter()
    observation, reward, terminated, truncated, info = await env.astep(action)
    assert time.perf_counter() - start < 2.0  # parsing is linear, never quadratic
    assert observation == INVALID_ACTION_HINT
    assert (reward, terminated, truncated) == (0.0, False, False)
    assert info["action_valid"] is False and info["anchor"][0] == ("action", "invalid")
    assert info["reward_components"]["format"] == 0.0


@pytest.mark.parametrize(
    "query", ["東京 ünïcødé 🚀", "\ud800 lone surrogate", "AND (", "x" * 1_000_000]
)
async def test_any_search_text_is_served(env: SearchEnv, query: str) -> None:
    await env.areset(seed=1)
    observation, _, terminated, _, info = await env.astep(f"<search>{query}</search>")
    assert observation.startswith("<information>") and info["action_valid"] and not terminated


async def test_observations_are_capped_and_say_so() -> None:
    env = SearchEnv(topk=8, max_obs_chars=300)
    await env.areset(seed=2)
    observation, *_ = await env.astep(first_query(env.task))
    assert len(observation) <= 300
    assert re.search(r"\[truncated \d+ chars\]</information>$", observation)
    await env.aclose()


def test_sync_api_and_bad_constructor_arguments() -> None:
    env = SearchEnv()
    observation, info = env.reset(seed=4)
    _, _, terminated, _, _ = env.step(f"<answer>{info['ground_truth'][0]}</answer>")
    assert terminated
    env.close()
    for kwargs in (
        {"split": "dev"},
        {"reward": "bleu"},
        {"min_hops": 3, "max_hops": 2},
        {"max_turns": 0},
        {"qa": "x.jsonl"},
    ):
        with pytest.raises(ValueError):
            SearchEnv(**kwargs)


@given(
    st.lists(
        st.sampled_from(
            ["<search>", "</search>", "<answer>", "</answer>", "q", " ", "<", ">", "/"]
        ),
        max_size=14,
    )
)
@settings(max_examples=300, deadline=None)
def test_search_r1_action_matches_the_search_r1_regex(pieces: list[str]) -> None:
    text = "".join(pieces)
    match = re.search(r"<(search|answer)>(.*?)</\1>", text, re.DOTALL)
    expected = (match[1], match[2].strip()) if match else (None, "")
    assert search_r1_action(text) == expected


# -- public data ----------------------------------------------------------------------------------
async def test_qa_and_corpus_files(tmp_path, run_episode) -> None:
    world = build_world(WorldConfig(seed=9, num_entities=100))
    save_corpus(world.docs, tmp_path / "corpus.jsonl")
    tasks = world.tasks("train", 5, 1, 1)
    save_qa(tasks, tmp_path / "qa.jsonl")
    env = SearchEnv(corpus=tmp_path / "corpus.jsonl", qa=tmp_path / "qa.jsonl")
    _, info = await env.areset(seed=0)
    assert info["task_id"] in {t.id for t in tasks}
    result = await run_episode(env, tasks[0].id)
    assert result.messages[2]["content"].startswith("<search>")
    _, reward, terminated, _, info = await answer_episode(
        env, tasks[1].id, [f"<answer>{tasks[1].golden_answers[0]}</answer>"]
    )
    assert (reward, terminated, info["success"]) == (1.0, True, True)
    with pytest.raises(KeyError, match="not in the QA file"):
        await env.areset(options={"task": "train-h1-999"})
    await env.aclose()


async def test_prefetch_puts_the_questions_documents_in_the_first_observation():
    env = SearchEnv(num_entities=200, max_hops=1, topk=2, prefetch=True)
    observation, info = await env.areset(seed=3)
    assert observation.startswith(f"Question: {env.task.question}\n<information>Doc 1(")
    gold = dict(info["anchor"])["gold"]
    assert set(gold) <= set(env.task.gold_doc_ids)
    await env.aclose()
