"""`agentenv eval` fails loudly: bad suites before anything runs, episode errors grouped by reason
and a non-zero exit above --max-error-rate. Real subprocesses, a real dead port."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def agentenv(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1", "PYTHONPATH": str(HERE)}
    return subprocess.run(
        [sys.executable, "-m", "agentenv", *args],
        capture_output=True, text=True, timeout=300, env=env,
    )  # fmt: skip


def dead_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def assert_clean_error(out: subprocess.CompletedProcess, *fragments: str) -> None:
    assert out.returncode == 2, (out.stdout, out.stderr)
    assert "Traceback" not in out.stderr
    for fragment in fragments:
        assert fragment in out.stderr, out.stderr


def test_unknown_env_bad_kwarg_and_unknown_split_exit_2_before_running(tmp_path):
    out = agentenv("eval", "--env", "serch-v0", "--policy", "random", "--out", str(tmp_path))
    assert_clean_error(out, "Did you mean: search-v0")
    assert not (tmp_path / "results.jsonl").exists()
    out = agentenv("eval", "--env", "search-v0", "--env-arg", "max_hop=2", "--policy", "random")
    assert_clean_error(out, "search-v0", "max_hop")
    out = agentenv("eval", "--env", "search-v0", "--split", "dev", "--policy", "random")
    assert_clean_error(out, "no split 'dev'", "'train', 'test'")


def test_dead_service_at_start_names_the_url():
    url = f"http://127.0.0.1:{dead_port()}"
    out = agentenv(
        "eval", "--env", "search-v0", "--env-arg", f"service={url}", "--policy", "random"
    )
    assert_clean_error(out, url)


def test_episode_errors_are_grouped_and_fail_the_exit_status(tmp_path):
    args = ["--import", "flaky_env", "eval", "--env", "flaky-v0", "--policy", "random", "-n", "6"]
    out = agentenv(*args, "--out", str(tmp_path))
    assert out.returncode != 0
    assert "unsuccessful episodes by reason" in out.stdout
    assert "3 " in out.stdout and "error: RuntimeError: flaky backend lost" in out.stdout
    assert "50.0% of the episodes errored" in out.stderr
    assert len((tmp_path / "results.jsonl").read_text().splitlines()) == 6  # nothing lost
    out = agentenv(*args, "--max-error-rate", "0.5")
    assert out.returncode == 0, out.stderr
