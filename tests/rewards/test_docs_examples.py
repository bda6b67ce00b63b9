"""The golden tests cite sections of docs/credit-assignment.md by heading; every cited heading
must exist, so renaming or dropping a worked example fails here."""

from __future__ import annotations

import re
from pathlib import Path

HERE = Path(__file__).parent
DOC = HERE.parents[1] / "docs" / "credit-assignment.md"
CITATION = re.compile(r"docs/credit-assignment\.md, '([^'\n]+)'")
GOLDEN = (
    "test_advantages_golden.py",
    "test_estimators.py",
    "test_gating.py",
    "test_info_gain.py",
    "test_process.py",
)


def _headings() -> set[str]:
    """Markdown heading texts of the doc, outside fenced code blocks."""
    headings, fenced = set(), False
    for line in DOC.read_text(encoding="utf-8").splitlines():
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced and line.startswith("#"):
            headings.add(line.lstrip("#").strip())
    return headings


def _citations() -> dict[str, set[str]]:
    return {
        path.name: set(CITATION.findall(path.read_text(encoding="utf-8")))
        for path in sorted(HERE.glob("test_*.py"))
    }


def test_golden_tests_cite_the_doc():
    cited = _citations()
    silent = [name for name in GOLDEN if not cited.get(name)]
    assert not silent, f"{silent} cite no section of {DOC.name}"


def test_every_cited_section_is_a_heading():
    headings = _headings()
    missing = sorted(
        f"{name}: {section!r}"
        for name, sections in _citations().items()
        for section in sections
        if section not in headings
    )
    assert not missing, f"cited sections missing from {DOC.name}: {missing}"
