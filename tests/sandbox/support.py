"""What the sandbox tests share: the backends available here, a private sandbox root, helpers."""

from __future__ import annotations

import os
import shlex
from pathlib import Path

import pytest

from agentenv.sandbox import Limits, Sandbox, engine_unavailable
from agentenv.sandbox.workspace import UID_BASE, UID_SLOTS

ENGINES = ("docker", "podman")


def engine_params() -> list:
    """docker and podman, each skipped with the reason when no engine answers here."""
    params = []
    for name in ENGINES:
        reason = engine_unavailable(name)
        marks = [pytest.mark.skip(reason=reason)] if reason else []
        params.append(pytest.param(name, marks=marks, id=name))
    return params


ISOLATING = [pytest.param("bwrap", id="bwrap"), *engine_params()]
"""Backends that must pass the escape suite."""

UNSAFE_LOCAL = pytest.param(
    "unsafe-local",
    id="unsafe-local",
    marks=pytest.mark.xfail(
        strict=True, reason="no isolation: the escape succeeds (shows the test can fail)"
    ),
)
"""The escape suite also runs here and must fail every test (strict xfail)."""


def make(backend: str, root: Path, **limits: object) -> Sandbox:
    """A new sandbox of ``backend`` (host backends under ``root``) with ``limits``."""
    options = {} if backend in ENGINES else {"root": root}
    return Sandbox.create(backend, limits=Limits(**limits), **options)


def py(code: str) -> str:
    """A shell command that runs ``code`` with the sandbox's python3."""
    return f"python3 -c {shlex.quote(code)}"


def sandbox_pids() -> list[int]:
    """pids of the host processes that run as a root-mode sandbox uid."""
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                uid = os.stat(f"/proc/{entry}").st_uid
            except FileNotFoundError:
                continue
            if UID_BASE <= uid < UID_BASE + UID_SLOTS:
                pids.append(int(entry))
    return pids
