"""The ``ray`` extra is optional: without it ``--ray`` is a usage error naming the extra, and
nothing else imports ray. The ``ray:`` section of a training config validates its knobs."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from agentenv.train.config import ConfigError, load_config

WITHOUT_RAY = textwrap.dedent(
    """
    import sys

    class NoRay:
        def find_spec(self, name, path=None, target=None):
            if name == "ray" or name.startswith("ray."):
                raise ImportError(f"No module named {name!r}")
            return None

    sys.meta_path.insert(0, NoRay())
    from agentenv.cli import main
    main(sys.argv[1:])
    """
)


@pytest.mark.parametrize(
    "args",
    [
        ["eval", "--env", "search-v0", "--policy", "expert", "-n", "1", "--ray"],
        ["train", "configs/quickstart.yaml", "--ray", "127.0.0.1:6379"],
    ],
)
def test_ray_without_the_extra_is_a_usage_error_naming_it(args):
    done = subprocess.run(
        [sys.executable, "-c", WITHOUT_RAY, *args], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 2, done.stderr
    assert "pip install 'rl-agentenv[ray]'" in done.stderr
    assert "Traceback" not in done.stderr


def test_the_command_line_and_the_trainer_do_not_import_ray():
    probe = "import sys, agentenv.cli, agentenv.train.loop; print('ray' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"


def test_the_ray_section_has_documented_defaults_and_checks_its_knobs():
    cfg = load_config(None)
    assert cfg.ray.address is None and cfg.ray.workers == 0 and cfg.ray.max_retries == 1
    cfg = load_config(None, ["ray.address=127.0.0.1:6379", "ray.cpus_per_worker=0.5"])
    assert cfg.ray.address == "127.0.0.1:6379" and cfg.ray.cpus_per_worker == 0.5
    for bad in ("ray.workers=-1", "ray.services=sideways", "ray.adress=local"):
        with pytest.raises(ConfigError, match="ray"):
            load_config(None, [bad])
