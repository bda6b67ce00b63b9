"""Ray fan-out on a real two-node cluster on this machine.

Ray advertises a non-loopback address unless the machine has none, so the cluster runs in a
network namespace that has only loopback (``unshare --net``, with its own pid namespace so
``ray stop`` sees only this cluster's processes): two ``ray start`` nodes on 127.0.0.1, then
``ray_cluster_checks.py``, which exercises the public API and writes what it saw as JSON. The
tests below assert on that record. As root the namespaces need no user namespace; otherwise one
mapping the user to root is made (bubblewrap then cannot mount the SWE sandbox's tmpfs for an
unmapped uid, so swe-v0 is left out).
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

pytest.importorskip("ray", reason="needs the ray extra: pip install 'rl-agentenv[ray]'")

HERE = Path(__file__).resolve().parent
PORT = 6390
ADDRESS = f"127.0.0.1:{PORT}"
AS_ROOT = os.geteuid() == 0
IP = shutil.which("ip") or shutil.which("ip", path="/usr/sbin:/sbin")
FAMILIES = ["search-v0", "tooluse-v0", "webshop-v0", "swe-v0"]

pytestmark = pytest.mark.slow


def _cluster_script(work: Path) -> str:
    """Inside the namespace: loopback up, head + second node, the checks, then stop and list
    what is left."""
    bin_dir = Path(sys.executable).parent
    ray_cmd = shlex.quote(str(bin_dir / "ray"))
    common = "--node-ip-address=127.0.0.1 --num-cpus=1 --disable-usage-stats"
    checks = [sys.executable, str(HERE / "ray_cluster_checks.py"), ADDRESS, str(work)]
    if AS_ROOT:
        checks.append("--swe")
    return "\n".join(
        [
            "set -u",
            f"{IP} link set lo up",
            f"{ray_cmd} start --head --port={PORT} {common} --include-dashboard=false "
            f"--temp-dir={shlex.quote(str(work / 'ray'))} > {work}/head.log 2>&1 || exit 3",
            f"{ray_cmd} start --address={ADDRESS} {common} > {work}/node.log 2>&1 || exit 4",
            shlex.join(checks),
            f"{ray_cmd} stop --force > {work}/stop.log 2>&1",
            f"ps -eo args | grep -E '[r]aylet|[g]cs_server|[r]ay::' > {work}/left.txt",
            "exit 0",
        ]
    )


@pytest.fixture(scope="module")
def record():
    if shutil.which("unshare") is None or IP is None:
        pytest.fail("needs unshare (util-linux) and ip (iproute2); scripts/setup.sh installs them")
    work = Path(tempfile.mkdtemp(prefix="aeray-"))  # short: Ray's socket paths live under it
    user = [] if AS_ROOT else ["--map-root-user"]
    namespaces = ["--net", "--pid", "--fork", "--kill-child", "--mount-proc"]
    cmd = ["unshare", *user, *namespaces, "bash", "-c"]
    # no token file in the home folder: a private loopback cluster needs no authentication
    env = {**os.environ, "OMP_NUM_THREADS": "1", "RAY_USAGE_STATS_ENABLED": "0"}
    env["RAY_AUTH_MODE"] = "disabled"
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    try:
        done = subprocess.run(
            [*cmd, _cluster_script(work)], cwd=HERE.parents[1], env=env, capture_output=True,
            text=True, timeout=600,
        )  # fmt: skip
        path = work / "results.json"
        if done.returncode != 0 or not path.is_file():
            logs = "".join(
                f"\n--- {p.name}\n{p.read_text()[-2000:]}" for p in sorted(work.glob("*.log"))
            )
            pytest.fail(
                f"cluster run failed ({done.returncode}):\n{done.stdout[-3000:]}\n"
                f"{done.stderr[-5000:]}{logs}"
            )
        data = json.loads(path.read_text())
        left = work / "left.txt"
        data["left"] = left.read_text() if left.is_file() else ""
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print({k: round(v.get("wall_s", 0.0), 1) for k, v in data.items() if isinstance(v, dict)})
    return data


def part(record, name):
    found = record[name]
    assert "error" not in found, found["error"]
    return found


def test_the_cluster_has_two_nodes(record):
    assert len(record["cluster"]["nodes"]) == 2
    assert record["cluster"]["raylets"] == 2


def test_eval_through_the_cli_plays_on_both_nodes_and_matches_a_run_without_ray(record):
    suite = part(record, "suite")
    assert suite["returncode"] == 0, suite["stderr"]
    assert suite["nodes"] == record["cluster"]["nodes"]
    assert suite["search_same_as_plain"]
    assert suite["plain_success"] == 1.0
    assert suite["envs"]["search-v0"]["nodes"] == record["cluster"]["nodes"]
    assert not suite["plain_has_worker"]
    assert suite["actors_after"] is True


@pytest.mark.parametrize("env", FAMILIES)
def test_every_family_plays_its_expert_through_ray(record, env):
    if env == "swe-v0" and not AS_ROOT:
        pytest.skip("the SWE sandbox needs bubblewrap as root in a namespace without a user map")
    played = part(record, "suite")["envs"][env]
    assert played["episodes"] >= 2
    assert played["statuses"] == ["done"]
    assert played["success"] == played["episodes"]


def test_a_killed_service_actor_is_restarted_and_its_episodes_name_its_url(record):
    service = part(record, "failures")["service"]
    assert service["ids_in_order"]
    assert len(service["statuses"]) == 30
    assert set(service["statuses"]) <= {"done", "error"}
    assert all(service["victim"] in reason for reason in service["error_reasons"])
    assert service["victim"] not in service["after"]
    assert len(service["after"]) == len(service["before"]) == 2
    assert sorted(service["restarts"]) == [0, 1]
    assert service["again_statuses"] == ["done"] * 6


def test_a_killed_worker_loses_no_episode(record):
    worker = part(record, "failures")["worker"]
    assert worker["dead"] == [worker["doomed"]]
    assert worker["ids_in_order"]
    assert worker["statuses"] == ["done"] * 30
    assert worker["retried"] and all(r == [worker["doomed"]] for r in worker["retried"])
    assert worker["same_as_plain"]
    assert part(record, "failures")["actors_after_close"] is True


def test_new_weights_reach_the_in_worker_policies(record):
    weights = part(record, "weights")
    assert weights["base_equal"]
    assert weights["state_dict_changed"] and weights["state_dict_equal"]
    assert weights["lora_changed"] and weights["lora_equal"]
    assert weights["lora_push"]["bytes"] < weights["state_dict_push"]["bytes"]


def test_one_training_step_with_a_ray_section(record):
    run = part(record, "train")
    assert run["steps"] == [1]
    assert run["sync_s"][0] is not None
    assert run["rollout_statuses"] != ["error"]
    assert run["rollout_nodes"] == record["cluster"]["nodes"]
    assert run["eval_nodes"] == record["cluster"]["nodes"]
    assert run["eval_equal_replay"]
    assert run["summary"]
    assert run["actors_after"] is True


def test_ctrl_c_stops_the_actors_and_the_local_cluster(record):
    stopped = part(record, "interrupt")
    assert stopped["playing"]
    assert stopped["during"]["raylets"] == stopped["raylets_before"] + 1
    assert stopped["returncode"] == 130, stopped["stderr"]
    assert stopped["cleaned_up"], stopped["left"]


def test_nothing_is_left_running(record):
    assert record["end"]["actors"] == []
    assert record["left"] == ""
