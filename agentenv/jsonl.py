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
    for lineno, _, raw in iter_lines(path):
        try:
            row = _parse_line(raw)
        except ValueError as exc:
            if torn_tail and not raw.endswith(b"\n"):
                log.warning("%s:%d: dropped a torn last line (%s)", path, lineno, exc)
                return
            raise error(f"{path}:{lineno}: {exc}") from None
        if row is not None:
            yield lineno, row


def iter_lines(path: str | Path) -> Iterator[tuple[int, int, bytes]]:
    """``(line number, byte offset, raw bytes)`` of every line of ``path`` (a leading UTF-8 byte
    order mark is skipped): the raw form of :func:`iter_jsonl`, for readers that index a file
    and parse lines later with :func:`parse_line`."""
    offset = 0
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            start = offset
            offset += len(raw)
            if lineno == 1 and raw.startswith(codecs.BOM_UTF8):
                raw, start = raw[len(codecs.BOM_UTF8) :], start + len(codecs.BOM_UTF8)
            yield lineno, start, raw


def parse_line(
    raw: bytes, where: str, *, error: type[ValueError] = DataFormatError
) -> dict[str, Any] | None:
    """The JSON object on one raw line (None for a blank line); a bad line raises ``error``
    whose message starts with ``where`` (``path:line``)."""
    try:
        return _parse_line(raw)
    except ValueError as exc:
        raise error(f"{where}: {exc}") from None


def read_line(path: str | Path, offset: int, where: str) -> dict[str, Any]:
    """The JSON object on the line that starts at byte ``offset`` of ``path`` (an offset from
    :func:`iter_lines`); a bad or blank line raises :class:`DataFormatError` naming ``where``."""
    with open(path, "rb") as f:
        f.seek(offset)
        row = parse_line(f.readline(), where)
    if row is None:
        raise DataFormatError(f"{where}: blank line (the file changed since it was read)")
    return row


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
