"""The mutation families: one function changed, output parses, deterministic, diffs apply."""

from __future__ import annotations

import ast
import subprocess
from pathlib import Path

import pytest

from agentenv.envs.swe.mutations import FAMILIES, combine, functions, mutations

SOURCE = '''"""A module with every construct the families act on."""

import contextlib

LIMIT = 10  # a module constant: never mutated


def clamp(value, low=0, high=LIMIT):
    """Clamp ``value`` into [low, high]."""
    # a comment that must survive
    if value < low:
        return low
    if value > high and high != -1:
        return high
    return value


class Counter:
    """A counter."""

    def __init__(self, start=0):
        self.count = start
        self.history = []

    @property
    def double(self):
        return self.count * 2 + 1 - 0

    def add(self, items):
        total = 0
        for item in items:
            total += item
        while total > 100:
            total -= 1
        if total in self.history:
            self.count = self.count + total
        else:
            self.count = self.count - total
        self.history.append(total)
        return 0 < total < 50 or total is None


def guarded(path):
    try:
        with contextlib.suppress(OSError):
            data = open(path).read()
    except ValueError:
        data = ""
    return data
'''


def _others(source: str, name: str) -> dict[str, str]:
    tree = ast.parse(source)
    return {f.name: ast.dump(f.node) for f in functions(tree) if f.name != name}


@pytest.mark.parametrize("family", FAMILIES)
def test_family_changes_exactly_one_function(family: str) -> None:
    found = list(mutations(SOURCE, "pkg/mod.py", family))
    assert found, f"no {family} site in the sample"
    old_lines = SOURCE.splitlines(keepends=True)
    for m in found:
        assert m.family == family and m.file == "pkg/mod.py"
        new_tree = ast.parse(m.new_source)
        assert ast.dump(new_tree) != ast.dump(ast.parse(SOURCE))
        assert _others(m.new_source, m.function) == _others(SOURCE, m.function)
        new_lines = m.new_source.splitlines(keepends=True)
        delta = len(new_lines) - len(old_lines)
        # everything outside the function's lines is byte-identical
        assert new_lines[: m.start - 1] == old_lines[: m.start - 1]
        assert new_lines[m.end + delta :] == old_lines[m.end :]
        assert "# a module constant: never mutated" in m.new_source
        assert m.diff.startswith("--- a/pkg/mod.py\n+++ b/pkg/mod.py\n")


@pytest.mark.parametrize("family", FAMILIES)
def test_deterministic(family: str) -> None:
    first = list(mutations(SOURCE, "m.py", family, seed=3))
    assert first == list(mutations(SOURCE, "m.py", family, seed=3))
    assert [m.key for m in first] == [m.key for m in mutations(SOURCE, "m.py", family, seed=3)]


def test_examples() -> None:
    flips = [m.diff for m in mutations(SOURCE, "m.py", "op_flip")]
    assert any("-    if value < low:\n+    if value > low:\n" in diff for diff in flips)
    wrapper = [m for m in mutations(SOURCE, "m.py", "remove_wrapper") if m.function == "guarded"]
    assert any("suppress" not in m.new_source for m in wrapper)
    removed = [m for m in mutations(SOURCE, "m.py", "remove_loop")]
    assert {m.function for m in removed} == {"Counter.add"}
    assert "# a comment that must survive" in next(mutations(SOURCE, "m.py", "op_flip")).new_source


def test_diff_applies_and_reverses(tmp_path: Path) -> None:
    (tmp_path / "pkg").mkdir()
    target = tmp_path / "pkg" / "mod.py"
    for family in FAMILIES:
        m = next(mutations(SOURCE, "pkg/mod.py", family))
        target.write_text(SOURCE)
        done = subprocess.run(
            ["patch", "-p1", "--batch", "--quiet"], input=m.diff, text=True, cwd=tmp_path
        )
        assert done.returncode == 0, family
        assert target.read_text() == m.new_source
        done = subprocess.run(
            ["patch", "-p1", "-R", "--batch", "--quiet"], input=m.diff, text=True, cwd=tmp_path
        )
        assert done.returncode == 0 and target.read_text() == SOURCE


def test_combine_two_functions() -> None:
    a = next(m for m in mutations(SOURCE, "m.py", "op_flip") if m.function == "clamp")
    b = next(m for m in mutations(SOURCE, "m.py", "remove_loop") if m.function == "Counter.add")
    both = combine(SOURCE, [a, b])
    assert ast.parse(both)
    assert both != a.new_source and both != b.new_source
    assert a.function_lines in both and b.function_lines in both
    with pytest.raises(ValueError):
        combine(SOURCE, [a, a])


def test_unknown_family() -> None:
    with pytest.raises(ValueError, match="unknown mutation family"):
        list(mutations(SOURCE, "m.py", "nope"))
