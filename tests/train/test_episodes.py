"""Which episodes training plays, seeded by agentenv.planner alone: training, held-out and SFT
episodes keep their (reset seed, task, sample seed), and the held-out ones are those
``agentenv eval`` plays."""

from __future__ import annotations

from agentenv.evaluate import Suite, plan_requests
from agentenv.planner import TaskSource
from agentenv.train.config import load_config
from agentenv.train.episodes import DataCursor, eval_requests, eval_suite
from agentenv.train.sft import demonstration_requests

CONFIG = {
    "seed": 5,
    "envs": [
        {"id": "search-v0", "weight": 2.0, "train_seed_start": 10},
        {"id": "tooluse-v0", "test_seed_start": 500},
    ],
    "rollout": {"group_size": 3, "tasks_per_step": 3},
    "eval": {"tasks": 2, "samples": 2},
    "sft": {"episodes": 3, "seed_start": 70},
}
TRAIN = [TaskSource("search-v0", {}, "train"), TaskSource("tooluse-v0", {}, "train", 2, ("a", "b"))]
HELD_OUT = [
    TaskSource("search-v0", {}, "test"),
    TaskSource("tooluse-v0", {}, "test", 2, ("x", "y")),
]


def episodes(requests) -> list[tuple]:
    return [(r.env_id, r.seed, r.task, r.sample_seed) for r in requests]


def test_training_episodes_keep_their_seeds_and_resume_where_they_were():
    config = load_config(CONFIG)
    cursor = DataCursor([0, 0])
    first = episodes(cursor.take(config, TRAIN, 3))
    # (1 000 003 · 5 + 7 919 · env + task) · 3 + member; a finite split in a seeded order
    assert first == [
        ("search-v0", 10, None, 15000045), ("search-v0", 10, None, 15000046),
        ("search-v0", 10, None, 15000047), ("search-v0", 11, None, 15000048),
        ("search-v0", 11, None, 15000049), ("search-v0", 11, None, 15000050),
        ("tooluse-v0", 0, "b", 15023802), ("tooluse-v0", 0, "b", 15023803),
        ("tooluse-v0", 0, "b", 15023804),
    ]  # fmt: skip
    second = episodes(cursor.take(config, TRAIN, 3))
    resumed = episodes(DataCursor([2, 1]).take(config, TRAIN, 3))
    assert resumed == second and second[0] == ("search-v0", 12, None, 15000051)


def test_held_out_episodes_are_agentenv_eval_s_and_keep_their_seeds():
    config = load_config(CONFIG)
    held_out = episodes(eval_requests(config, HELD_OUT))
    # reset seed test_seed_start + i, sample seed 131 · seed + sample
    assert held_out == [
        ("search-v0", 1_000_000, None, 131_000_000), ("search-v0", 1_000_000, None, 131_000_001),
        ("search-v0", 1_000_001, None, 131_000_131), ("search-v0", 1_000_001, None, 131_000_132),
        ("tooluse-v0", 500, "x", 65_500), ("tooluse-v0", 500, "x", 65_501),
        ("tooluse-v0", 501, "y", 65_631), ("tooluse-v0", 501, "y", 65_632),
    ]  # fmt: skip
    for env, entry, source in zip(config.envs, eval_suite(config).entries, HELD_OUT, strict=True):
        plan = plan_requests(
            Suite("one", [entry]), [source], config.eval.samples, env.test_seed_start
        )
        assert episodes(r for r, _ in plan) == [e for e in held_out if e[0] == env.id]


def test_demonstration_episodes_keep_their_seeds():
    requests = demonstration_requests(load_config(CONFIG), TRAIN)
    assert episodes(requests) == [
        ("search-v0", 70, None, None), ("search-v0", 71, None, None), ("tooluse-v0", 70, "a", None)
    ]  # fmt: skip
    assert [r.traj_id for r in requests][-1] == "tooluse-v0/70/demo"
