"""Fixtures of the viewer tests: real runs of the tiny model, made once per session — an
evaluation on search-v0 and tooluse-v0, an evaluation of the scripted expert (tool calls that
parse, episodes that succeed), and a two-step training run with IGPO credit."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from agentenv.evaluate import Suite, SuiteEntry, evaluate
from agentenv.policies.specs import load_policy
from agentenv.rollout import RolloutConfig
from agentenv.train.loop import train

SEARCH = {"num_entities": 30, "max_hops": 1, "max_turns": 2}
WORLD = {"num_customers": 40, "num_products": 12, "test_size": 8, "compositional_size": 4,
         "max_calls": 3, "max_turns": 3}  # fmt: skip


def run_eval(policy_spec: str, out: Path, *, max_tokens_per_turn: int = 24) -> Path:
    suite = Suite(
        "view",
        [SuiteEntry("search-v0", SEARCH, "test", 3), SuiteEntry("tooluse-v0", WORLD, "test", 2)],
    )
    rollout = RolloutConfig(max_tokens_per_turn=max_tokens_per_turn, max_context_tokens=4096)

    async def play() -> None:
        policy = load_policy(policy_spec)
        try:
            await evaluate(policy, suite, k=2, out_dir=out, rollout=rollout, progress=False)
        finally:
            await policy.aclose()

    asyncio.run(play())
    return out


def training_config(output_dir: Path) -> dict:
    return {
        "name": "view",
        "output_dir": str(output_dir),
        "total_steps": 2,
        "model": {"spec": "tiny", "max_batch_size": 8},
        "envs": [{"id": "search-v0", "kwargs": SEARCH}],
        "rollout": {
            "group_size": 3,
            "tasks_per_step": 2,
            "max_tokens_per_turn": 10,
            "max_context_tokens": 512,
        },
        "algorithm": {"estimator": "igpo", "info_gain": {"enabled": True}},
        "optim": {"lr": 1e-3, "micro_batch_tokens": 2048},
        "eval": {"tasks": 2},
        "checkpoint": {"every": 0},
        "logging": {"live": False},
    }


@pytest.fixture(scope="session")
def eval_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``agentenv eval`` of the tiny model: 5 tasks × 2 samples."""
    return run_eval("tiny", tmp_path_factory.mktemp("eval-tiny"))


@pytest.fixture(scope="session")
def expert_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``agentenv eval`` of the scripted expert on the same tasks."""
    return run_eval("expert", tmp_path_factory.mktemp("eval-expert"), max_tokens_per_turn=256)


@pytest.fixture(scope="session")
def train_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``agentenv train``: 2 steps of the tiny model (2 tasks × 3 samples), IGPO credit."""
    return train(training_config(tmp_path_factory.mktemp("train")))
