"""The folder mapping (envs/, policies/, rewards/ → agentenv.*) survives a regular, non-editable install."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
UNTRACKED = (".git", ".venv", "build", "runs", "*.egg-info", "__pycache__", ".*_cache")


def test_wheel_installs_and_imports_outside_the_source_tree(tmp_path):
    wheels, target, source = tmp_path / "wheels", tmp_path / "site", tmp_path / "source"
    # a copy without build/: setuptools would otherwise ship files left there by earlier builds
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(*UNTRACKED))
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(source), "--no-deps", "--no-build-isolation",
         "-q", "-w", str(wheels)],
        check=True, capture_output=True,
    )  # fmt: skip
    (wheel,) = wheels.glob("rl_agentenv-*.whl")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
        check=True, capture_output=True,
    )  # fmt: skip
    probe = (
        "import agentenv, agentenv.envs.search.env, agentenv.policies.base, "
        "agentenv.rewards.advantages, agentenv.train.config\n"
        "from agentenv.evaluate import load_suite\n"
        "assert load_suite('core').entries\n"
        "import agentenv.envs\n"
        "bfcl = agentenv.make('bfcl-v0'); assert bfcl.reset(seed=0)[0]; bfcl.close()\n"
        "from agentenv.envs.tooluse.mcp.env import EXAMPLES\n"
        "assert (EXAMPLES / 'time_tasks.jsonl').is_file()\n"
        "from agentenv.view.page import render_page\n"
        "assert 'agentenv-data' in render_page('run', {'mode': 'served'})\n"
        "from importlib.metadata import version\n"
        "assert agentenv.DISTRIBUTION == 'rl-agentenv' and agentenv.__version__ == version('rl-agentenv')\n"
        "print(agentenv.__file__)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], cwd=tmp_path, env={"PYTHONPATH": str(target)},
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert out.stdout.strip().startswith(str(target))
