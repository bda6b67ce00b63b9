"""The viewer's one HTML page: ``static/index.html`` with the stylesheet, the script and a data
document inlined, so the same page is served by the app and written by the export.

The script (``static/viewer.js``, plain JavaScript, no build step) reads the data document: in
served mode it says where the JSON API is; in an export it holds the run and the episodes.
"""

from __future__ import annotations

import html
import json
import re
from functools import cache
from importlib import resources
from typing import Any

_MARKER = re.compile(r"\{\{(TITLE|CSS|JS|DATA)\}\}")


@cache
def _static(name: str) -> str:
    return (resources.files("agentenv.view") / "static" / name).read_text(encoding="utf-8")


def data_json(data: dict[str, Any]) -> str:
    """``data`` as JSON that is safe inside a ``<script>`` element (every ``<`` escaped)."""
    return json.dumps(data, ensure_ascii=False, separators=(",", ":")).replace("<", "\\u003c")


def render_page(title: str, data: dict[str, Any]) -> str:
    """The page for a run called ``title`` with the data document ``data``."""
    parts = {
        "TITLE": html.escape(title),
        "CSS": _static("viewer.css"),
        "JS": _static("viewer.js"),
        "DATA": data_json(data),
    }
    return _MARKER.sub(lambda m: parts[m.group(1)], _static("index.html"))
