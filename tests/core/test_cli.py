"""The `agentenv` command as a user runs it: real subprocesses, real servers on 127.0.0.1."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

AGENTENV = [sys.executable, "-m", "agentenv"]
HERE = Path(__file__).parent
"""Holds broken_envs.py: ``broken_envs:Class`` ids resolve from this folder."""


def run(
    *args: str, input: str | None = None, timeout: float = 180, cwd: Path | None = None
) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1"}
    return subprocess.run(
        [*AGENTENV, *args],
        input=input,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=cwd,
    )


def test_list_and_info():
    out = run("list")
    assert out.returncode == 0, out.stderr
    assert "search-v0" in out.stdout and "search" in out.stdout
    out = run("info", "search-v0")
    assert out.returncode == 0, out.stderr
    assert "max_turns" in out.stdout and "</search>" in out.stdout and "<answer>" in out.stdout


def test_unknown_env_names_close_matches():
    out = run("info", "serch-v0")
    assert out.returncode != 0
    assert "Did you mean: search-v0" in out.stderr


def test_play_by_hand_through_stdin():
    out = run("play", "search-v0", "--seed", "1", input="hello\n\n<answer> nobody </answer>\n\n")
    assert out.returncode == 0, out.stderr
    assert "My previous action is invalid" in out.stdout
    assert "invalid action" in out.stdout
    assert "episode over" in out.stdout


def test_play_shows_tools_and_takes_typed_calls():
    calls = '<tool_call>{"name": "add", "arguments": {"a": 2, "b": 3}}</tool_call>\n\n'
    typed = calls + '<tool_call>{"name": "add", "arguments": {"a": "2"}}</tool_call>\n\nIt is 5\n\n'
    out = run(
        "--import", "tool_env", "play", "calc-tools-test-v0", "--seed", "2", input=typed, cwd=HERE
    )
    assert out.returncode == 0, out.stderr
    assert (
        "tools" in out.stdout and "a*: integer" in out.stdout and "Add two integers" in out.stdout
    )
    assert "<tool_response>\n5\n</tool_response>" in out.stdout
    assert "a must be integer" in out.stdout and "invalid action" in out.stdout
    assert "episode over: success" in out.stdout


def test_eval_expert_and_random(tmp_path):
    out = run("eval", "--env", "search-v0", "--policy", "expert", "-n", "6", "-k", "2",
              "--out", str(tmp_path / "e"))  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "100.0%" in out.stdout
    assert "unsuccessful episodes" not in out.stdout  # every episode succeeded: no such table
    rows = (tmp_path / "e" / "results.jsonl").read_text().splitlines()
    assert len(rows) == 12 and json.loads(rows[0])["status"] == "done"
    out = run("eval", "--env", "search-v0", "--policy", "random", "-n", "6")
    assert out.returncode == 0, out.stderr
    assert "search-v0" in out.stdout


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_serve_search_speaks_search_r1_protocol():
    port = _free_port()
    proc = subprocess.Popen(
        [*AGENTENV, "serve", "search", "--port", str(port), "--log-level", "warning"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.time() + 120
        while time.time() < deadline:
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)
        else:
            pytest.fail(f"agentenv serve search did not come up: {proc.stderr.read()}")
        body = httpx.post(
            f"{url}/retrieve", json={"queries": ["born", "works"], "topk": 2, "return_scores": True}
        ).json()
        assert len(body["result"]) == 2 and len(body["result"][0]) == 2
        hit = body["result"][0][0]
        assert set(hit) == {"document", "score"} and set(hit["document"]) >= {"id", "contents"}
    finally:
        proc.terminate()
        proc.wait(10)


def test_bad_assignment_flag_is_explained():
    out = run("eval", "--env", "search-v0", "--policy", "expert", "--env-arg", "oops")
    assert out.returncode == 2
    assert out.stderr == "error: --env-arg expects KEY=VALUE, got 'oops'\n"


def test_import_registers_the_envs_of_a_module():
    out = run("--import", "broken_envs", "list", cwd=HERE)
    assert out.returncode == 0, out.stderr
    assert "guess-v0" in out.stdout
    assert "guess-v0" not in run("list", cwd=HERE).stdout


def _user_error_cases(tmp_path: Path, dead_url: str) -> list[tuple[tuple[str, ...], str]]:
    (tmp_path / "broken.yaml").write_text("envs: [\n")
    (tmp_path / "typo.yaml").write_text("optim: {lrr: 0.1}\n")
    return [
        (("info", "serch-v0"), "unknown env id 'serch-v0'. Did you mean: search-v0"),
        (("--import", "no_such_module_xyz", "list"), "no module named 'no_such_module_xyz'"),
        (("info", "broken_envs:Nope"), "no attribute 'Nope' (TextEnv subclasses in it: GoodEnv,"),
        (("info", "broken_envs:PROMPT"), "is not a TextEnv subclass (it is a str object)"),
        (("play", "search-v0", "--env-arg", "nope=1"), "takes no argument 'nope'; its arguments"),
        (("play", "search-v0", "--env-arg", "topk=[1,"), "the value is not valid YAML"),
        (
            ("check", "broken_envs:StrictKnobs", "--env-arg", "size=-3"),
            "invalid _Knobs:\n  size: Input should be greater than 0",
        ),
        (("play", "broken_envs:ForgetsTaskId"), "ForgetsTaskId.reset returned no task_id"),
        (("play", "search-v0", "--env-arg", f"service={dead_url}"), dead_url),
        (("eval", "--suite", str(tmp_path / "broken.yaml"), "--policy", "random"), "invalid YAML"),
        (("eval", "--suite", "no-such-suite", "--policy", "random"), "no suite file"),
        (("train", str(tmp_path / "typo.yaml")), "optim.lrr: unknown key"),
    ]


def test_user_errors_print_one_message_and_exit_2(tmp_path):
    dead_url = f"http://127.0.0.1:{_free_port()}"
    for args, message in _user_error_cases(tmp_path, dead_url):
        out = run(*args, input="", cwd=HERE)
        assert out.returncode == 2, (args, out.stderr)
        assert out.stderr.startswith("error: ") and message in out.stderr, (args, out.stderr)
        assert "Traceback" not in out.stderr, args


def test_unexpected_errors_hint_at_debug_which_shows_the_traceback():
    out = run("info", "broken_envs:CrashesOnBuild", cwd=HERE)
    assert out.returncode == 1
    assert out.stderr == (
        "error: RuntimeError: boom while building\n"
        "(unexpected: run with --debug for the traceback)\n"
    )
    out = run("--debug", "info", "broken_envs:CrashesOnBuild", cwd=HERE)
    assert out.returncode == 1
    assert "Traceback" in out.stderr and "RuntimeError: boom while building" in out.stderr
    out = run("--debug", "info", "serch-v0")
    assert "Traceback" in out.stderr and "UnknownEnvError" in out.stderr
