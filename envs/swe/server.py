"""The SWE service: one sandboxed workspace per session, holding one instance's buggy repository.

Built with :func:`agentenv.sessions.session_app` (``POST /sessions``, ``/sessions/{id}/reset``,
``/sessions/{id}/step``, ``DELETE /sessions/{id}``, the session cap, idle reaping), plus:

- ``POST /sessions/{id}/reset`` with ``{"instance": {...}}`` (an
  :class:`~agentenv.envs.swe.factory.Instance` as a JSON object; the task row carries its ground
  truth) → ``{"state", "workdir"}``: the session's sandbox is replaced by a new one
  (:func:`~agentenv.envs.swe.grading.instance_sandbox`: for a row with an ``image``, a
  docker/podman container whose workspace is the image's ``/testbed``) holding the instance's
  buggy tree (:func:`~agentenv.envs.swe.grading.prepare_workspace`), committed to a git
  repository as the baseline the agent's diff is taken against;
- ``POST /sessions/{id}/step`` with ``{"name": "bash" | "str_replace_editor" | "submit",
  "arguments": {...}}`` → ``{"ok", "content" | "error", "state", "returncode", "output"}``:
  one tool call (:mod:`agentenv.envs.swe.tools`); ``submit`` answers the workspace's diff
  against the baseline in ``content``. A failure the model should read is ``ok: false``, never
  an HTTP error;
- ``POST /sessions/{id}/grade`` with ``{"diff": str | null}`` → the
  :class:`~agentenv.envs.swe.grading.Report` of that diff, graded in a **fresh** sandbox (never
  the agent's workspace), at most ``max_grades`` at a time; the report of an (instance, diff)
  pair graded before comes from a cache (``"cached": true``);
- ``GET /config`` → the sandbox backend and limits.

``state`` is the sha256 of the workspace's diff against the baseline (untracked files included),
recomputed after every call that may write; ``""`` when the agent broke the repository.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import asdict, dataclass, fields
from typing import Any

from fastapi import FastAPI, HTTPException, Request

from agentenv.envs.swe.factory import Instance
from agentenv.envs.swe.grading import (
    GradingError,
    git_baseline,
    grade,
    instance_sandbox,
    prepare_workspace,
    workspace_diff,
)
from agentenv.envs.swe.tools import BASH, EDITOR, SUBMIT, Editor, format_run
from agentenv.envs.tooluse.base import ToolError
from agentenv.sandbox import Limits, MiB, Sandbox, SandboxError
from agentenv.sessions import IDLE_TIMEOUT, read_json_object, session_app

MAX_SESSIONS = 256
"""Default cap on open sessions (each holds a sandbox; 64 concurrent episodes are tested)."""
MAX_BODY_BYTES = 4 << 20
"""Largest request body: an instance row with its patches, or a submitted diff."""
GRADE_CACHE = 4096
"""Reports kept by (instance, diff): grading is deterministic (stable tests, ``TZ=UTC``,
``PYTHONHASHSEED=0``) and a GRPO group often submits the same diff several times."""
MAX_DIFF_CHARS = 1 << 20
"""Largest diff ``submit`` returns (a bigger one is refused with a message)."""
COMMAND_ENV = {
    "PAGER": "cat",
    "MANPAGER": "cat",
    "GIT_PAGER": "cat",
    "LESS": "-R",
    "PIP_PROGRESS_BAR": "off",
    "TQDM_DISABLE": "1",
    "PYTHONDONTWRITEBYTECODE": "1",
    "PYTHONHASHSEED": "0",
    "TZ": "UTC",
}
"""The environment of every command (mini-swe-agent's, plus determinism and no bytecode)."""


@dataclass
class SWESession:
    """One session: its sandbox (made on reset), the instance, the editor's undo history."""

    sandbox: Sandbox | None = None
    instance: Instance | None = None
    editor: Editor | None = None
    state: str = ""


def instance_from(row: Any) -> Instance:
    """An :class:`Instance` from a reset body's ``instance`` object (HTTP 422 naming what is
    wrong)."""
    if not isinstance(row, dict):
        raise HTTPException(status_code=422, detail='a reset body is {"instance": {...}}')
    names = {f.name for f in fields(Instance)}
    unknown = sorted(set(row) - names)
    if unknown:
        raise HTTPException(status_code=422, detail=f"unknown instance fields {unknown}")
    try:
        return Instance(**row)
    except TypeError as exc:
        raise HTTPException(status_code=422, detail=f"bad instance: {exc}") from None


class SWEBackend:
    """Sessions of sandboxed workspaces; grading in fresh sandboxes, ``max_grades`` at a time."""

    def __init__(
        self,
        backend: str = "bwrap",
        limits: Limits | None = None,
        *,
        max_grades: int | None = None,
        grade_timeout: float = 300.0,
        grade_cache: int = GRADE_CACHE,
        cache: str | None = None,
    ) -> None:
        self.backend = backend
        self.limits = limits or Limits()
        self.grade_timeout = grade_timeout
        self.grade_cache = grade_cache
        self._graded: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._inflight: dict[tuple[asyncio.AbstractEventLoop, str], asyncio.Future[Any]] = {}
        self.cache = cache
        self.max_grades = max_grades or os.cpu_count() or 1
        self._grades: dict[asyncio.AbstractEventLoop, asyncio.Semaphore] = {}

    async def create(self, options: dict[str, Any]) -> SWESession:
        return SWESession()

    async def reset(self, session: SWESession, options: dict[str, Any]) -> dict[str, Any]:
        instance = instance_from(options.get("instance"))
        await self.close(session)
        with _unrunnable(instance):
            sandbox = instance_sandbox(instance, self.backend, self.limits, COMMAND_ENV)
            try:
                await sandbox.start()
                await prepare_workspace(sandbox, instance, self.cache)
                await git_baseline(sandbox)
            except BaseException:
                await sandbox.aclose()
                raise
        session.sandbox, session.instance = sandbox, instance
        session.editor = Editor(sandbox)
        session.state = await self._digest(sandbox)
        return {"state": session.state, "workdir": sandbox.workdir}

    async def step(self, session: SWESession, action: dict[str, Any]) -> dict[str, Any]:
        name, arguments = action.get("name"), action.get("arguments", {})
        if not isinstance(name, str) or not isinstance(arguments, dict):
            raise HTTPException(
                status_code=422, detail='a step body is {"name": str, "arguments": object}'
            )
        if session.sandbox is None or session.editor is None:
            raise HTTPException(status_code=409, detail="reset the session before stepping")
        try:
            reply = await self._call(session, name, arguments)
        except ToolError as exc:
            reply = {"ok": False, "error": str(exc)}
        if name != SUBMIT.name and not _is_view(name, arguments):
            session.state = await self._digest(session.sandbox)
        return {**reply, "state": session.state}

    async def _call(self, session: SWESession, name: str, arguments: dict[str, Any]) -> dict:
        sandbox, editor = session.sandbox, session.editor
        assert sandbox is not None and editor is not None
        if name == BASH.name:
            command = arguments.get("command")
            if not isinstance(command, str) or not command.strip():
                raise ToolError("bash needs a non-empty 'command' string")
            result = await sandbox.run(command)
            return {
                "ok": True,
                "content": format_run(result),
                "returncode": result.returncode,
                "output": result.output,
            }
        if name == EDITOR.name:
            return {"ok": True, "content": await editor(arguments)}
        if name == SUBMIT.name:
            diff = await self._diff(sandbox)
            if diff is None:
                raise ToolError(
                    "could not take the diff of the workspace: its git repository is broken "
                    "(was .git changed?)"
                )
            return {"ok": True, "content": diff}
        raise ToolError(f"unknown tool {name!r}; the tools are: bash, str_replace_editor, submit")

    async def grade(self, session: SWESession, body: dict[str, Any]) -> dict[str, Any]:
        if session.instance is None:
            raise HTTPException(status_code=409, detail="reset the session before grading")
        diff = body.get("diff")
        if diff is not None and not isinstance(diff, str):
            raise HTTPException(status_code=422, detail='a grade body is {"diff": str | null}')
        key = _grade_key(session.instance, diff)
        if key in self._graded:
            self._graded.move_to_end(key)
            return {**self._graded[key], "cached": True}
        loop = asyncio.get_running_loop()
        twin = self._inflight.get((loop, key))
        if twin is not None:  # the same (instance, diff) is being graded: share its report
            return {**await asyncio.shield(twin), "cached": True}
        future: asyncio.Future[dict[str, Any]] = loop.create_future()
        self._inflight[(loop, key)] = future
        try:
            report = await self._grade(session.instance, diff)
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: the twins (if any) raise it themselves
            raise
        finally:
            del self._inflight[(loop, key)]
        future.set_result(report)
        if self.grade_cache and not (report["timed_out"] or report["infra_failure"]):
            self._graded[key] = report
            while len(self._graded) > self.grade_cache:
                self._graded.popitem(last=False)
        return {**report, "cached": False}

    async def _grade(self, instance: Instance, diff: str | None) -> dict[str, Any]:
        async with self._grade_slot():
            with _unrunnable(instance):
                report = await grade(
                    instance,
                    diff,
                    backend=self.backend,
                    cache=self.cache,
                    timeout=self.grade_timeout,
                )
        return asdict(report)

    def _grade_slot(self) -> asyncio.Semaphore:
        """The running loop's semaphore of ``max_grades`` (an in-process app may serve
        several event loops in turn)."""
        loop = asyncio.get_running_loop()
        for old in [other for other in self._grades if other.is_closed()]:
            del self._grades[old]
        return self._grades.setdefault(loop, asyncio.Semaphore(self.max_grades))

    async def close(self, session: SWESession) -> None:
        sandbox, session.sandbox, session.editor = session.sandbox, None, None
        if sandbox is not None:
            await sandbox.aclose()

    async def _diff(self, sandbox: Sandbox) -> str | None:
        """The workspace's diff against the baseline, or ``None`` if git cannot make it."""
        try:
            diff = await workspace_diff(sandbox)
        except GradingError:
            return None
        if len(diff) > MAX_DIFF_CHARS:
            raise ToolError(
                f"the diff has {len(diff)} characters, over the {MAX_DIFF_CHARS} cap: undo the "
                "changes that are not part of the fix (large or generated files)"
            )
        return diff

    async def _digest(self, sandbox: Sandbox) -> str:
        try:
            diff = await self._diff(sandbox)
        except (ToolError, SandboxError, OSError):
            return ""
        if diff is None:
            return ""
        return hashlib.sha256(diff.encode("utf-8", "surrogateescape")).hexdigest()[:16]


@contextlib.contextmanager
def _unrunnable(instance: Instance) -> Iterator[None]:
    """A :class:`GradingError` (an instance this service cannot run: an image row on bwrap, no
    test command, a bug patch that does not apply) as HTTP 422 saying why."""
    try:
        yield
    except GradingError as exc:
        detail = f"instance {instance.instance_id} cannot run on this service: {exc}"
        raise HTTPException(status_code=422, detail=detail) from None


def _grade_key(instance: Instance, diff: str | None) -> str:
    """What a grade depends on: the whole instance and the diff."""
    text = json.dumps([asdict(instance), diff], sort_keys=True)
    return hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()


def _is_view(name: str, arguments: dict[str, Any]) -> bool:
    return name == EDITOR.name and arguments.get("command") == "view"


def create_app(
    backend: str = "bwrap",
    command_timeout: float = 60.0,
    max_output: int = 10_000,
    address_space_mib: int = 2048,
    disk_mib: int = 512,
    max_grades: int | None = None,
    grade_timeout: float = 300.0,
    grade_cache: int = GRADE_CACHE,
    max_sessions: int = MAX_SESSIONS,
    idle_timeout: float = IDLE_TIMEOUT,
    max_body_bytes: int = MAX_BODY_BYTES,
) -> FastAPI:
    """The SWE service. ``backend``: the sandbox backend of workspaces and grading;
    ``command_timeout`` (s), ``max_output`` (characters), ``address_space_mib`` and ``disk_mib``
    bound each command (:class:`~agentenv.sandbox.Limits`); ``max_grades``: concurrent gradings
    (default: the CPU count); ``grade_cache``: reports kept by (instance, diff), 0 to grade every
    submission afresh; the rest are :func:`~agentenv.sessions.session_app`'s."""
    limits = Limits(
        timeout=command_timeout,
        max_output=max_output,
        address_space=address_space_mib * MiB,
        disk=disk_mib * MiB,
    )
    swe = SWEBackend(
        backend, limits, max_grades=max_grades, grade_timeout=grade_timeout, grade_cache=grade_cache
    )
    app = session_app(
        "swe",
        swe,
        max_sessions=max_sessions,
        idle_timeout=idle_timeout,
        max_body_bytes=max_body_bytes,
    )
    store = app.state.sessions

    @app.post("/sessions/{session_id}/grade")
    async def grade_route(session_id: str, request: Request) -> dict[str, Any]:
        return await store.call(session_id, swe.grade, await read_json_object(request))

    @app.get("/config")
    async def config() -> dict[str, Any]:
        return {"backend": backend, "limits": asdict(limits), "grade_timeout": grade_timeout}

    return app
