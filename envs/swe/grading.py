"""Grading a diff against an instance the way SWE-bench's harness does, in a fresh sandbox.

The pipeline of :func:`grade` follows SWE-bench (Jimenez et al. 2024, arXiv 2310.06770;
``harness/run_evaluation.py`` and ``harness/grading.py``):

1. A fresh sandbox, never the agent's workspace (:func:`instance_sandbox`): on ``backend`` for
   factory instances; for loaded SWE-bench/SWE-smith rows, a docker/podman container of the row's
   ``image`` whose own ``/testbed`` is the workspace (``workspace="image"``).
2. :func:`prepare_workspace`: the buggy tree (the clean sdist, or the image's ``/testbed``; then
   ``bug_patch``); then
   :func:`git_baseline` commits it, so later steps can reset files and ``git apply --3way`` works.
3. :func:`apply_diff`: SWE-bench's fallbacks in order (``git apply --verbose``, ``--3way``,
   ``--reject``, ``patch --batch --forward --fuzz=5 -p1``, each from a pristine tree), then
   ``git apply --check --reverse`` ("already applied"). All fail: ``patch_successfully_applied``
   is False and no test runs.
4. The graded test files (:func:`graded_files`) are reset to the baseline (SWE-bench:
   ``git checkout <base> <test files>``; files the diff added there are removed) and
   ``test_patch`` is applied.
5. ``instance.test_cmd`` (pytest ``-rA``) runs under ``timeout`` with ``TZ=UTC PYTHONHASHSEED=0``;
   in an image with ``/opt/miniconda3/bin/activate``, after activating its conda env ``testbed``
   as SWE-bench's eval scripts do (:func:`grading_command`).
6. Statuses come from :func:`~agentenv.envs.swe.factory.parse_statuses` on the short test
   summary; :func:`eval_tests_report` has ``get_eval_tests_report``'s semantics: a FAIL_TO_PASS test
   passes iff PASSED or XFAIL; a PASS_TO_PASS test is maintained if PASSED, XFAIL or SKIPPED; a
   missing test fails; truncated parametrized ids prefix-match when the matches agree. The
   resolution is RESOLVED_FULL iff both rates are 1 (an empty list counts as 1),
   RESOLVED_PARTIAL when 0 < F2P < 1 and P2P == 1, else RESOLVED_NO; ``resolved`` iff FULL.

Where we differ from SWE-bench:

- Tampering scores 0: a diff that touches a graded test file, a ``conftest.py``, a pytest
  config file (``pytest.ini``, ``tox.ini``, ``setup.cfg``, ``pyproject.toml``), a ``.git``
  path or a ``.gitconfig`` (a config file the gold ``patch`` also changes is allowed) is
  ``resolved=False`` with ``tampered`` naming the files. The tests still run (with the graded
  files reset, so ``tests_status`` shows what the rest of the diff does) but ``f2p_fraction``
  and ``p2p_fraction`` are 0. Graded files changed *during* the test run also count as
  tampered.
- ``""`` (or whitespace) is ``patch_exists=False`` (SWE-bench: only ``None`` is), and a diff that
  names no file is reported unapplied without starting a sandbox (git apply and patch refuse
  such input anyway).
- A last fallback, ``patch … -p0``, applies diffs without ``a/``/``b/`` prefixes (``diff -u
  f.orig f``), which every SWE-bench fallback refuses.
- A test status other than a pass (XPASS, say) is a failure; SWE-bench leaves it in neither
  list. Only the text after the last ``short test summary info`` header is parsed, and a
  non-zero exit with no FAILED/ERROR line means the output does not describe the run
  (SWE-bench's HEAD check against fake PASSED lines).
- ``patch_successfully_applied`` means the diff applied. When the tests then time out or leave
  no parseable result, SWE-bench reports False; here it stays True and ``infra_failure_reason``
  says what happened (``tests_timed_out``, ``no_test_results``, ``exit_code_mismatch``; a
  patch can cause these, so ``infra_failure`` stays False, as SWE-bench's "ambiguous" tier).
  ``infra_failure`` is True only when the instance's own ``test_patch`` or test reset fails.
- pytest ``-rA`` prints skipped tests by location, not id, so a PASS_TO_PASS test that becomes
  skipped is missing and fails (as with SWE-bench's ``parse_log_pytest``, which drops those
  lines); SKIPPED counts as maintained for status maps that carry it.
- Image rows run on a read-only root with no network, no capabilities and the sandbox limits,
  as uid 0 (SWE-bench: root with the default capabilities), ``HOME=/tmp``; ``/testbed`` is a
  volume filled from the image, so writes outside it and ``/tmp`` fail. On a backend that runs no
  images (bwrap, unsafe-local) :func:`grade` raises :class:`GradingError`.
"""

from __future__ import annotations

import asyncio
import os
import posixpath
import re
import secrets
import shlex
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from agentenv.envs.swe.factory import Instance, parse_statuses
from agentenv.envs.swe.packages import fetch, package
from agentenv.sandbox import DockerSandbox, Limits, Sandbox

FAIL_TO_PASS, PASS_TO_PASS = "FAIL_TO_PASS", "PASS_TO_PASS"
FAIL_TO_FAIL, PASS_TO_FAIL = "FAIL_TO_FAIL", "PASS_TO_FAIL"
RESOLVED_FULL, RESOLVED_PARTIAL, RESOLVED_NO = "RESOLVED_FULL", "RESOLVED_PARTIAL", "RESOLVED_NO"
PASSING = ("PASSED", "XFAIL")
MAINTAINED = ("PASSED", "XFAIL", "SKIPPED")

APPLY_COMMANDS = (
    "git apply --verbose",
    "git apply --verbose --3way",
    "git apply --verbose --reject",
    "patch --batch --forward --fuzz=5 -p1 -i",
    "patch --batch --forward --fuzz=5 -p0 -i",
)
"""SWE-bench's ``GIT_APPLY_CMDS`` in its order, then ours (``-p0``); ``--3way`` only in a git repo."""

TEST_ENV = {"TZ": "UTC", "PYTHONHASHSEED": "0"}
"""The environment of grading runs (fixed time zone and hash seed: SWE-bench#602)."""

ENGINES = ("docker", "podman")
"""The backends that run images."""
TESTBED = "/testbed"
"""Where SWE-bench and SWE-smith images hold the repo."""
CONDA_ACTIVATE, CONDA_ENV = "/opt/miniconda3/bin/activate", "testbed"
"""The conda of SWE-bench images and the env their repo is installed in."""

HARNESS_FILES = frozenset(
    {"conftest.py", "pytest.ini", ".pytest.ini", "tox.ini", "setup.cfg", "pyproject.toml"}
)
"""File names that steer pytest: changing one is tampering (unless the gold patch does too)."""

LOG_CHARS = 10_000
"""Characters of output kept in :attr:`Report.log` (its tail)."""

_GIT = (
    "export GIT_CONFIG_GLOBAL=/dev/null GIT_CONFIG_NOSYSTEM=1 GIT_TERMINAL_PROMPT=0\n"
    "git() { command git -c user.name=agentenv -c user.email=agentenv@localhost "
    '-c commit.gpgsign=false -c core.hooksPath=/dev/null --literal-pathspecs "$@"; }\n'
)
"""The prelude of every script that runs git: no user/system config, no hooks, literal paths."""

_APPLY = """\
set -u
p=$(mktemp) || {{ rm -f -- {name}; exit 90; }}
trap 'rm -f -- "$p"' EXIT
mv -f -- {name} "$p" || exit 90
git=0
[ "$(git rev-parse --show-toplevel 2>/dev/null)" = "$PWD" ] && git=1
pristine=0
[ "$git" = 1 ] && [ -z "$(git status --porcelain 2>/dev/null)" ] && pristine=1
reset() {{ [ "$pristine" = 1 ] && {{ git reset -q --hard; git clean -fdq; }}; }}
while IFS= read -r cmd; do
  case "$cmd" in *--3way*) [ "$git" = 1 ] || continue ;; esac
  echo "+ $cmd"
  if $cmd "$p" </dev/null 2>&1; then echo ">>>>> Applied Patch ($cmd)"; exit 0; fi
  reset
done <<'EOF'
{commands}
EOF
if [ "$git" = 1 ] && git apply --check --reverse "$p" >/dev/null 2>&1; then
  echo ">>>>> Applied Patch (already applied)"; exit 0
fi
echo ">>>>> Patch Apply Failed"; exit 1
"""

_BASELINE = """\
fresh=0
[ -d .git ] || { git init -q . || exit 1; fresh=1; }
mkdir -p .git/info && printf '%s\\n' '__pycache__/' '*.py[co]' '.agentenv-*' >> .git/info/exclude
if [ "$fresh" = 1 ]; then git add -A -f . ; else git add -A . ; fi || exit 1
git commit -q --no-verify --allow-empty -m 'agentenv: baseline'
"""

_RESET = """\
for p in {paths}; do
  if git cat-file -e "HEAD:$p" 2>/dev/null; then git checkout --no-overlay -q HEAD -- "$p" || exit 1
  else rm -rf -- "$p"; fi
done
git clean -fdxq -- {paths}
"""

_HUNK = re.compile(r"^@@ -\d+(?:,(\d+))? \+\d+(?:,(\d+))? @@")
_CONTEXT_RANGE = re.compile(r"^\d+(?:,\d+)? (?:\*\*\*\*|----)\s*$")
_BINARY = re.compile(r"^Binary files (.+) and (.+) differ$")
_SUMMARY = re.compile(r"^=+ short test summary info =+$", re.M)
_ESCAPES = {"a": 7, "b": 8, "t": 9, "n": 10, "v": 11, "f": 12, "r": 13, '"': 34, "\\": 92}


class GradingError(RuntimeError):
    """The instance cannot be graded here (no test command, a bug patch that does not apply,
    an image the backend cannot host); no diff could change that."""


@dataclass
class Report:
    """What :func:`grade` found; :meth:`to_swebench` is SWE-bench's ``get_eval_report`` entry.

    - ``patch_is_None``: the diff was ``None``. ``patch_exists``: it was a non-blank string.
    - ``patch_successfully_applied``: one of :data:`APPLY_COMMANDS` applied it.
    - ``resolved``: RESOLVED_FULL and not tampered (the reward).
    - ``tampered``: graded test or harness files the diff touches or the test run changed.
    - ``tests_status``: SWE-bench's ``{"FAIL_TO_PASS": {"success": [...], "failure": [...]},
      "PASS_TO_PASS": ..., "FAIL_TO_FAIL": ..., "PASS_TO_FAIL": ...}`` (the last two empty);
      ``{}`` when no test result was parsed.
    - ``f2p_fraction``/``p2p_fraction``: the rates of the first two buckets (0 when tampered or
      nothing was parsed). ``resolution``: RESOLVED_FULL, RESOLVED_PARTIAL or RESOLVED_NO.
    - ``infra_failure``: the instance's test reset or ``test_patch`` failed (not the diff's
      fault). ``infra_failure_reason``: a code when the tests gave no usable result:
      ``tests_timed_out``, ``no_test_results``, ``exit_code_mismatch``, ``test_reset_failed``.
    - ``timed_out``: the test command ran past the timeout and was killed.
    - ``reason``: one sentence on the outcome. ``seconds``: wall time of the grading.
    - ``log``: the tail (:data:`LOG_CHARS`) of the test output, or of the apply log when the
      diff did not apply.
    """

    instance_id: str
    patch_is_None: bool = False
    patch_exists: bool = False
    patch_successfully_applied: bool = False
    resolved: bool = False
    tampered: list[str] = field(default_factory=list)
    tests_status: dict[str, dict[str, list[str]]] = field(default_factory=dict)
    f2p_fraction: float = 0.0
    p2p_fraction: float = 0.0
    resolution: str = RESOLVED_NO
    infra_failure: bool = False
    infra_failure_reason: str = ""
    timed_out: bool = False
    reason: str = ""
    seconds: float = 0.0
    log: str = ""

    def to_swebench(self) -> dict[str, dict[str, object]]:
        """``{instance_id: {...}}`` with the keys of SWE-bench's ``get_eval_report``."""
        entry: dict[str, object] = {
            "patch_is_None": self.patch_is_None,
            "patch_exists": self.patch_exists,
            "patch_successfully_applied": self.patch_successfully_applied,
            "resolved": self.resolved,
            "infra_failure": self.infra_failure,
        }
        if self.infra_failure_reason:
            entry["infra_failure_reason"] = self.infra_failure_reason
        if self.tests_status:
            entry["tests_status"] = self.tests_status
        return {self.instance_id: entry}


# Diff paths


def touched_files(diff: str) -> list[str]:
    """The paths ``diff`` changes, in order: ``a/``/``b/`` prefixes stripped, ``/dev/null``
    left out, both sides of renames and copies, git-quoted names unquoted, normalized."""
    return [path for path in dict.fromkeys(map(_strip_ab, _diff_paths(diff))) if path]


def graded_files(instance: Instance) -> list[str]:
    """Paths whose content grading fixes: ``test_dir``, the files of ``test_patch``, and the
    test files named by FAIL_TO_PASS/PASS_TO_PASS ids (``test_*.py``, ``*_test.py`` or under a
    ``test``/``tests``/``testing`` folder: a doctest id names a source file, which is not)."""
    paths = {_normal(instance.test_dir)} if instance.test_dir.strip("/.") else set()
    paths |= set(touched_files(instance.test_patch))
    for test in [*instance.FAIL_TO_PASS, *instance.PASS_TO_PASS]:
        if "::" in test and _is_test_file(file := _normal(test.split("::", 1)[0])):
            paths.add(file)
    return sorted(p for p in paths if p)


def tampered_files(instance: Instance, diff: str) -> list[str]:
    """The files ``diff`` touches that are graded tests (:func:`graded_files`) or steer the test
    run (:data:`HARNESS_FILES`, ``.git`` paths, ``.gitconfig``; not those the gold ``patch``
    changes). Each name is checked as :func:`touched_files` gives it, as written and with its
    first component stripped (how ``-p0`` and ``-p1`` would apply it); the first form that
    matches is listed."""
    graded = graded_files(instance)
    allowed = set(touched_files(instance.patch))
    found: set[str] = set()
    for raw in _diff_paths(diff):
        forms = [_strip_ab(raw), _normal(raw), _normal(raw.partition("/")[2])]
        forms = [form for form in dict.fromkeys(forms) if form]
        steering = not allowed.intersection(forms)
        hits = [f for f in forms if _under(f, graded) or (steering and _steers_tests(f))]
        if hits:
            found.add(hits[0])
    return sorted(found)


def _diff_paths(diff: str) -> list[str]:
    """Every file name in the headers of ``diff`` (unified, context or git), hunks skipped."""
    found: dict[str, None] = {}
    old = new = 0
    for line in diff.split("\n"):
        line = line.removesuffix("\r")
        if (old > 0 or new > 0) and line[:1] in ("", " ", "-", "+", "\\"):
            tag = line[:1]
            old -= tag in ("", " ", "-")
            new -= tag in ("", " ", "+")
            continue
        old = new = 0
        hunk = _HUNK.match(line)
        if hunk:
            old, new = int(hunk.group(1) or 1), int(hunk.group(2) or 1)
            continue
        for name in _header_names(line):
            if name and name != "/dev/null":
                found[name] = None
    return list(found)


def _header_names(line: str) -> list[str]:
    """The file names a diff header line gives (none for other lines)."""
    for prefix in ("--- ", "+++ ", "*** "):
        if line.startswith(prefix):
            rest = line[len(prefix) :]
            return [] if prefix != "+++ " and _CONTEXT_RANGE.match(rest) else _names(rest)
    if line.startswith("diff --git "):
        return [_unquote(name) for name in _git_pair(line[len("diff --git ") :])]
    for prefix in ("rename from ", "rename to ", "copy from ", "copy to ", "Index: "):
        if line.startswith(prefix):
            return [_unquote(line[len(prefix) :].strip())]
    binary = _BINARY.match(line)
    return [_unquote(name) for name in binary.groups()] if binary else []


def _names(rest: str) -> list[str]:
    """A ``---``/``+++``/``***`` header's name: up to a tab (a date follows); without a tab
    also up to the first blank, as GNU patch may read it."""
    if rest.startswith('"'):
        end = _closing_quote(rest)
        return [_unquote(rest[: end + 1])] if end > 0 else [rest]
    name = rest.split("\t", 1)[0]
    return [name] if "\t" in rest or " " not in name else [name, name.split(" ", 1)[0]]


def _git_pair(rest: str) -> list[str]:
    """The two names of a ``diff --git A B`` line (``A == B`` but for the prefix, or quoted)."""
    if rest.startswith('"'):
        end = _closing_quote(rest)
        if end > 0:
            return [rest[: end + 1], rest[end + 1 :].strip()]
    half = len(rest) // 2
    if rest[half : half + 1] == " " and rest[2:half] == rest[half + 3 :]:
        return [rest[:half], rest[half + 1 :]]
    split = rest.find(" b/")
    return [rest[:split], rest[split + 1 :]] if split > 0 else rest.split(" ", 1)


def _closing_quote(text: str) -> int:
    """The index of the quote that closes the one ``text`` starts with (-1: none)."""
    i = 1
    while i < len(text):
        if text[i] == "\\":
            i += 2
        elif text[i] == '"':
            return i
        else:
            i += 1
    return -1


def _unquote(name: str) -> str:
    """A git C-quoted name (``"a/\\303\\251.py"``) as text; other names as they are."""
    if len(name) < 2 or name[0] != '"' or name[-1] != '"':
        return name
    body, out, i = name[1:-1], bytearray(), 0
    while i < len(body):
        octal = body[i + 1 : i + 4]
        if body[i] == "\\" and body[i + 1 : i + 2] in _ESCAPES:
            out.append(_ESCAPES[body[i + 1]])
            i += 2
        elif body[i] == "\\" and len(octal) == 3 and all(c in "01234567" for c in octal):
            out.append(int(octal, 8) & 0xFF)
            i += 4
        else:
            out += body[i].encode("utf-8", "surrogatepass")
            i += 1
    return out.decode("utf-8", "replace")


def _strip_ab(name: str) -> str:
    return _normal(name[2:] if name.startswith(("a/", "b/")) else name)


def _normal(path: str) -> str:
    """``path`` relative and normalized (``""`` for the root or nothing)."""
    path = posixpath.normpath(path.strip().lstrip("/")) if path.strip() else ""
    return "" if path == "." else path


def _under(path: str, tops: Iterable[str]) -> bool:
    return any(path == top or path.startswith(top + "/") for top in tops)


def _is_test_file(path: str) -> bool:
    name = posixpath.basename(path)
    folders = path.split("/")[:-1]
    return (
        name.startswith("test_")
        or name.endswith("_test.py")
        or any(f in ("test", "tests", "testing") for f in folders)
    )


def _steers_tests(path: str) -> bool:
    parts = path.split("/")
    return parts[-1] in HARNESS_FILES or parts[-1] == ".gitconfig" or ".git" in parts


# Test results


def eval_tests_report(
    statuses: Mapping[str, str], fail_to_pass: Sequence[str], pass_to_pass: Sequence[str]
) -> dict[str, dict[str, list[str]]]:
    """SWE-bench's ``get_eval_tests_report`` (pass-and-fail) of ``{test id: status}``."""
    report: dict[str, dict[str, list[str]]] = {
        key: {"success": [], "failure": []}
        for key in (FAIL_TO_PASS, PASS_TO_PASS, FAIL_TO_FAIL, PASS_TO_FAIL)
    }
    for key, tests, good in (
        (FAIL_TO_PASS, fail_to_pass, PASSING),
        (PASS_TO_PASS, pass_to_pass, MAINTAINED),
    ):
        for test in tests:
            bucket = "success" if _status(test, statuses) in good else "failure"
            report[key][bucket].append(test)
    return report


def rate(bucket: Mapping[str, Sequence[str]]) -> float:
    """The success rate of one ``tests_status`` bucket (1.0 when it is empty, as SWE-bench)."""
    total = len(bucket["success"]) + len(bucket["failure"])
    return len(bucket["success"]) / total if total else 1.0


def resolution_status(f2p: float, p2p: float) -> str:
    """SWE-bench's ``get_resolution_status`` of the two rates."""
    if f2p == 1 and p2p == 1:
        return RESOLVED_FULL
    if 0 < f2p < 1 and p2p == 1:
        return RESOLVED_PARTIAL
    return RESOLVED_NO


def _status(test: str, statuses: Mapping[str, str]) -> str | None:
    """The status of ``test``; else of the keys that extend it (``-rA`` appends ``" - reason"``
    to XFAIL lines; SWE-bench Verified truncates some parametrized ids) if they agree."""
    if test in statuses:
        return statuses[test]
    truncated = test.count("[") > test.count("]")
    matches = [
        key
        for key in statuses
        if key.startswith(test + " - ") or (truncated and key.startswith(test))
    ]
    if matches and len({statuses[key] in PASSING for key in matches}) == 1:
        return statuses[matches[0]]
    return None


def summary_statuses(output: str) -> dict[str, str]:
    """:func:`~agentenv.envs.swe.factory.parse_statuses` of the text after the last ``short
    test summary info`` header (all of ``output`` without one), so lines a test prints earlier
    do not count."""
    headers = list(_SUMMARY.finditer(output))
    return parse_statuses(output[headers[-1].end() :] if headers else output)


# Sandbox steps


async def prepare_workspace(
    sb: Sandbox, instance: Instance, cache: str | os.PathLike[str] | None = None
) -> None:
    """Put the instance's buggy tree at the sandbox's workspace root.

    A factory instance: the clean sdist tree (:func:`~agentenv.envs.swe.packages.fetch`) is
    copied in and ``bug_patch`` applied. A loaded row: the image holds the repo (SWE-bench rows
    are buggy as they are; SWE-smith rows' bug, their ``patch``, is ``bug_patch`` and is
    applied), so ``sb`` must be a sandbox of :func:`instance_sandbox` (:func:`check_image_host`).
    Raises :class:`GradingError` when ``sb`` cannot host the image or the bug patch does not
    apply.
    """
    if instance.package:
        await _copy_package(sb, instance, cache)
    elif instance.image:
        check_image_host(sb, instance)
    else:
        raise GradingError(f"{instance.instance_id}: neither a package nor an image to build on")
    if instance.bug_patch:
        applied, log = await apply_diff(sb, instance.bug_patch)
        if not applied:
            raise GradingError(
                f"{instance.instance_id}: the bug patch does not apply:\n{log[-2000:]}"
            )


async def _copy_package(
    sb: Sandbox, instance: Instance, cache: str | os.PathLike[str] | None
) -> None:
    pinned = package(instance.package).sha256
    if instance.sdist_sha256 and instance.sdist_sha256 != pinned:
        raise GradingError(
            f"{instance.instance_id} was built on the {instance.package} sdist "
            f"{instance.sdist_sha256}, but the pinned one is {pinned}: rebuild the instances"
        )
    root = await asyncio.to_thread(fetch, instance.package, cache)
    await sb.copy_in(root, ".")
    await sb.run("rm -f .agentenv-complete")


def instance_sandbox(
    instance: Instance, backend: str, limits: Limits, env: Mapping[str, str]
) -> Sandbox:
    """A new (not started) sandbox of ``backend`` for ``instance``, with ``env``.

    For an instance with an ``image``: a container of that image whose workspace is the image's
    own ``/testbed`` (``workdir="/testbed", workspace="image"``: the repo, its conda env and
    editable install stay where the image has them). Raises :class:`GradingError` when
    ``backend`` runs no images (only docker and podman do).
    """
    if not instance.image:
        return Sandbox.create(backend, limits=limits, env=env)
    if backend not in ENGINES:
        raise GradingError(_no_image_backend(instance, backend))
    options = {"image": instance.image, "workdir": TESTBED, "workspace": "image"}
    return Sandbox.create(backend, limits=limits, env=env, **options)


def check_image_host(sb: Sandbox, instance: Instance) -> None:
    """Raise :class:`GradingError` unless ``sb`` hosts the image's ``/testbed`` as its
    workspace (a sandbox :func:`instance_sandbox` made)."""
    if sb.backend not in ENGINES:
        raise GradingError(_no_image_backend(instance, sb.backend))
    if not (isinstance(sb, DockerSandbox) and sb.workspace == "image" and sb.workdir == TESTBED):
        raise GradingError(
            f"{instance.instance_id}: the image {instance.image!r} holds the repo at {TESTBED} "
            f"(its conda env and editable install point there), but this {sb.backend} "
            f"sandbox's workspace is {sb.workdir} and not the image's own: create it with "
            f"workdir={TESTBED!r}, workspace='image' (instance_sandbox does)"
        )


def _no_image_backend(instance: Instance, backend: str) -> str:
    return (
        f"{instance.instance_id}: the repo is in the image {instance.image!r}; only the docker "
        f"and podman backends run images, not {backend!r} (set the env's or service's "
        "backend to docker or podman where an engine runs)"
    )


def grading_command(instance: Instance) -> str:
    """The command that runs ``instance``'s tests: ``test_cmd``; for an image row, after
    activating the conda env ``testbed`` when the image has :data:`CONDA_ACTIVATE` (SWE-bench's
    eval scripts do ``source /opt/miniconda3/bin/activate && conda activate testbed``), so
    images without conda (some SWE-smith ones) run it as it is."""
    if not instance.image:
        return instance.test_cmd
    activate = shlex.quote(CONDA_ACTIVATE)
    return (
        f"if [ -f {activate} ]; then\n"
        f"  source {activate} && conda activate {CONDA_ENV} || "
        f"{{ echo 'agentenv: could not activate the conda env {CONDA_ENV}' >&2; exit 2; }}\n"
        f"fi\n{instance.test_cmd}"
    )


async def git_baseline(sb: Sandbox) -> None:
    """Commit the workspace as it is (``git init`` first unless it is a repo), so that
    :func:`workspace_diff` and the test reset have a base; ``__pycache__`` and ``*.pyc`` are
    excluded from what comes after."""
    result = await sb.run(_GIT + _BASELINE)
    if result.returncode != 0:
        raise GradingError(f"git baseline failed:\n{result.output[-2000:]}")


async def workspace_diff(sb: Sandbox) -> str:
    """The workspace's changes since :func:`git_baseline` as a git diff: new files included,
    binary files as git binary patches, no renames (what :func:`grade` takes)."""
    name = f".agentenv-diff-{secrets.token_hex(8)}"
    command = (
        "git add -A -N . && git -c core.quotepath=off diff --binary --no-color --no-ext-diff "
        f"--no-textconv --no-renames HEAD > {name}"
    )
    result = await sb.run(_GIT + command)
    try:
        if result.returncode != 0:
            raise GradingError(f"git diff failed (no git_baseline?):\n{result.output[-2000:]}")
        return (await sb.read_bytes(name)).decode("utf-8", "surrogateescape")
    finally:
        await sb.run(f"rm -f -- {name}")


async def apply_diff(sb: Sandbox, diff: str) -> tuple[bool, str]:
    """Apply ``diff`` at the workspace root with :data:`APPLY_COMMANDS` in order; ``(applied,
    log)``. Never raises for a bad diff. The diff goes to a dot-file that the same command
    moves to ``/tmp`` before anything is applied, so it never lands in the tree. In a git repo
    whose tree is clean, a failed attempt is undone before the next and after the last."""
    name = f".agentenv-diff-{secrets.token_hex(8)}"
    try:
        await sb.write_file(name, _encode(diff))
    except OSError as exc:
        return False, f"could not write the diff into the sandbox: {exc}"
    script = _APPLY.format(name=shlex.quote(name), commands="\n".join(APPLY_COMMANDS))
    result = await sb.run(_GIT + script)
    if result.timed_out:
        return False, result.output + "\n>>>>> Patch Apply Failed (timed out)"
    return result.returncode == 0, result.output


def _encode(text: str) -> bytes:
    try:
        return text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return text.encode("utf-8", "replace")


# Grading


async def grade(
    instance: Instance,
    diff: str | None,
    *,
    backend: str = "bwrap",
    cache: str | os.PathLike[str] | None = None,
    timeout: float = 300.0,
    limits: Limits | None = None,
) -> Report:
    """Grade ``diff`` (the agent's change of the buggy tree) in a fresh sandbox.

    ``backend``: the sandbox backend (an instance with an ``image`` needs ``"docker"`` or
    ``"podman"``); ``timeout``: seconds of the test run; ``limits``: those of the sandbox
    (default: 120 s per other command, output kept up to 4 Mi characters). Raises
    :class:`GradingError` when the instance cannot be graded here (before any sandbox starts
    when the backend runs no images).
    """
    start = time.monotonic()
    report = Report(instance.instance_id)
    if diff is None:
        report.patch_is_None, report.reason = True, "no diff was submitted (None)"
    elif not diff.strip():
        report.reason = "the diff is empty"
    elif not touched_files(diff):
        report.patch_exists, report.reason = True, "the diff names no file to change"
    else:
        report.patch_exists = True
        await _grade_in_sandbox(report, instance, diff, backend, cache, timeout, limits)
    report.seconds = time.monotonic() - start
    return report


async def _grade_in_sandbox(
    report: Report,
    instance: Instance,
    diff: str,
    backend: str,
    cache: str | os.PathLike[str] | None,
    timeout: float,
    limits: Limits | None,
) -> None:
    if not instance.test_cmd:
        raise GradingError(f"{instance.instance_id}: no test_cmd to run")
    report.tampered = tampered_files(instance, diff)
    sb = instance_sandbox(instance, backend, limits or _limits(timeout), TEST_ENV)
    async with sb:
        await prepare_workspace(sb, instance, cache)
        await git_baseline(sb)
        report.patch_successfully_applied, log = await apply_diff(sb, diff)
        if not report.patch_successfully_applied:
            report.reason, report.log = "the diff does not apply", log[-LOG_CHARS:]
            return
        failure = await _reset_tests(sb, instance)
        if failure:
            report.infra_failure, report.infra_failure_reason = True, "test_reset_failed"
            report.reason, report.log = "the graded tests could not be reset", failure
            return
        result = await sb.run(grading_command(instance), timeout=timeout)
        changed = await _changed_during_run(sb, graded_files(instance))
    report.tampered = sorted({*report.tampered, *changed})
    report.log = result.output[-LOG_CHARS:]
    if result.timed_out:
        report.timed_out, report.infra_failure_reason = True, "tests_timed_out"
        report.reason = f"the test command ran past {timeout:g} s and was killed"
        return
    _score(report, instance, summary_statuses(result.output), result.returncode)


def _limits(timeout: float) -> Limits:
    return Limits(timeout=120.0, cpu_seconds=int(max(timeout, 120.0)) + 1, max_output=1 << 22)


async def _reset_tests(sb: Sandbox, instance: Instance) -> str:
    """Reset the graded files to the baseline, then apply ``test_patch``; the log if it failed."""
    quoted = " ".join(shlex.quote(p) for p in graded_files(instance))
    if quoted:
        result = await sb.run(_GIT + _RESET.format(paths=quoted))
        if result.returncode != 0:
            return result.output[-LOG_CHARS:]
    if instance.test_patch:
        applied, log = await apply_diff(sb, instance.test_patch)
        if not applied:
            return log[-LOG_CHARS:]
    if quoted:  # commit the state the test run must leave alone
        commit = f"git add -A -f -- {quoted} && git commit -q --no-verify --allow-empty -m tests"
        result = await sb.run(_GIT + commit)
        if result.returncode != 0:
            return result.output[-LOG_CHARS:]
    return ""


async def _changed_during_run(sb: Sandbox, paths: list[str]) -> list[str]:
    """Graded files the test run changed, added or deleted (``git status`` of ``paths``)."""
    if not paths:
        return []
    quoted = " ".join(shlex.quote(p) for p in paths)
    result = await sb.run(_GIT + f"git -c core.quotepath=off status --porcelain -- {quoted}")
    return sorted({_unquote(line[3:]) for line in result.output.splitlines() if len(line) > 3})


def _score(report: Report, instance: Instance, statuses: dict[str, str], returncode: int) -> None:
    """Fill in the test results, fractions, resolution and reason from parsed statuses."""
    if not statuses:
        report.infra_failure_reason = "no_test_results"
        report.reason = "the test command printed no test result"
        return
    if returncode != 0 and not {"FAILED", "ERROR"} & set(statuses.values()):
        report.infra_failure_reason = "exit_code_mismatch"
        report.reason = f"the tests exited {returncode} but report no failure"
        return
    report.tests_status = eval_tests_report(statuses, instance.FAIL_TO_PASS, instance.PASS_TO_PASS)
    f2p, p2p = rate(report.tests_status[FAIL_TO_PASS]), rate(report.tests_status[PASS_TO_PASS])
    if report.tampered:
        report.reason = f"tampered with graded test or harness files {report.tampered}: scored 0"
        return
    report.f2p_fraction, report.p2p_fraction = f2p, p2p
    report.resolution = resolution_status(f2p, p2p)
    report.resolved = report.resolution == RESOLVED_FULL
    passed = report.tests_status[FAIL_TO_PASS]["success"]
    kept = report.tests_status[PASS_TO_PASS]["success"]
    report.reason = (
        f"{report.resolution}: {len(passed)}/{len(instance.FAIL_TO_PASS)} FAIL_TO_PASS tests "
        f"pass, {len(kept)}/{len(instance.PASS_TO_PASS)} PASS_TO_PASS tests still pass"
    )
