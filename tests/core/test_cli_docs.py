"""docs/cli.md documents every option of every `agentenv` subcommand, and names no other."""

from __future__ import annotations

import argparse
import re
from collections.abc import Iterator
from pathlib import Path

from agentenv.cli import build_parser

DOC = Path(__file__).resolve().parents[2] / "docs" / "cli.md"


def options(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> Iterator[tuple]:
    """``(subcommand path, long option)`` of every option of ``parser`` and its subparsers."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from options(sub, (*path, name))
        for option in action.option_strings:
            if option.startswith("--") and option != "--help":
                yield path, option


def test_every_option_is_documented_and_every_documented_option_exists() -> None:
    doc = DOC.read_text()
    found = list(options(build_parser()))
    undocumented = [(" ".join(path), option) for path, option in found if option not in doc]
    assert not undocumented, f"options missing from docs/cli.md: {undocumented}"
    named = set(re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", doc))
    assert named <= {option for _, option in found}, sorted(named - {o for _, o in found})


def test_every_subcommand_has_a_row() -> None:
    doc = DOC.read_text()
    parser = build_parser()
    (commands,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    assert [c for c in commands.choices if f"`agentenv {c}" not in doc] == []
