"""SWEEnv: fix a bug in a real Python repository inside a sandbox, graded as SWE-bench grades
(``swe-v0``).

Each episode holds one session of the ``swe`` service (:mod:`.server`): a sandboxed workspace
with the instance's buggy repository, committed to git as the baseline. The agent reads the
problem statement (built from the failing tests), explores and edits with tools, and submits;
the submitted diff is graded in a fresh sandbox (:func:`agentenv.envs.swe.grading.grade`).

Two protocols:

- ``native`` (default): tools ``bash``, ``str_replace_editor`` and ``submit``
  (:mod:`agentenv.envs.swe.tools`) as OpenAI function schemas; a message that calls no tool is an
  invalid action (the episode ends by ``submit``, or by the turn budget);
- ``text``: mini-swe-agent's (arXiv 2405.15793's successor, ``swebench_backticks``): exactly one
  fenced ``bash`` block per message, run in a fresh subshell; the episode ends when a command's
  output starts with the line ``COMPLETE_TASK_AND_SUBMIT_FINAL_OUTPUT`` (return code 0), and the
  rest of the output is the submitted diff.

Reward: ``outcome`` = 1 iff the submission resolves the instance (every FAIL_TO_PASS and
PASS_TO_PASS test passes, SWE-bench's ``RESOLVED_FULL``). Reported in ``reward_components``:

- every turn: ``valid`` (the action parsed and its calls ran), ``ran_tests`` (a command of the
  turn ran pytest), ``tests_progress`` (from the agent's own test runs: the fraction of
  FAIL_TO_PASS tests its latest test output shows passing, 0 if that output shows a
  PASS_TO_PASS test failing; carried between runs);
- last turn: ``level``, the end state graded as G-RA does (arXiv 2508.10548): 0 no submission
  (or a diff touching the graded tests), 1/3 an empty patch or one that does not apply, 2/3 a
  patch that fails the tests, 1 a patch that passes; ``f2p_fraction``, ``p2p_fraction``,
  ``f2p_gated`` (``f2p_fraction`` if every PASS_TO_PASS test passes, else 0), ``applied``,
  ``tampered``, ``submitted``.

The anchor (GiGPO) is the workspace's diff digest and the kind of the last command (view, edit,
test, run, other): equal when two episodes of one task hold the same code and just did the same
kind of thing.
"""

from __future__ import annotations

import re
from collections.abc import Hashable, Sequence
from dataclasses import asdict
from typing import Any, ClassVar, Literal

from agentenv.env import (
    ACTION_VALID,
    ANCHOR,
    GROUND_TRUTH,
    MESSAGES,
    REWARD_COMPONENTS,
    SPLIT_OPTION,
    TASK_ID,
    TASK_OPTION,
    TOOL_CALLS,
)
from agentenv.envs.swe.factory import Instance, parse_statuses
from agentenv.envs.swe.server import GRADE_CACHE
from agentenv.envs.swe.tasks import SWETasks, instance_set
from agentenv.envs.swe.tools import BASH, EDITOR, SUBMIT, TOOLS
from agentenv.envs.tooluse.base import Outcome, Protocol, ToolEnv, ToolError
from agentenv.launch import connect
from agentenv.retry import RetryPolicy
from agentenv.service import ServiceClient
from agentenv.sessions import ServiceSession, SessionHolder
from agentenv.toolcalls import ToolCall

SERVICE_FACTORY = "agentenv.envs.swe.server:create_app"
SUBMIT_MARKER = "COMPLETE_TASK_AND_SUBMIT_FINAL_OUTPUT"
LEVELS = {"none": 0.0, "empty": 1 / 3, "fails": 2 / 3, "passes": 1.0}
"""G-RA's graded end states (``level``)."""

NATIVE_PROMPT = """\
You are a software engineer. A Python repository at {workdir} has a bug: some of its tests fail. \
Find the bug in the library code and fix it with the tools, then call submit.
- bash runs one command in a fresh subshell at {workdir} (cd and variables do not persist).
- str_replace_editor views, creates and edits files.
- Run the failing tests to check your fix: `python -m pytest -rA <test ids>`.
- Do not change the tests: a change to a graded test file scores 0.
- submit sends the workspace's changes (its git diff) for grading and ends the task."""

TEXT_PROMPT = """\
You are a software engineer. A Python repository at {workdir} has a bug: some of its tests fail. \
Find the bug in the library code and fix it.

Every reply has a short THOUGHT and then EXACTLY ONE bash code block with one command (chain \
commands with && or ||):

THOUGHT: why this command
```bash
your command here
```

Each command runs in a fresh subshell at {workdir}: cd and variables do not persist. Edit files \
with commands (sed -i, python, cat <<'EOF' > file). Run the failing tests with \
`python -m pytest -rA <test ids>`. Do not change the tests: a change to a graded test file scores 0.
When the fix is done, submit it, alone in its command:

```bash
echo {marker} && git add -A && git diff --cached
```"""

_BASH_BLOCK = re.compile(r"```bash\s*\n(.*?)\n```", re.DOTALL)
_VERBOSE = re.compile(r"^(\S+::\S+)\s+(PASSED|FAILED|ERROR|SKIPPED|XFAIL|XPASS)\b", re.M)
_VIEW = re.compile(
    r"^\s*(cat|head|tail|sed -n|grep|rg|ls|find|nl|wc|less|git (diff|status|log|show))\b"
)
_RUN = re.compile(r"^\s*(python3?|bash|sh)\b")
_TEST = re.compile(r"\b(pytest|unittest|tox)\b")


def command_kind(name: str, arguments: dict[str, Any]) -> str:
    """What a call does, for the anchor: ``view``, ``edit``, ``test``, ``run`` or ``other``."""
    if name == EDITOR.name:
        return "view" if arguments.get("command") == "view" else "edit"
    command = str(arguments.get("command", "")) if name == BASH.name else ""
    if _TEST.search(command):
        return "test"
    if _VIEW.match(command):
        return "view"
    if re.search(r"\bsed -i\b|>\s*\S", command):
        return "edit"
    return "run" if _RUN.match(command) else "other"


def reported_statuses(output: str) -> dict[str, str]:
    """Per-test statuses a pytest output shows: ``-rA`` summary lines and ``-v`` lines."""
    statuses = {test: status for test, status in _VERBOSE.findall(output)}
    return {**statuses, **parse_statuses(output)}


def progress_from_tests(instance: Instance, output: str) -> float | None:
    """The fraction of FAIL_TO_PASS tests ``output`` shows passing, 0 if it shows a
    PASS_TO_PASS test failing; ``None`` when it shows none of the instance's tests."""
    statuses = reported_statuses(output)
    seen = [t for t in (*instance.FAIL_TO_PASS, *instance.PASS_TO_PASS) if t in statuses]
    if not seen:
        return None
    if any(
        statuses[t] not in ("PASSED", "XFAIL", "SKIPPED")
        for t in instance.PASS_TO_PASS
        if t in statuses
    ):
        return 0.0
    passed = sum(statuses.get(t) in ("PASSED", "XFAIL") for t in instance.FAIL_TO_PASS)
    return passed / max(1, len(instance.FAIL_TO_PASS))


def level(report: dict[str, Any] | None, submission: str | None) -> float:
    """G-RA's end-state level of a submission and its grading report."""
    if submission is None or report is None or report["tampered"]:
        return LEVELS["none"]
    if not submission.strip() or not report["patch_successfully_applied"]:
        return LEVELS["empty"]
    return LEVELS["passes"] if report["resolved"] else LEVELS["fails"]


class SWEEnv(SessionHolder, ToolEnv):
    """Bug fixing in a sandboxed repository, SWE-bench-graded (see the module docstring).

    Args:
        service: where the SWE service runs: ``None`` (in-process), ``"local"`` (a uvicorn
            subprocess on 127.0.0.1) or base URL(s) of ``agentenv serve swe``.
        split: ``"train"``, ``"test"`` or ``"all"``: what the seed draws from when reset gets no
            ``options={"split": ...}``.
        packages, per_package, seed, families, bugs, instances, test_fraction: the task set
            (:class:`~agentenv.envs.swe.tasks.SWETasks`): bugs built by the factory from these
            packages, or the instances of a SWE-bench/SWE-smith/agentenv JSONL file.
        backend, grade_cache: the service's sandbox backend (``bwrap``; ``docker``/``podman``
            where an engine runs) and its cache of grading reports (0: grade every submission);
            they configure an in-process or ``"local"`` service, a remote one has its own.
        protocol: ``"native"`` (tools) or ``"text"`` (mini-swe-agent's bash blocks).
        max_turns: agent turns before the episode is truncated (and graded as unsubmitted).
        max_calls_per_turn, max_argument_chars, max_result_chars, tool_timeout:
            :class:`~agentenv.envs.tooluse.base.ToolEnv`'s knobs.
        timeout: seconds per service call (a grading runs the whole suite: keep it above the
            service's ``grade_timeout``).
    """

    description = "Fix a bug in a real Python package in a sandbox (SWE-bench grading)"
    turn_tokens: ClassVar[int] = 4096
    context_tokens: ClassVar[int] = 65536
    ends_on_reply: ClassVar[bool] = False
    no_call_message: ClassVar[str] = (
        "your message called no tool; work with bash and str_replace_editor, and call submit "
        "when the fix is done"
    )
    reward_components: ClassVar[tuple[str, ...]] = (
        "valid", "ran_tests", "tests_progress", "outcome", "level", "f2p_fraction",
        "p2p_fraction", "f2p_gated", "applied", "tampered", "submitted",
    )  # fmt: skip
    transient_attributes: ClassVar[tuple[str, ...]] = ("_client", "_session")

    def __init__(
        self,
        *,
        service: str | list[str] | None = None,
        split: Literal["train", "test", "all"] = "train",
        packages: Sequence[str] = SWETasks.packages,
        per_package: int = SWETasks.per_package,
        seed: int = SWETasks.seed,
        families: Sequence[str] | None = SWETasks.families,
        bugs: int = SWETasks.bugs,
        instances: str | None = SWETasks.instances,
        test_fraction: float = SWETasks.test_fraction,
        backend: str = "bwrap",
        grade_cache: int = GRADE_CACHE,
        protocol: Protocol = "native",
        max_turns: int = 30,
        max_calls_per_turn: int = 4,
        max_argument_chars: int = 65_536,
        max_result_chars: int = 16_384,
        tool_timeout: float = 330.0,
        timeout: float = 360.0,
        render_mode: str | None = None,
    ) -> None:
        super().__init__(
            protocol=protocol,
            max_turns=max_turns,
            max_calls_per_turn=max_calls_per_turn,
            max_argument_chars=max_argument_chars,
            max_result_chars=max_result_chars,
            tool_timeout=tool_timeout,
            render_mode=render_mode,
        )
        self.tasks = SWETasks(
            tuple(packages),
            per_package,
            seed,
            None if families is None else tuple(families),
            bugs,
            instances,
            test_fraction,
        )
        self.check_split(split)
        self.split = split
        self.service = service
        self.service_config = {"backend": backend, "grade_cache": grade_cache}
        self.retry = RetryPolicy(timeout=timeout)
        self.task: Instance | None = None
        self._reset_episode()

    def _reset_episode(self) -> None:
        self.submission: str | None = None
        self.report: dict[str, Any] | None = None
        self._state = ""
        self._kind = ""
        self._progress = 0.0
        self._ran_tests = False

    # -- tasks --------------------------------------------------------------------------------
    def _split_ids(self) -> dict[str, list[str]]:
        return instance_set(self.tasks).splits

    def splits(self) -> dict[str, int | None]:
        """``train``, ``test`` (a deterministic share of the instances) and ``all``."""
        return {name: len(ids) for name, ids in self._split_ids().items()}

    def task_ids(self, split: str) -> list[str]:
        self.check_split(split)
        return list(self._split_ids()[split])

    def get_task(self, task: str | Instance) -> Instance:
        """The instance named ``task`` (an :class:`Instance` is returned as is)."""
        if isinstance(task, Instance):
            return task
        by_id = instance_set(self.tasks).by_id
        if task not in by_id:
            raise KeyError(f"no SWE instance {task!r} in this task set ({len(by_id)} instances)")
        return by_id[task]

    # -- service ------------------------------------------------------------------------------
    async def _connect(self) -> ServiceClient:
        if self._client is None:
            self._client = await connect(
                SERVICE_FACTORY, self.service, config=self.service_config, retry=self.retry
            )
        return self._client

    async def _open_session(self) -> ServiceSession:
        assert self.task is not None
        session = await ServiceSession.open(await self._connect())
        body = await session.reset({"instance": asdict(self.task)})
        self._state, self.workdir = body["state"], body["workdir"]
        self._session = session
        return session

    async def _live_session(self) -> ServiceSession:
        if self._session is None:
            raise ToolError("the workspace of this episode is gone; reset the env")
        return self._session

    # -- episode ------------------------------------------------------------------------------
    def anchor(self) -> Hashable:
        return (self._state, self._kind)

    async def _areset(self, *, seed: int | None, options: dict[str, Any]) -> tuple[str, dict]:
        task = options.get(TASK_OPTION)
        split = options.get(SPLIT_OPTION) or self.split
        if task is not None:
            self.task = self.get_task(task)
        else:
            self.task = self.get_task(self.task_ids(split)[self.draw_index(split)])
        await self._release()
        self._reset_episode()
        await self._open_session()
        info = {
            TASK_ID: self.task.instance_id,
            GROUND_TRUTH: {
                "patch": self.task.patch,
                "FAIL_TO_PASS": self.task.FAIL_TO_PASS,
                "PASS_TO_PASS": self.task.PASS_TO_PASS,
            },
            ANCHOR: self.anchor(),
        }
        if self.protocol == "text":
            system = TEXT_PROMPT.format(workdir=self.workdir, marker=SUBMIT_MARKER)
            info = self.begin([], system, info)
        else:
            info = self.begin(TOOLS, NATIVE_PROMPT.format(workdir=self.workdir), info)
        return self._prompt(), info

    def _prompt(self) -> str:
        assert self.task is not None
        return (
            f"{self.task.problem_statement.rstrip()}\n\nThe repository is at {self.workdir}. "
            "Fix the library code so that these tests pass without breaking the others."
        )

    async def _astep(self, action: str) -> tuple[str, float, bool, bool, dict]:
        self._ran_tests = False
        if self.protocol == "text":
            out = await self._text_step(action)
        else:
            out = await super()._astep(action)
        info = out[4]
        info[REWARD_COMPONENTS] = {
            "valid": float(bool(info[ACTION_VALID])),
            "ran_tests": float(self._ran_tests),
            "tests_progress": self._progress,
            **info[REWARD_COMPONENTS],
        }
        info[ANCHOR] = self.anchor()
        return out

    async def call_tool(self, call: ToolCall) -> str:
        session = await self._live_session()
        reply = await session.step({"name": call.name, "arguments": call.arguments})
        self._after(call.name, call.arguments, reply)
        if not reply["ok"]:
            raise ToolError(reply["error"])
        if call.name == SUBMIT.name:
            self.submission, self.finished = reply["content"], True
            return "Submitted for grading."
        return reply["content"]

    def _after(self, name: str, arguments: dict[str, Any], reply: dict[str, Any]) -> None:
        """Track the workspace state, the command kind and the agent's own test results."""
        self._state = reply["state"]
        self._kind = command_kind(name, arguments)
        if self._kind == "test":
            self._ran_tests = True
            assert self.task is not None
            progress = progress_from_tests(self.task, reply.get("output", ""))
            if progress is not None:
                self._progress = progress

    # -- the text protocol --------------------------------------------------------------------
    async def _text_step(self, action: str) -> tuple[str, float, bool, bool, dict]:
        blocks = _BASH_BLOCK.findall(action)
        if len(blocks) != 1:
            return await self._format_error(len(blocks))
        arguments = {"command": blocks[0]}
        reply = await (await self._live_session()).step({"name": BASH.name, "arguments": arguments})
        self._after(BASH.name, arguments, reply)
        output = reply.get("output", "")
        first, _, rest = output.lstrip("\n").partition("\n")
        content = reply.get("content") or reply.get("error", "")
        if reply["ok"] and reply["returncode"] == 0 and first.strip() == SUBMIT_MARKER:
            self.submission = rest
            return await self._end(
                None, terminated=True, valid=True, results=[], text="Submitted for grading."
            )
        if self.turn + 1 >= self.max_turns:
            return await self._end(None, terminated=False, valid=True, results=[], text=content)
        info = {
            ACTION_VALID: bool(reply["ok"]),
            REWARD_COMPONENTS: {},
            MESSAGES: [{"role": "user", "content": content}],
            TOOL_CALLS: [
                {"name": BASH.name, "ok": bool(reply["ok"]), "error": reply.get("error", "")}
            ],
            ANCHOR: self.anchor(),
        }
        return content, 0.0, False, False, info

    async def _format_error(self, found: int) -> tuple[str, float, bool, bool, dict]:
        text = (
            f"Format error: your reply must contain EXACTLY ONE ```bash code block, found {found}. "
            "Nothing was run. To submit, run the submission command alone in its block."
        )
        if self.turn + 1 >= self.max_turns:
            return await self._end(None, terminated=False, valid=False, results=[], text=text)
        info = {
            ACTION_VALID: False,
            REWARD_COMPONENTS: {},
            MESSAGES: [{"role": "user", "content": text}],
            TOOL_CALLS: [],
            ANCHOR: self.anchor(),
        }
        return text, 0.0, False, False, info

    # -- grading ------------------------------------------------------------------------------
    async def judge(self, answer: str | None) -> Outcome:
        if self.submission is not None and self._session is not None:
            self.report = await self._session.post("grade", {"diff": self.submission})
        await self._release()
        report = self.report
        resolved = bool(report and report["resolved"] and not report["tampered"])
        f2p = float(report["f2p_fraction"]) if report else 0.0
        p2p = float(report["p2p_fraction"]) if report else 0.0
        return Outcome(
            float(resolved),
            resolved,
            {
                "outcome": float(resolved),
                "level": level(report, self.submission),
                "f2p_fraction": f2p,
                "p2p_fraction": p2p,
                "f2p_gated": f2p if p2p == 1.0 else 0.0,
                "applied": float(bool(report and report["patch_successfully_applied"])),
                "tampered": float(bool(report and report["tampered"])),
                "submitted": float(self.submission is not None),
            },
        )
