"""Training fails loudly: bad env settings before any warm-up stage, all-errored steps at once."""

from __future__ import annotations

import pytest

import agentenv
from agentenv.env import TextEnv
from agentenv.planner import PlanError
from agentenv.rollout import EpisodesFailedError
from agentenv.train.config import ConfigError
from agentenv.train.loop import train


class BrokenStepEnv(TextEnv):
    """Resets fine (so the up-front probe passes), fails every step like a crashed backend."""

    async def _areset(self, *, seed, options):
        self.task = f"t{seed}"
        return "go", {"task_id": self.task, "system_prompt": "say anything"}

    async def _astep(self, action):
        raise ConnectionError("backend at http://127.0.0.1:9 went away")


agentenv.register("broken-step-test-v0", f"{__name__}:BrokenStepEnv")


def config(tmp_path, env, **extra):
    return {
        "name": "fail",
        "output_dir": str(tmp_path / "runs"),
        "total_steps": 3,
        "model": {"spec": "tiny", "max_batch_size": 8},
        "envs": [env],
        "rollout": {"group_size": 2, "tasks_per_step": 2, "max_tokens_per_turn": 8},
        "eval": {"tasks": 0},
        "logging": {"live": False},
        **extra,
    }


def test_bad_env_kwarg_fails_before_the_warm_up_stages(tmp_path):
    warm_up = {"enabled": True, "steps": 500, "texts": 40}
    env = {"id": "search-v0", "kwargs": {"max_hop": 2}}
    with pytest.raises(PlanError, match="search-v0.*max_hop"):
        train(config(tmp_path, env, pretrain=warm_up, sft={"enabled": True}))
    (run_dir,) = (tmp_path / "runs").iterdir()
    assert not (run_dir / "pretrain").exists() and not (run_dir / "sft").exists()


def test_a_reward_component_no_env_reports_fails_before_training(tmp_path):
    algorithm = {"process_rewards": {"formatt": 0.1}, "gating": {"enabled": True,
                 "step_components": ["retrieval_hit", "hit"]}}  # fmt: skip
    with pytest.raises(ConfigError) as caught:
        train(config(tmp_path, {"id": "search-v0"}, algorithm=algorithm))
    message = str(caught.value)
    assert (
        "algorithm.process_rewards.formatt: no env reports a reward component 'formatt'" in message
    )
    assert "algorithm.gating.step_components[1]" in message and "[0]" not in message
    assert "declared: em, f1, format, format_score, retrieval_hit" in message


def test_unknown_split_fails_before_training(tmp_path):
    with pytest.raises(PlanError, match="no split 'dev'.*'train', 'test'"):
        train(config(tmp_path, {"id": "search-v0", "train_split": "dev"}))


def test_a_step_whose_episodes_all_errored_stops_the_run(tmp_path):
    with pytest.raises(EpisodesFailedError, match=r"all 4 episodes of training step 1.*\n.*4 × "):
        train(config(tmp_path, {"id": "broken-step-test-v0"}))
    (run_dir,) = (tmp_path / "runs").iterdir()
    assert not list(run_dir.glob("checkpoint*"))
