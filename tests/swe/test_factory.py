"""End to end on h11 0.16.0 (fetched from PyPI once): validated bugs, checked in bwrap."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest

from agentenv.cache import cache_root
from agentenv.envs.swe.factory import Stats, abuild_instances, parse_statuses
from agentenv.envs.swe.packages import fetch, package, sdist_path
from agentenv.sandbox import Limits, MiB, Sandbox

pytestmark = pytest.mark.slow


def test_parse_statuses() -> None:
    out = (
        "PASSED t/test_a.py::test_x\n"
        "FAILED t/test_a.py::test_y[a - b] - AssertionError: 1 != 2\n"
        "ERROR t/test_b.py::test_z - fixture 'q' not found\n"
        "SKIPPED [1] t/test_b.py:3: no\n"
        "XFAIL t/test_b.py::test_w - reason\n"
    )
    assert parse_statuses(out) == {
        "t/test_a.py::test_x": "PASSED",
        "t/test_a.py::test_y[a": "FAILED",
        "t/test_b.py::test_z": "ERROR",
        "t/test_b.py::test_w - reason": "XFAIL",
    }


async def test_h11_end_to_end(tmp_path: Path) -> None:
    pkg = package("h11")
    shared = sdist_path("h11")  # pip download once into the real cache, sha256-checked
    (tmp_path / "swe" / "sdists").mkdir(parents=True)
    shutil.copy(shared, tmp_path / "swe" / "sdists" / shared.name)
    root = fetch("h11", tmp_path)
    assert (root / "h11" / "_connection.py").exists()

    stats = Stats()
    start = time.monotonic()
    found = await abuild_instances(
        "h11", n=2, seed=0, families=["op_flip", "remove_cond"], cache=tmp_path, stats=stats
    )
    print(f"\nh11: {stats}")
    assert time.monotonic() - start < 60
    assert found and stats.validated >= len(found) and stats.candidates >= len(found)
    cached = list((tmp_path / "swe" / "instances").glob("h11-0.16.0.*.jsonl"))
    assert len(cached) == 1 and len(cached[0].read_text().splitlines()) == len(found)
    again = await abuild_instances(
        "h11", n=2, seed=0, families=["op_flip", "remove_cond"], cache=tmp_path
    )
    assert again == found  # reused from the cache

    inst = found[0]
    assert inst.instance_id.startswith("h11-0.16.0.") and inst.FAIL_TO_PASS and inst.PASS_TO_PASS
    assert json.loads(inst.to_swebench()["FAIL_TO_PASS"]) == inst.FAIL_TO_PASS  # type: ignore[arg-type]
    assert inst.bug_patch not in inst.problem_statement
    assert inst.FAIL_TO_PASS[0] in inst.problem_statement

    limits = Limits(timeout=120, disk=256 * MiB, max_output=1 << 22)
    async with Sandbox.create("bwrap", limits=limits) as sb:
        await sb.copy_in(root, ".")
        await sb.write_file("bug.diff", inst.bug_patch)
        await sb.write_file("fix.diff", inst.patch)
        assert (await sb.run("patch -p1 --batch < bug.diff")).returncode == 0
        buggy = parse_statuses((await sb.run(pkg.test_cmd)).output)
        assert all(buggy.get(t) != "PASSED" for t in inst.FAIL_TO_PASS)
        assert all(buggy[t] == "PASSED" for t in inst.PASS_TO_PASS)
        assert (await sb.run("patch -p1 --batch < fix.diff")).returncode == 0
        fixed = parse_statuses((await sb.run(pkg.test_cmd)).output)
        assert all(fixed[t] == "PASSED" for t in inst.FAIL_TO_PASS + inst.PASS_TO_PASS)
    assert cache_root() != tmp_path
