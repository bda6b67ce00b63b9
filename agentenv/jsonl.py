"""JSON Lines reading with errors that name the file and line."""

from __future__ import annotations

import codecs
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


class DataFormatError(ValueError):
    """A data file has a bad row; the message names the file and the line (or row)."""


def iter_jsonl(
    path: str | Path, *, error: type[ValueError] = DataFormatError, torn_tail: bool = False
) -> Iterator[tuple[int, dict[str, Any]]]:
    """``(line number, object)`` for every non-blank line of ``path``.

    A line that is not UTF-8, not JSON, or not a JSON object raises ``error`` (a ``ValueError``
    subclass) with ``path:line`` in its message. A UTF-8 byte order mark before the first line
    is skipped.

    ``torn_tail=True`` tolerates an interrupted append: a last line that lacks its newline and
    does not parse is dropped (with a logged warning) instead of raising. A bad line that ends
    with a newline is an error wherever it is.
    """
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            if lineno == 1:
                raw = raw.removeprefix(codecs.BOM_UTF8)
            try:
                row = _parse_line(raw)
            except ValueError as exc:
                if torn_tail and not raw.endswith(b"\n"):
                    log.warning("%s:%d: dropped a torn last line (%s)", path, lineno, exc)
                    return
                raise error(f"{path}:{lineno}: {exc}") from None
            if row is not None:
                yield lineno, row


def _parse_line(raw: bytes) -> dict[str, Any] | None:
    """The JSON object on ``raw`` (None for a blank line); ValueError says what is wrong."""
    try:
        line = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(
            f"not valid UTF-8 (byte 0x{raw[exc.start]:02x} at column {exc.start + 1})"
        ) from None
    if not line.strip():
        return None
    try:
        row = json.loads(line)
    except json.JSONDecodeError as exc:
        raise ValueError(f"invalid JSON ({exc.msg})") from None
    if not isinstance(row, dict):
        raise ValueError("expected a JSON object")
    return row
