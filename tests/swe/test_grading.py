"""SWE-bench-compatible grading: diff paths, report semantics, and real h11 bugs graded in bwrap."""

from __future__ import annotations

import dataclasses
import json
import os
import random
import shutil
import time
from pathlib import Path

import pytest

from agentenv.envs.swe.factory import Instance, build_instances
from agentenv.envs.swe.grading import (
    RESOLVED_FULL,
    RESOLVED_NO,
    RESOLVED_PARTIAL,
    TEST_ENV,
    TESTBED,
    GradingError,
    Report,
    apply_diff,
    check_image_host,
    eval_tests_report,
    git_baseline,
    grade,
    graded_files,
    grading_command,
    instance_sandbox,
    prepare_workspace,
    rate,
    resolution_status,
    summary_statuses,
    tampered_files,
    touched_files,
    workspace_diff,
)
from agentenv.envs.swe.mutations import unified_diff
from agentenv.envs.swe.packages import fetch, sdist_path
from agentenv.envs.swe.tasks import load_instances
from agentenv.sandbox import DockerSandbox, Limits, PodmanSandbox, Sandbox
from agentenv.sandbox.docker import DEFAULT_IMAGE, engine_client
from tests.sandbox.support import engine_params
from tests.sandbox.test_docker import build_image

SWEBENCH_KEYS = {
    "patch_is_None",
    "patch_exists",
    "patch_successfully_applied",
    "resolved",
    "infra_failure",
}
"""The keys SWE-bench's get_eval_report always writes (plus tests_status, infra_failure_reason)."""


def make_instance(**fields: object) -> Instance:
    base: dict[str, object] = {
        "instance_id": "demo__demo-1",
        "repo": "demo/demo",
        "base_commit": "abc",
        "patch": "",
        "test_patch": "",
        "problem_statement": "",
        "hints_text": "",
        "created_at": "",
        "version": "",
        "FAIL_TO_PASS": [],
        "PASS_TO_PASS": [],
        "environment_setup_commit": "",
        "bug_patch": "",
        "test_cmd": "",
        "test_dir": "",
        "package": "",
        "sdist_sha256": "",
        "mutated_files": [],
        "functions": [],
        "families": [],
    }
    return Instance(**{**base, **fields})  # type: ignore[arg-type]


# Diff paths (no sandbox)

GIT_DIFF = """\
diff --git a/pkg/mod.py b/pkg/mod.py
index 1111111..2222222 100644
--- a/pkg/mod.py
+++ b/pkg/mod.py
@@ -1,3 +1,3 @@
 x = 1
---- not a header: a removed line that starts with '-- '
+++++ not a header either
diff --git a/new.txt b/new.txt
new file mode 100644
--- /dev/null
+++ b/new.txt
@@ -0,0 +1 @@
+hello
diff --git a/gone.py b/gone.py
deleted file mode 100644
--- a/gone.py
+++ /dev/null
@@ -1 +0,0 @@
-bye
diff --git a/old name.py b/new name.py
similarity index 90%
rename from old name.py
rename to new name.py
diff --git "a/caf\\303\\251.py" "b/caf\\303\\251.py"
--- "a/caf\\303\\251.py"
+++ "b/caf\\303\\251.py"
@@ -1 +1 @@
-a
+b
diff --git a/img.png b/img.png
Binary files a/img.png and b/img.png differ
"""


def test_touched_files_git_diff() -> None:
    assert touched_files(GIT_DIFF) == [
        "pkg/mod.py",
        "new.txt",
        "gone.py",
        "old name.py",
        "new name.py",
        "café.py",
        "img.png",
    ]


def test_touched_files_plain_and_context_diffs() -> None:
    plain = (
        "--- pkg/mod.py.orig\t2024-01-01 00:00:00.000000000 +0000\n"
        "+++ pkg/mod.py\t2024-01-01 00:00:01.000000000 +0000\n"
        "@@ -1 +1 @@\n-a\n+b\n"
    )
    assert touched_files(plain) == ["pkg/mod.py.orig", "pkg/mod.py"]
    context = "*** a/x.py\n--- b/x.py\n***************\n*** 1 ****\n! a\n--- 1 ----\n! b\n"
    assert touched_files(context) == ["x.py"]
    assert touched_files("Index: y.py\n===\n") == ["y.py"]
    assert touched_files("") == touched_files("just text\n\x00\xff") == []
    assert touched_files("--- a/./p//q.py\n+++ b/p/q.py\n") == ["p/q.py"]


def test_graded_and_tampered_files() -> None:
    inst = make_instance(
        test_dir="pkg/tests",
        test_patch="--- a/extra/test_new.py\n+++ b/extra/test_new.py\n",
        FAIL_TO_PASS=["other/test_a.py::test_x", "pkg/core.py::pkg.core.f"],  # a doctest id
        PASS_TO_PASS=["lib/tests/helpers.py::test_y[1]"],
        patch="--- a/setup.cfg\n+++ b/setup.cfg\n",
    )
    assert graded_files(inst) == [
        "extra/test_new.py",
        "lib/tests/helpers.py",
        "other/test_a.py",
        "pkg/tests",
    ]

    def diff(*paths: str) -> str:
        return "".join(f"--- a/{p}\n+++ b/{p}\n@@ -1 +1 @@\n-a\n+b\n" for p in paths)

    assert tampered_files(inst, diff("pkg/core.py")) == []  # the doctest's module is source
    assert tampered_files(inst, diff("setup.cfg")) == []  # the gold fix changes it too
    assert tampered_files(inst, diff("pkg/tests/test_z.py", "pkg/core.py")) == [
        "pkg/tests/test_z.py"
    ]
    assert tampered_files(inst, diff("conftest.py", "sub/pytest.ini", "pyproject.toml")) == [
        "conftest.py",
        "pyproject.toml",
        "sub/pytest.ini",
    ]
    assert tampered_files(inst, diff(".git/config", ".gitconfig")) == [".git/config", ".gitconfig"]
    assert tampered_files(inst, "--- pkg/tests/x.py\n+++ pkg/tests/x.py\n") == ["pkg/tests/x.py"]
    assert tampered_files(inst, "--- w/pkg//tests/./x.py\n") == ["pkg/tests/x.py"]  # as -p1
    assert tampered_files(inst, diff("extra/test_new.py", "other/test_a.py")) == [
        "extra/test_new.py",
        "other/test_a.py",
    ]


# Report semantics (no sandbox)


def test_tests_report_semantics() -> None:
    statuses = {
        "t.py::f_pass": "PASSED",
        "t.py::f_xfail - known bug": "XFAIL",  # -rA appends the reason to XFAIL lines
        "t.py::f_skip": "SKIPPED",
        "t.py::f_xpass": "XPASS",
        "t.py::f_fail": "FAILED",
        "t.py::f_trunc[a-b]": "PASSED",
        "t.py::p_pass": "PASSED",
        "t.py::p_skip": "SKIPPED",
        "t.py::p_xfail": "XFAIL",
        "t.py::p_error": "ERROR",
    }
    f2p = ["t.py::f_pass", "t.py::f_xfail", "t.py::f_skip", "t.py::f_xpass", "t.py::f_fail"]
    f2p += ["t.py::f_missing", "t.py::f_trunc[a"]
    p2p = ["t.py::p_pass", "t.py::p_skip", "t.py::p_xfail", "t.py::p_error", "t.py::p_missing"]
    report = eval_tests_report(statuses, f2p, p2p)
    assert report["FAIL_TO_PASS"] == {
        "success": ["t.py::f_pass", "t.py::f_xfail", "t.py::f_trunc[a"],
        "failure": ["t.py::f_skip", "t.py::f_xpass", "t.py::f_fail", "t.py::f_missing"],
    }
    assert report["PASS_TO_PASS"] == {
        "success": ["t.py::p_pass", "t.py::p_skip", "t.py::p_xfail"],
        "failure": ["t.py::p_error", "t.py::p_missing"],
    }
    empty = {"success": [], "failure": []}
    assert report["FAIL_TO_FAIL"] == report["PASS_TO_FAIL"] == empty
    assert rate(report["FAIL_TO_PASS"]) == 3 / 7 and rate(empty) == 1.0


def test_resolution_status() -> None:
    assert resolution_status(1, 1) == RESOLVED_FULL
    assert resolution_status(0.5, 1) == RESOLVED_PARTIAL
    assert resolution_status(0.5, 0.99) == resolution_status(0, 1) == RESOLVED_NO
    empty = eval_tests_report({}, [], [])
    assert resolution_status(rate(empty["FAIL_TO_PASS"]), rate(empty["PASS_TO_PASS"])) == (
        RESOLVED_FULL
    )


def test_summary_statuses_ignore_lines_printed_before_the_summary() -> None:
    output = (
        "---- Captured stdout call ----\nPASSED t.py::test_a\n"
        "=========================== short test summary info ============================\n"
        "FAILED t.py::test_a - assert 1 == 2\nPASSED t.py::test_b\n"
        "========================= 1 failed, 1 passed in 0.01s ==========================\n"
    )
    assert summary_statuses(output) == {"t.py::test_a": "FAILED", "t.py::test_b": "PASSED"}
    assert summary_statuses("PASSED t.py::test_c\n") == {"t.py::test_c": "PASSED"}


def test_report_to_swebench_has_swebench_keys() -> None:
    (entry,) = Report("x__y-1").to_swebench().values()
    assert set(entry) == SWEBENCH_KEYS
    report = Report("x__y-1", patch_exists=True, patch_successfully_applied=True)
    report.tests_status = eval_tests_report({"t::a": "PASSED"}, ["t::a"], [])
    report.infra_failure_reason = "exit_code_mismatch"
    assert report.to_swebench() == {
        "x__y-1": {
            "patch_is_None": False,
            "patch_exists": True,
            "patch_successfully_applied": True,
            "resolved": False,
            "infra_failure": False,
            "infra_failure_reason": "exit_code_mismatch",
            "tests_status": report.tests_status,
        }
    }


async def test_missing_or_empty_diffs_start_no_sandbox() -> None:
    inst = make_instance(package="no-such-package", test_cmd="false")  # never built
    none, empty, blank, prose = [
        await grade(inst, diff) for diff in (None, "", " \n\t\n", "I fixed it!\n")
    ]
    assert none.patch_is_None and not none.patch_exists
    assert not empty.patch_exists and not blank.patch_exists and not empty.patch_is_None
    assert prose.patch_exists and not prose.patch_successfully_applied
    for report in (none, empty, blank, prose):
        assert not report.resolved and report.resolution == RESOLVED_NO
        assert report.tests_status == {} and report.f2p_fraction == 0.0 and report.reason
        (entry,) = report.to_swebench().values()
        assert set(entry) == SWEBENCH_KEYS


# Image rows (docker/podman)


def image_instance() -> Instance:
    return make_instance(
        instance_id="astropy__astropy-12907",
        image="swebench/sweb.eval.x86_64.astropy_1776_astropy-12907:latest",
        test_cmd="pytest -rA astropy/modeling/tests/test_separable.py",
    )


async def test_image_rows_need_an_engine_backend() -> None:
    diff = "--- a/astropy/x.py\n+++ b/astropy/x.py\n@@ -1 +1 @@\n-a\n+b\n"
    for backend in ("bwrap", "unsafe-local"):
        with pytest.raises(GradingError, match=f"only the docker and podman backends.*{backend}"):
            await grade(image_instance(), diff, backend=backend)  # before any sandbox starts
    async with Sandbox.create("bwrap") as sb:
        with pytest.raises(GradingError, match="only the docker and podman backends"):
            await prepare_workspace(sb, image_instance())


def test_image_rows_get_the_images_testbed_as_workspace() -> None:
    inst = image_instance()
    for backend, cls in (("docker", DockerSandbox), ("podman", PodmanSandbox)):
        sb = instance_sandbox(inst, backend, Limits(), TEST_ENV)  # not started: no engine
        assert isinstance(sb, cls) and sb.image == inst.image
        assert (sb.workdir, sb.workspace) == (TESTBED, "image")
        assert sb.env["TZ"] == "UTC"
        check_image_host(sb, inst)
    tmpfs = Sandbox.create("docker", image=inst.image)
    with pytest.raises(GradingError, match="/testbed.*/workspace"):
        check_image_host(tmpfs, inst)
    factory = instance_sandbox(make_instance(package="h11"), "bwrap", Limits(), TEST_ENV)
    assert factory.backend == "bwrap" and factory.workdir == "/workspace"


async def test_grading_command_activates_conda_only_in_images() -> None:
    factory = make_instance(test_cmd="echo ran")
    assert grading_command(factory) == "echo ran"
    image = dataclasses.replace(factory, image="some/image")
    command = grading_command(image)
    assert "source /opt/miniconda3/bin/activate && conda activate testbed" in command
    assert command.endswith("\necho ran")
    async with Sandbox.create("bwrap") as sb:  # no /opt/miniconda3 there: the command as it is
        result = await sb.run(command)
    assert (result.returncode, result.output) == (0, "ran\n")


SWE_IMAGE = """\
FROM {base}
RUN mkdir -p /testbed/tests /opt/miniconda3/bin \\
 && printf 'def add(a, b):\\n    return a - b\\n' > /testbed/calc.py \\
 && printf '%s\\n' 'import os, sys' 'sys.path.insert(0, os.getcwd())' 'import calc' \\
    'def test_add(): assert calc.add(1, 2) == 3' 'def test_zero(): assert calc.add(0, 0) == 0' \\
    'def test_conda(): assert os.environ.get("AGENTENV_CONDA") == "activate testbed"' \\
    > /testbed/tests/test_calc.py \\
 && printf '%s\\n' 'import sys' 'sys.path.insert(0, "tests")' 'import test_calc' \\
    'print("=== short test summary info ===")' 'bad = 0' \\
    'for name in ("test_add", "test_zero", "test_conda"):' \\
    '    try: getattr(test_calc, name)(); print("PASSED tests/test_calc.py::" + name)' \\
    '    except Exception: bad = 1; print("FAILED tests/test_calc.py::" + name)' \\
    'sys.exit(bad)' > /testbed/run_tests.py \\
 && printf 'conda() {{ export AGENTENV_CONDA="$*"; }}\\n' > /opt/miniconda3/bin/activate
"""
"""A SWE-bench-like image without network: a buggy repo at /testbed, a fake conda whose
``conda activate testbed`` leaves a mark the tests check, and a pytest ``-rA``-like runner
(the base image has no pytest)."""

GOLD = "--- a/calc.py\n+++ b/calc.py\n@@ -1,2 +1,2 @@\n def add(a, b):\n-    return a - b\n+    return a + b\n"


@pytest.mark.parametrize("engine", engine_params())
async def test_a_swebench_row_on_a_local_image(engine: str, tmp_path: Path) -> None:
    client = engine_client(engine)
    base = os.environ.get("AGENTENV_TEST_GIT_IMAGE", DEFAULT_IMAGE)
    tag = build_image(client, SWE_IMAGE.format(base=base), "agentenv-test/swe-calc:1")
    try:
        async with Sandbox.create(engine, image=tag) as probe:
            if (await probe.run("command -v git")).returncode:
                pytest.skip(f"{base} has no git (set AGENTENV_TEST_GIT_IMAGE to one that has)")
        row = {
            "repo": "demo/calc",
            "instance_id": "demo__calc-1",
            "base_commit": "",
            "patch": GOLD,
            "problem_statement": "add subtracts",
            "FAIL_TO_PASS": '["tests/test_calc.py::test_add"]',
            "PASS_TO_PASS": '["tests/test_calc.py::test_zero", "tests/test_calc.py::test_conda"]',
            "image": tag,
            "test_cmd": "python run_tests.py",
        }
        (path := tmp_path / "rows.jsonl").write_text(json.dumps(row) + "\n")
        (inst,) = load_instances(path)
        gold = await grade(inst, GOLD, backend=engine, timeout=60)
        assert gold.resolved and gold.resolution == RESOLVED_FULL, gold.log
        wrong = GOLD.replace("a + b", "a * b")
        bad = await grade(inst, wrong, backend=engine, timeout=60)
        assert bad.patch_successfully_applied and not bad.resolved
        assert bad.tests_status["FAIL_TO_PASS"]["failure"] == ["tests/test_calc.py::test_add"]
        assert len(bad.tests_status["PASS_TO_PASS"]["success"]) == 2  # conda was activated
    finally:
        client.images.remove(tag, force=True)
        client.close()


# Real h11 bugs in bwrap


@pytest.fixture(scope="module")
def swe_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("cache")
    shared = sdist_path("h11")  # pip download once into the real cache, sha256-checked
    (root / "swe" / "sdists").mkdir(parents=True)
    shutil.copy(shared, root / "swe" / "sdists" / shared.name)
    return root


@pytest.fixture(scope="module")
def instances(swe_cache: Path) -> list[Instance]:
    found = build_instances("h11", n=3, seed=0, families=["change_const"], cache=swe_cache)
    assert len(found) == 3
    return found


def clean_text(swe_cache: Path, path: str) -> str:
    return (fetch("h11", swe_cache) / path).read_text()


async def agent_diff(inst: Instance, swe_cache: Path, edits: dict[str, str | None]) -> str:
    """The git diff of an agent's workspace after writing (or, for None, deleting) files."""
    async with Sandbox.create("bwrap") as sb:
        await prepare_workspace(sb, inst, swe_cache)
        await git_baseline(sb)
        for path, text in edits.items():
            if text is None:
                await sb.run(f"rm -f {path}")
            else:
                await sb.write_file(path, text)
        return await workspace_diff(sb)


async def buggy_text(inst: Instance, swe_cache: Path, path: str) -> str:
    async with Sandbox.create("bwrap") as sb:
        await prepare_workspace(sb, inst, swe_cache)
        return await sb.read_file(path)


def graded(report: Report, what: str) -> Report:
    print(f"\n{report.instance_id} {what}: {report.seconds:.2f} s, {report.reason}")
    (entry,) = report.to_swebench().values()
    assert SWEBENCH_KEYS <= set(entry) <= SWEBENCH_KEYS | {"tests_status", "infra_failure_reason"}
    return report


@pytest.mark.slow
async def test_gold_fix_resolves(instances: list[Instance], swe_cache: Path) -> None:
    for inst in instances:
        report = graded(await grade(inst, inst.patch, cache=swe_cache), "gold")
        assert report.resolved and report.resolution == RESOLVED_FULL
        assert report.patch_exists and report.patch_successfully_applied and not report.tampered
        assert report.tests_status["FAIL_TO_PASS"]["success"] == inst.FAIL_TO_PASS
        assert report.tests_status["PASS_TO_PASS"]["success"] == inst.PASS_TO_PASS
        assert report.f2p_fraction == report.p2p_fraction == 1.0
        assert not report.infra_failure and not report.timed_out and "passed" in report.log
        assert set(report.to_swebench()[inst.instance_id]) == SWEBENCH_KEYS | {"tests_status"}


@pytest.mark.slow
async def test_unapplied_and_wrong_fixes(instances: list[Instance], swe_cache: Path) -> None:
    inst = instances[0]
    (path,) = inst.mutated_files
    stale = "".join(inst.patch.replace("\n-", "\n-#stale ").splitlines(keepends=True))
    report = graded(await grade(inst, stale, cache=swe_cache), "stale context")
    assert report.patch_exists and not report.patch_successfully_applied and not report.resolved
    assert report.tests_status == {} and "Patch Apply Failed" in report.log

    buggy = await buggy_text(inst, swe_cache, path)
    noop = unified_diff(buggy, "# looked here\n" + buggy, path)
    report = graded(await grade(inst, noop, cache=swe_cache), "no-op comment")
    assert report.patch_successfully_applied and not report.resolved and not report.tampered
    assert report.resolution == RESOLVED_NO and report.f2p_fraction == 0.0
    assert report.tests_status["FAIL_TO_PASS"]["failure"] == inst.FAIL_TO_PASS
    assert report.p2p_fraction == 1.0


@pytest.mark.slow
async def test_fix_that_also_edits_a_test_is_tampered(
    instances: list[Instance], swe_cache: Path
) -> None:
    inst = instances[1]
    (path,) = inst.mutated_files
    test_file = inst.PASS_TO_PASS[0].split("::")[0]
    edits = {
        path: clean_text(swe_cache, path),
        test_file: clean_text(swe_cache, test_file) + "# hi\n",
    }
    report = graded(
        await grade(inst, await agent_diff(inst, swe_cache, edits), cache=swe_cache), "fix+test"
    )
    assert report.tampered == [test_file] and test_file in report.reason
    assert not report.resolved and report.resolution == RESOLVED_NO
    assert report.f2p_fraction == report.p2p_fraction == 0.0
    # the tests ran with the graded files reset: the fix itself works
    assert report.tests_status["FAIL_TO_PASS"]["success"] == inst.FAIL_TO_PASS


@pytest.mark.slow
async def test_editing_or_deleting_the_failing_test_is_caught(
    instances: list[Instance], swe_cache: Path
) -> None:
    inst = instances[0]
    test = next(t for t in inst.FAIL_TO_PASS if t.count("::") == 1)
    file, name = test.split("::")
    override = clean_text(swe_cache, file) + f"\n\ndef {name.split('[')[0]}():\n    pass\n"
    for what, edit in (("override the failing test", override), ("delete its file", None)):
        diff = await agent_diff(inst, swe_cache, {file: edit})
        report = graded(await grade(inst, diff, cache=swe_cache), what)
        assert report.tampered == [file] and not report.resolved
        assert test in report.tests_status["FAIL_TO_PASS"]["failure"]  # reset: still failing


@pytest.mark.slow
async def test_a_conftest_that_passes_everything_is_caught(
    instances: list[Instance], swe_cache: Path
) -> None:
    inst = instances[2]
    hook = (
        "import pytest\n\n\n@pytest.hookimpl(hookwrapper=True)\n"
        "def pytest_runtest_makereport(item, call):\n"
        "    outcome = yield\n    outcome.get_result().outcome = 'passed'\n"
    )
    diff = await agent_diff(inst, swe_cache, {"conftest.py": hook})
    report = graded(await grade(inst, diff, cache=swe_cache), "conftest hack")
    assert report.tampered == ["conftest.py"] and not report.resolved
    assert report.tests_status["FAIL_TO_PASS"]["success"] == inst.FAIL_TO_PASS  # the hack works
    assert report.f2p_fraction == 0.0


@pytest.mark.slow
async def test_git_and_plain_diffs_both_apply(instances: list[Instance], swe_cache: Path) -> None:
    inst = instances[1]
    (path,) = inst.mutated_files
    git_diff = await agent_diff(inst, swe_cache, {path: clean_text(swe_cache, path)})
    assert git_diff.startswith(f"diff --git a/{path} b/{path}\n")
    assert graded(await grade(inst, git_diff, cache=swe_cache), "git diff").resolved

    async with Sandbox.create("bwrap") as sb:  # `diff -u f.orig f`: no a/ b/ prefixes
        await prepare_workspace(sb, inst, swe_cache)
        await sb.run(f"cp {path} {path}.orig")
        await sb.write_file(path, clean_text(swe_cache, path))
        plain = (await sb.run(f"diff -u {path}.orig {path}")).output
    assert plain.startswith(f"--- {path}.orig\t")
    assert graded(await grade(inst, plain, cache=swe_cache), "diff -u").resolved
    async with Sandbox.create("bwrap") as sb:
        await prepare_workspace(sb, inst, swe_cache)
        await git_baseline(sb)
        applied, log = await apply_diff(sb, plain)
        assert applied and "Applied Patch (patch --batch --forward --fuzz=5 -p0 -i)" in log
        assert log.count("+ git apply") == 3 and "+ patch --batch --forward --fuzz=5 -p1" in log
        status = await sb.run("git status --porcelain")
        assert status.output == f" M {path}\n"  # no leftover diff file, .orig or .rej


@pytest.mark.slow
async def test_timeouts_and_untrustworthy_output(
    instances: list[Instance], swe_cache: Path
) -> None:
    inst = instances[2]
    test = inst.FAIL_TO_PASS[0]
    slow = dataclasses.replace(inst, test_cmd="sleep 30")
    report = graded(await grade(slow, inst.patch, cache=swe_cache, timeout=2), "timeout")
    assert report.timed_out and report.infra_failure_reason == "tests_timed_out"
    assert report.patch_successfully_applied and not report.resolved and not report.infra_failure
    assert "ran past 2 s" in report.reason

    fake = dataclasses.replace(inst, test_cmd=f"echo 'PASSED {test}'; exit 3")
    report = graded(await grade(fake, inst.patch, cache=swe_cache), "fake PASSED")
    assert report.infra_failure_reason == "exit_code_mismatch" and not report.resolved

    silent = dataclasses.replace(inst, test_cmd="true")
    report = graded(await grade(silent, inst.patch, cache=swe_cache), "no output")
    assert report.infra_failure_reason == "no_test_results" and not report.resolved

    test_file = test.split("::")[0]
    sneaky = dataclasses.replace(inst, test_cmd=f"echo '# x' >> {test_file}; {inst.test_cmd}")
    report = graded(await grade(sneaky, inst.patch, cache=swe_cache), "test file changed in run")
    assert report.tampered == [test_file] and not report.resolved


def garbage(rng: random.Random, files: list[str]) -> str:
    """A random diff-like or binary-like text that cannot apply (a third name a file)."""
    kind = rng.choice([0, 0, 1, 1, 5, 5, 6, 6, 2, 3, 4, 7])
    line = "zq" + "".join(rng.choice("+- @\\abc\t\x00é\udcff") for _ in range(rng.randrange(80)))
    if kind == 0:
        return bytes(rng.randrange(256) for _ in range(rng.randrange(1, 4000))).decode("latin-1")
    if kind == 1:
        return (line + "\n") * rng.randrange(1, 30_000)  # up to megabytes
    if kind == 2:  # a header on a real file, a hunk whose context is not there
        path = rng.choice(files)
        return f"--- a/{path}\n+++ b/{path}\n@@ -{rng.randrange(1, 999)},2 +1,2 @@\n-{line}\n+x\n"
    if kind == 3:
        return f"diff --git a/{rng.choice(files)} b/x\nGIT binary patch\nliteral 9\n{line}\n"
    if kind == 4:
        return f"--- a/../../etc/{line}\n+++ b/../../etc/passwd\n@@ -1 +1 @@\n-root\n+me\n"
    if kind == 5:
        return "".join(rng.choice(["@@ -1 +1 @@\n", "--- \n", "+++ b/\n", line + "\n"]) * 3)
    if kind == 6:
        return "".join(chr(rng.randrange(1, 0x10FFFF)) for _ in range(rng.randrange(1, 500)))
    return f"*** a/{rng.choice(files)}\n--- b/x\n***************\n*** 1 ****\n! {line}\n"


@pytest.mark.slow
async def test_fuzzed_diffs_never_raise(instances: list[Instance], swe_cache: Path) -> None:
    inst = instances[0]
    rng = random.Random(0)
    files = [*inst.mutated_files, inst.PASS_TO_PASS[0].split("::")[0], "README.md"]
    diffs = [garbage(rng, files) for _ in range(200)]
    assert sum(bool(touched_files(d)) for d in diffs) >= 40  # these reach a sandbox
    assert any(len(d) > 1_000_000 for d in diffs) and any("\x00" in d for d in diffs)
    start = time.monotonic()
    for diff in diffs:
        assert isinstance(tampered_files(inst, diff), list)
        report = await grade(inst, diff, cache=swe_cache)
        assert not report.patch_successfully_applied and not report.resolved
        assert report.patch_exists == bool(diff.strip())
    print(f"\n200 fuzzed grades: {time.monotonic() - start:.1f} s")
    async with Sandbox.create("bwrap", limits=Limits(max_output=1 << 20)) as sb:
        await prepare_workspace(sb, inst, swe_cache)
        await git_baseline(sb)
        for diff in (d for d in diffs if not touched_files(d)):  # those grade() never applied
            applied, log = await apply_diff(sb, diff)
            assert not applied and "Patch Apply Failed" in log
        assert (await sb.run("git status --porcelain --ignored")).output == ""  # pristine
