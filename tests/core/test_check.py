"""`agentenv check`: every built-in env passes, each broken env fails the check of the rule it
breaks (and names why), and the docs' "Registering your own env" runs as written."""

from __future__ import annotations

import importlib
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from agentenv.check import CHECKS, bad_actions, check_env
from agentenv.env import MAX_TEXT_LENGTH
from agentenv.envs import BUILTIN_ENVS

HERE = Path(__file__).parent
DOCS = HERE.parents[1] / "docs"
ROWS = [name for name, _ in CHECKS]
AGENTENV = Path(sys.executable).with_name("agentenv")


@pytest.fixture
def broken(monkeypatch):
    monkeypatch.syspath_prepend(str(HERE))
    return importlib.import_module("broken_envs")


def run(*args: str, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "NO_COLOR": "1"}
    return subprocess.run(
        [str(AGENTENV), *args], cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env
    )


@pytest.mark.parametrize("env_id", BUILTIN_ENVS)
def test_every_builtin_env_passes(env_id):
    report = check_env(env_id)
    assert [r.name for r in report.results] == [*ROWS, "close"]
    assert report.passed, report.failures
    bad = report.result("bad actions").detail
    assert bad.startswith("300 actions, none raised")
    assert int(re.search(r"(\d+) marked invalid", bad)[1]) > 0


def test_a_good_env_object_passes_and_the_report_is_seeded(broken):
    first = check_env(broken.GoodEnv(), seed=3)
    assert first.passed, first.failures
    assert [r.name for r in first.results] == ROWS  # an object is not closed
    assert first.results == check_env(broken.GoodEnv(), seed=3).results
    assert "'test' 4 tasks" in first.result("splits").detail


@pytest.mark.parametrize(
    ("env_class", "failed", "reason"),
    [
        ("UnhashableAnchor", {"info keys"}, "step 0 (seed 0): anchor [0] is not hashable"),
        ("NeverEnds", {"random episode", "episode end"}, "did not end within 200 steps"),
        ("StepsAfterTheEnd", {"episode end"}, "instead of raising EpisodeOverError"),
        ("Unpicklable", {"pickle/deepcopy"}, "pickle after reset failed: TypeError"),
        ("MiscountedSplit", {"splits"}, "split 'test' declares 5 tasks, task_ids lists 4"),
        (
            "UndeclaredComponent",
            {"info keys"},
            "reward_components key 'right' is not in the env's reward_components",
        ),
    ],
)
def test_a_broken_rule_fails_its_own_check(broken, env_class, failed, reason):
    report = check_env(getattr(broken, env_class)())
    assert {r.name for r in report.failures} == failed
    assert all(reason in r.detail for r in report.failures)


def test_raising_on_bad_actions_is_caught_and_counted(broken):
    report = check_env(broken.RaisesOnBadAction(), bad_actions=50)
    detail = report.result("bad actions").detail
    assert not report.result("bad actions").passed
    assert detail.startswith("50 of 50 actions raised: step('') raised ValueError")
    assert report.result("splits").passed  # resets alone still work


def test_a_missing_task_id_is_named(broken):
    report = check_env(broken.ForgetsTaskId())
    assert not report.passed
    assert "EnvContractError" in report.result("info keys").detail
    assert "returned no task_id" in report.result("info keys").detail


def test_bad_actions_cover_the_malformed_kinds():
    prompt = "Search with <search> q </search>, answer with <answer> a </answer>."
    tools = [{"type": "function", "function": {"name": "lookup"}}]
    actions = bad_actions(prompt, tools, 300, np.random.default_rng(0))
    assert actions == bad_actions(prompt, tools, 300, np.random.default_rng(0))
    assert actions != bad_actions(prompt, tools, 300, np.random.default_rng(1))
    assert len(actions) == 300 and "" in actions
    assert any(len(a) == MAX_TEXT_LENGTH for a in actions)
    assert any(re.search("[\ud800-\udfff]", a) for a in actions)  # lone surrogates
    for tag in ("search", "answer"):
        assert f"<{tag}>" in actions  # unclosed
        assert any(
            a.startswith(f"<{tag}>") and a.endswith(f"</{tag}>") and len(a) > 40 for a in actions
        )
    assert any('"lookup"' in a for a in actions)
    assert len(bad_actions(prompt, None, 5, np.random.default_rng(0))) == 5


def test_cli_check_prints_the_table_and_exits_by_the_result():
    out = run("check", "search-v0", cwd=HERE)
    assert out.returncode == 0, out.stderr
    assert all(name in out.stdout for name in ROWS)
    assert "all 8 checks passed" in out.stdout
    out = run("check", "broken_envs:RaisesOnBadAction", "--bad-actions", "20", cwd=HERE)
    assert out.returncode == 1, out.stderr
    row = next(line for line in out.stdout.splitlines() if "bad actions" in line)
    assert "FAIL" in row and "20 of 20 actions raised" in row
    assert "checks failed" in out.stdout and "Traceback" not in out.stderr


def _section(markdown: str, title: str) -> str:
    start = markdown.index(f"## {title}\n")
    end = markdown.find("\n## ", start + 1)
    return markdown[start : end if end >= 0 else None]


def _blocks(section: str, language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", section, re.DOTALL)


def test_the_docs_register_check_eval_train_example_runs_as_written(tmp_path):
    section = _section((DOCS / "environments.md").read_text(), "Registering your own env")
    examples = DOCS / "examples"
    (code,) = _blocks(section, "python")
    (config,) = _blocks(section, "yaml")
    assert code == (examples / "countdown.py").read_text()
    assert config == (examples / "countdown.yaml").read_text()
    for name in ("countdown.py", "countdown.yaml"):
        shutil.copy(examples / name, tmp_path / name)
    commands = [
        shlex.split(line.removeprefix("$ "))
        for block in _blocks(section, "console")
        for line in block.splitlines()
        if line.startswith("$ agentenv ")
    ]
    verbs = [next(a for a in command if a in {"check", "eval", "train"}) for command in commands]
    assert verbs == ["check", "eval", "train", "check"]
    expected = {"check": "all 8 checks passed", "eval": "countdown-v0", "train": "run folder:"}
    for command, verb in zip(commands, verbs, strict=True):
        out = run(*command[1:], cwd=tmp_path)
        assert out.returncode == 0, f"{shlex.join(command)}\n{out.stdout}\n{out.stderr}"
        assert expected[verb] in out.stdout, out.stdout
    assert list((tmp_path / "runs").glob("countdown-*/metrics.jsonl"))
