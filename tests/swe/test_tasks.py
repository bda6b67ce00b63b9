"""Loading SWE-bench, SWE-smith and agentenv rows; errors that name the line and the field."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest

from agentenv.envs.swe.factory import Instance
from agentenv.envs.swe.grading import TESTBED, GradingError, grading_command, instance_sandbox
from agentenv.envs.swe.tasks import (
    SWESMITH_TEST_CMD,
    eval_test_cmd,
    load_instances,
    row_kind,
    save_instances,
    swebench_image,
)
from agentenv.jsonl import DataFormatError
from agentenv.sandbox import Limits

FIX = "diff --git a/src/lib.py b/src/lib.py\n--- a/src/lib.py\n+++ b/src/lib.py\n@@ -1 +1 @@\n-a\n+b\n"
TESTS = "--- a/tests/test_lib.py\n+++ b/tests/test_lib.py\n@@ -1 +1,2 @@\n x\n+y\n"
EVAL = (
    "#!/bin/bash\nset -uxo pipefail\ncd /testbed\ngit checkout abc tests/test_lib.py\n"
    ": '>>>>> Start Test Output'\npytest -rA tests/test_lib.py\n: '>>>>> End Test Output'\n"
)

SWEBENCH = {
    "repo": "astropy/astropy",
    "instance_id": "astropy__astropy-12907",
    "base_commit": "d16bfe05a744909de4b27f5875fe0d4ed41ce607",
    "patch": FIX,
    "test_patch": TESTS,
    "problem_statement": "Separability is wrong for nested models",
    "hints_text": "",
    "created_at": "2022-03-03T15:14:54Z",
    "version": "4.3",
    "FAIL_TO_PASS": '["tests/test_lib.py::test_a"]',
    "PASS_TO_PASS": '["tests/test_lib.py::test_b", "tests/test_lib.py::test_c"]',
    "environment_setup_commit": "298ccb478e6bf092953bca67a3d29dc6c35f6752",
}

SWESMITH = {
    "instance_id": "john-kurkowski__tldextract.3d1bf184.func_pm_ctrl_invert_if__3wez5pbg",
    "repo": "swesmith/john-kurkowski__tldextract.3d1bf184",
    "patch": FIX,
    "FAIL_TO_PASS": ["tests/test_lib.py::test_a"],
    "PASS_TO_PASS": ["tests/test_lib.py::test_b"],
    "created_at": "2025-03-14T21:05:51.000000",
    "image_name": "jyangballin/swesmith.x86_64.john-kurkowski_1776_tldextract.3d1bf184",
    "base_commit": "f7e6cd3b8b2a1c4e",
    "problem_statement": "extract() drops the suffix",
}


def write_jsonl(path: Path, rows: list[Any]) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def test_swebench_rows(tmp_path: Path) -> None:
    v5 = {**SWEBENCH, "instance_id": "astropy__astropy-13033", "image": "my/image:1"}
    v5["eval_script"] = EVAL
    v5["FAIL_TO_PASS"] = ["tests/test_lib.py::test_a"]  # lists are fine too
    old, new = load_instances(write_jsonl(tmp_path / "bench.jsonl", [SWEBENCH, v5]))
    assert old.patch == FIX and old.bug_patch == "" and old.test_patch == TESTS
    assert old.FAIL_TO_PASS == ["tests/test_lib.py::test_a"]
    assert old.PASS_TO_PASS == ["tests/test_lib.py::test_b", "tests/test_lib.py::test_c"]
    assert old.image == "swebench/sweb.eval.x86_64.astropy_1776_astropy-12907:latest"
    assert old.test_cmd == "" and old.package == "" and old.mutated_files == ["src/lib.py"]
    assert new.image == "my/image:1" and new.test_cmd == "pytest -rA tests/test_lib.py"
    assert new.FAIL_TO_PASS == ["tests/test_lib.py::test_a"]


def test_swesmith_rows_carry_the_bug(tmp_path: Path) -> None:
    (inst,) = load_instances(write_jsonl(tmp_path / "smith.jsonl", [SWESMITH]))
    assert inst.bug_patch == FIX and inst.patch == ""  # the fix is unknown
    assert inst.image == SWESMITH["image_name"] and inst.test_cmd == SWESMITH_TEST_CMD
    assert inst.families == ["func_pm_ctrl_invert_if"] and inst.mutated_files == ["src/lib.py"]
    assert inst.base_commit == "f7e6cd3b8b2a1c4e"


def test_loaded_rows_get_their_images_testbed_as_workspace(tmp_path: Path) -> None:
    bench, smith = load_instances(write_jsonl(tmp_path / "in.jsonl", [SWEBENCH, SWESMITH]))
    for inst, backend in ((bench, "docker"), (smith, "podman")):
        sb = instance_sandbox(inst, backend, Limits(), {})  # not started: no engine needed
        assert (sb.backend, sb.image, sb.workdir, sb.workspace) == (
            backend,
            inst.image,
            TESTBED,
            "image",
        )
        assert "conda activate testbed" in grading_command(inst)
    with pytest.raises(GradingError, match="only the docker and podman backends"):
        instance_sandbox(smith, "bwrap", Limits(), {})


def test_kinds(tmp_path: Path) -> None:
    assert row_kind(SWEBENCH) == "swebench" and row_kind(SWESMITH) == "swesmith"
    assert row_kind({"bug_patch": ""}) == "agentenv"
    path = write_jsonl(tmp_path / "rows.jsonl", [SWESMITH])
    (forced,) = load_instances(path, kind="swebench")  # patch read as the fix
    assert forced.patch == FIX and forced.bug_patch == ""
    with pytest.raises(ValueError, match="kind must be"):
        load_instances(path, kind="other")  # type: ignore[arg-type]
    assert swebench_image("django__django-11099") == (
        "swebench/sweb.eval.x86_64.django_1776_django-11099:latest"
    )
    assert eval_test_cmd(EVAL) == "pytest -rA tests/test_lib.py" and eval_test_cmd("ls") == ""


def test_round_trip(tmp_path: Path) -> None:
    bench, smith = load_instances(write_jsonl(tmp_path / "in.jsonl", [SWEBENCH, SWESMITH]))
    ours = dataclasses.replace(
        bench,
        instance_id="h11-0.16.0.op_flip.abcdef12",
        image="",
        package="h11",
        bug_patch=FIX,
        test_cmd="python -m pytest -rA h11/tests",
        test_dir="h11/tests",
        functions=["h11/_util.py::f"],
        families=["op_flip"],
    )
    out = tmp_path / "sub" / "out.jsonl"
    save_instances([bench, smith, ours], out)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert all(isinstance(r["FAIL_TO_PASS"], str) for r in rows)  # SWE-bench's format
    assert load_instances(out) == [bench, smith, ours]
    listed = tmp_path / "list.json"  # asdict rows in a JSON list (lists, not strings)
    listed.write_text(json.dumps([dataclasses.asdict(ours)]))
    assert load_instances(listed) == [ours]
    old_row = dataclasses.asdict(ours)
    del old_row["image"]  # a row cached before `image` existed
    assert load_instances(write_jsonl(tmp_path / "old.jsonl", [old_row])) == [ours]
    assert Instance(**old_row) == ours


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ({k: v for k, v in SWEBENCH.items() if k != "patch"}, r":2: missing field 'patch'"),
        ({**SWEBENCH, "FAIL_TO_PASS": "[oops"}, r":2: field 'FAIL_TO_PASS': invalid JSON"),
        ({**SWEBENCH, "PASS_TO_PASS": [1, 2]}, r":2: field 'PASS_TO_PASS': expected a list"),
        ({**SWEBENCH, "problem_statement": 7}, r":2: field 'problem_statement': expected a str"),
        ({**SWESMITH, "image_name": None}, r":2: missing field 'image_name'"),
        ({"bug_patch": "", "nope": 1}, r":2: unknown field 'nope'"),
        ({"bug_patch": ""}, r":2: missing field 'instance_id'"),
        ("[1, 2]", r":2: expected a JSON object"),
        ("{not json", r":2: invalid JSON"),
    ],
)
def test_errors_name_the_line_and_field(tmp_path: Path, row: Any, message: str) -> None:
    path = write_jsonl(tmp_path / "bad.jsonl", [SWESMITH, row])
    with pytest.raises(DataFormatError, match=rf"bad\.jsonl{message}"):
        load_instances(path)


def test_duplicates_name_both_lines(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "dup.jsonl", [SWEBENCH, SWESMITH, "", SWEBENCH])
    with pytest.raises(
        DataFormatError, match=r"dup\.jsonl:4: duplicate instance_id .*dup\.jsonl:1"
    ):
        load_instances(path)


def test_json_list_errors_name_the_row(tmp_path: Path) -> None:
    path = tmp_path / "rows.json"
    path.write_text(json.dumps([SWEBENCH, {**SWESMITH, "FAIL_TO_PASS": 3}]))
    with pytest.raises(DataFormatError, match=r"rows\.json: row 2: field 'FAIL_TO_PASS'"):
        load_instances(path)
    path.write_text("[" + json.dumps(SWEBENCH) + ",")
    with pytest.raises(DataFormatError, match=r"rows\.json: not a JSON list"):
        load_instances(path)
    path.write_text(json.dumps([SWEBENCH, "x"]))
    with pytest.raises(DataFormatError, match=r"rows\.json: row 2: expected a JSON object"):
        load_instances(path)
