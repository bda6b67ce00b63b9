"""swe-v0 end to end: real h11 bugs, real bwrap sandboxes, the real service in-process and on
127.0.0.1; the expert, the random baseline, G-RA levels, tampering, both protocols."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import numpy as np
import pytest

import agentenv
from agentenv.envs.swe import expert
from agentenv.envs.swe.env import LEVELS, SUBMIT_MARKER, SWEEnv, command_kind, progress_from_tests
from agentenv.evaluate import Suite, SuiteEntry, evaluate
from agentenv.play import play_episode, replay
from agentenv.policies.scripted import RandomPolicy, ScriptedPolicy
from agentenv.sandbox import default_root
from agentenv.service import EnvServiceError

pytestmark = pytest.mark.slow


def call(name: str, **arguments: object) -> str:
    return expert.call_text([{"name": name, "arguments": arguments}])


async def play(env: SWEEnv, actions: list[str], **reset: Any) -> tuple[float, dict]:
    episode = await play_episode(env, replay(actions), **reset)
    return episode.final_reward, episode.info


@pytest.fixture(scope="module")
def task_ids() -> list[str]:
    env = SWEEnv()
    ids = env.task_ids("all")
    env.close()
    return ids


def test_splits_are_deterministic_and_disjoint(task_ids: list[str]) -> None:
    env = SWEEnv()
    splits = env.splits()
    assert splits["all"] == len(task_ids) >= 10
    train, test = set(env.task_ids("train")), set(env.task_ids("test"))
    assert train and test and not train & test and train | test == set(task_ids)
    env.close()


@pytest.mark.parametrize("protocol", ["native", "text"])
async def test_expert_resolves_every_instance(protocol: str, task_ids: list[str]) -> None:
    suite = Suite("swe", [SuiteEntry("swe-v0", {"protocol": protocol}, split="all")])
    report = await evaluate(ScriptedPolicy(), suite, progress=False)
    rows = report.rows
    assert len({r["task_id"] for r in rows}) == len(task_ids)
    failed = [(r["task_id"], r["status"], r["reason"]) for r in rows if not r["success"]]
    assert not failed


async def test_levels_tampering_and_components(task_ids: list[str]) -> None:
    env = SWEEnv()
    task = env.get_task(task_ids[0])
    reward, info = await play(env, ["no tool call"] * 30, options={"task": task.instance_id})
    assert reward == 0 and info["reward_components"]["level"] == LEVELS["none"]

    reward, info = await play(env, [call("submit")], options={"task": task.instance_id})
    assert reward == 0 and info["reward_components"]["level"] == LEVELS["empty"]

    wrong = call("bash", command=f"echo '# touched' >> {task.mutated_files[0]}")
    reward, info = await play(env, [wrong, call("submit")], options={"task": task.instance_id})
    parts = info["reward_components"]
    assert reward == 0 and parts["level"] == LEVELS["fails"] and parts["applied"] == 1

    fix = expert.edit_calls(task)
    test_file = task.FAIL_TO_PASS[0].split("::")[0]
    tamper = call("bash", command=f"echo '# x' >> {test_file}")
    actions = [expert.call_text(fix), tamper, call("submit")]
    reward, info = await play(env, actions, options={"task": task.instance_id})
    parts = info["reward_components"]
    assert reward == 0 and parts["tampered"] == 1 and parts["level"] == LEVELS["none"]
    assert env.report is not None and test_file in env.report["tampered"]

    tests = " ".join(task.FAIL_TO_PASS[:3])
    await env.areset(options={"task": task.instance_id})
    _, _, _, _, info = await env.astep(call("bash", command=f"python -m pytest -rA {tests}"))
    assert info["reward_components"]["ran_tests"] == 1
    assert info["reward_components"]["tests_progress"] == 0.0
    _, _, _, _, info = await env.astep(expert.call_text(fix))
    assert info["anchor"][1] == "edit" and info["anchor"][0] != ""
    _, _, _, _, info = await env.astep(call("bash", command=f"python -m pytest -rA {tests}"))
    assert info["reward_components"]["tests_progress"] == min(3, len(task.FAIL_TO_PASS)) / len(
        task.FAIL_TO_PASS
    )
    _, reward, terminated, _, info = await env.astep(call("submit"))
    assert terminated and reward == 1 and info["success"]
    assert info["reward_components"]["level"] == LEVELS["passes"]
    await env.aclose()


async def test_text_protocol_format_errors_and_submission(task_ids: list[str]) -> None:
    env = SWEEnv(protocol="text")
    task = env.get_task(task_ids[1])
    _, info = await env.areset(options={"task": task.instance_id})
    assert SUBMIT_MARKER in info["system_prompt"] and env.tools is None
    obs, _, _, _, info = await env.astep("no block here")
    assert not info["action_valid"] and "EXACTLY ONE" in obs
    obs, _, _, _, info = await env.astep("```bash\nls\n```\n```bash\npwd\n```")
    assert not info["action_valid"] and "found 2" in obs
    obs, _, _, _, info = await env.astep("```bash\nexit 3\n```")
    assert info["action_valid"] and "<returncode>3</returncode>" in obs
    obs, reward, terminated, _, info = await env.astep(
        f"```bash\necho {SUBMIT_MARKER} && git diff\n```"
    )
    assert terminated and reward == 0 and info["reward_components"]["level"] == LEVELS["empty"]
    await env.aclose()


async def test_sessions_are_isolated_and_a_copy_keeps_its_workspace(task_ids: list[str]) -> None:
    one, two = SWEEnv(), SWEEnv()
    await one.areset(options={"task": task_ids[0]})
    await two.areset(options={"task": task_ids[0]})
    await one.astep(call("bash", command="echo secret > mine.txt"))
    obs, *_ = await two.astep(call("bash", command="cat mine.txt; ls /"))
    assert "secret" not in obs and "No such file" in obs
    await one.aclose()
    await two.aclose()


async def test_random_baseline_never_raises_and_rarely_solves(task_ids: list[str]) -> None:
    suite = Suite("swe", [SuiteEntry("swe-v0", {"max_turns": 8}, split="all")])
    report = await evaluate(RandomPolicy(seed=1), suite, k=2, progress=False)
    errors = [r["reason"] for r in report.rows if r["status"] == "error"]
    assert not errors and len(report.rows) == 24
    assert sum(r["success"] for r in report.rows) <= 1


async def test_64_concurrent_episodes_over_http_leave_nothing_behind(
    task_ids: list[str],
) -> None:
    before = set(default_root().glob("sb-*")) if default_root().exists() else set()
    envs = [SWEEnv(service="local") for _ in range(64)]

    async def episode(i: int, env: SWEEnv) -> float:
        obs, info = await env.areset(options={"task": task_ids[i % len(task_ids)]})
        messages = [{"role": "system", "content": info["system_prompt"]}]
        messages.append({"role": "user", "content": obs})
        for _ in range(10):
            action = expert.solve(env.task, messages)
            messages.append({"role": "assistant", "content": action})
            obs, reward, terminated, truncated, _ = await env.astep(action)
            messages.append({"role": "user", "content": obs})
            if terminated or truncated:
                return reward
        raise AssertionError("the expert did not submit within 10 turns")

    rewards = await asyncio.gather(*(episode(i, e) for i, e in enumerate(envs)))
    assert sum(rewards) == 64
    fresh = [e.report for e in envs if e.report is not None and not e.report["cached"]]
    assert len(fresh) == len(set(task_ids[:64]))  # one grade per (instance, diff)
    assert envs[0]._client is not None
    url = envs[0]._client.url
    for env in envs:
        await env.aclose()
    async with httpx.AsyncClient(base_url=url) as http:
        sessions = (await http.get("/health")).json()["sessions"]
    assert sessions["open"] == 0 and sessions["closed"] == sessions["created"] >= 64
    for _ in range(600):  # the workspaces' folders go as their sessions close (slower when loaded)
        left = set(default_root().glob("sb-*")) - before
        if not left:
            break
        await asyncio.sleep(0.1)
    assert not left


def test_command_kinds_and_progress(task_ids: list[str]) -> None:
    assert command_kind("bash", {"command": "python -m pytest -q"}) == "test"
    assert command_kind("bash", {"command": "grep -rn x ."}) == "view"
    assert command_kind("bash", {"command": "sed -i 's/a/b/' f.py"}) == "edit"
    assert command_kind("bash", {"command": "python x.py"}) == "run"
    assert command_kind("str_replace_editor", {"command": "view"}) == "view"
    assert command_kind("str_replace_editor", {"command": "insert"}) == "edit"
    task = SWEEnv().get_task(task_ids[0])
    f2p, p2p = task.FAIL_TO_PASS[0], task.PASS_TO_PASS[0]
    assert progress_from_tests(task, "nothing") is None
    assert progress_from_tests(task, f"PASSED {f2p}\nPASSED {p2p}\n") == 1 / len(task.FAIL_TO_PASS)
    assert progress_from_tests(task, f"PASSED {f2p}\nFAILED {p2p} - boom\n") == 0.0
    assert progress_from_tests(task, f"{f2p} PASSED [ 50%]\n") == 1 / len(task.FAIL_TO_PASS)


def test_expert_hunks_rebuild_the_fix(task_ids: list[str]) -> None:
    env = SWEEnv()
    for task_id in task_ids:
        task = env.get_task(task_id)
        for hunk in expert.hunks(task.patch):
            assert hunk.path in task.mutated_files and hunk.old != hunk.new
    rng = np.random.default_rng(0)
    actions = {expert.random_action(task, [], rng) for _ in range(50)}
    assert len(actions) > 10
    assert all(isinstance(json.dumps(a), str) for a in actions)


def test_registered() -> None:
    info = agentenv.env_info("swe-v0")
    assert info.expert == "agentenv.envs.swe.expert"


async def test_expert_resolves_bugs_of_another_package() -> None:
    kwargs = {"packages": ["xmltodict"], "per_package": 4}
    suite = Suite("swe", [SuiteEntry("swe-v0", kwargs, split="all")])
    report = await evaluate(ScriptedPolicy(), suite, progress=False)
    assert len(report.rows) == 4 and all(r["task_id"].startswith("xmltodict-") for r in report.rows)
    assert all(r["success"] for r in report.rows), [r["reason"] for r in report.rows]


async def test_an_instance_the_service_cannot_run_fails_saying_why(tmp_path) -> None:
    row = {
        "instance_id": "octo__calc-1",
        "repo": "octo/calc",
        "base_commit": "abc123",
        "patch": "--- a/calc.py\n+++ b/calc.py\n@@ -1 +1 @@\n-x = 1\n+x = 2\n",
        "test_patch": "",
        "problem_statement": "x is wrong",
        "FAIL_TO_PASS": '["tests/test_calc.py::test_x"]',
        "PASS_TO_PASS": "[]",
        "version": "1.0",
        "test_cmd": "pytest -rA tests",
    }
    path = tmp_path / "rows.jsonl"
    path.write_text(json.dumps(row) + "\n")
    env = SWEEnv(instances=str(path), split="all")
    with pytest.raises(EnvServiceError, match="cannot run on this service.*docker and podman"):
        await env.areset(options={"task": "octo__calc-1"})
    await env.aclose()
