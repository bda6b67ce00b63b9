"""Fixtures of the sandbox tests."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A sandbox root of this test only."""
    return tmp_path / "sandboxes"
