"""The SWE env's tools: ``bash``, ``str_replace_editor`` and ``submit``, over one :class:`Sandbox`.

- ``bash`` (:data:`BASH`) runs a command the way mini-swe-agent does (SWE-agent/mini-swe-agent):
  each in a fresh ``bash -c`` subshell in the repository root, under a timeout, its output capped
  by the sandbox; :func:`format_run` renders the result as mini-swe-agent's observation
  (``<returncode>`` and ``<output>``).
- ``str_replace_editor`` (:data:`EDITOR`, run by :class:`Editor`) is SWE-agent's file editor
  (Yang et al. 2024, "SWE-agent: Agent-Computer Interfaces Enable Automated Software
  Engineering", arXiv 2405.15793; the tool itself comes from Anthropic's and OpenHands' editor):
  ``view``, ``create``, ``str_replace``, ``insert`` and ``undo_edit``, with its messages.
- ``submit`` (:data:`SUBMIT`) takes no argument; the env grades the workspace's diff and ends the
  episode (the tool is only a schema here).

The host never runs the model's text as a command except through ``sandbox.run``; paths are
checked to stay inside the workspace.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping
from pathlib import PurePosixPath
from typing import Any, NamedTuple

from agentenv.envs.tooluse.base import ToolError
from agentenv.envs.tooluse.schema import Tool
from agentenv.sandbox import MiB, RunResult, Sandbox, SandboxPathError
from agentenv.sandbox.base import sandbox_path

BASH = Tool(
    name="bash",
    description=(
        "Run a bash command in the repository and return its exit code and output. Each call "
        "runs in a fresh `bash -c` subshell that starts in the repository root: `cd` and "
        "environment variables do not persist between calls, so chain them in one command "
        "(e.g. `cd src && python -m pytest -q tests/test_x.py`). A command that runs past the "
        "time limit is killed, and a long output keeps only its first and last part: prefer "
        "commands that print little (grep -n, head, sed -n). Do not run interactive commands "
        "(editors, pagers, a bare `python`) or commands that never end."
    ),
    parameters={
        "type": "object",
        "properties": {
            "command": {
                "type": "string",
                "description": "The bash command to run, e.g. `grep -rn 'def parse' src/`.",
            }
        },
        "required": ["command"],
        "additionalProperties": False,
    },
)

EDITOR = Tool(
    name="str_replace_editor",
    description=(
        "Custom editing tool for viewing, creating and editing files.\n"
        "* State is persistent across command calls (the undo history).\n"
        "* If `path` is a file, `view` displays the result of applying `cat -n`. If `path` is a "
        "directory, `view` lists non-hidden files and directories up to 2 levels deep.\n"
        "* The `create` command cannot be used if the specified `path` already exists.\n"
        "* If a command generates a long output, it is truncated and marked with "
        "`<response clipped>`.\n"
        "* The `undo_edit` command reverts the last edit made to the file at `path`.\n"
        "* Text is kept byte for byte: tabs are not expanded.\n\n"
        "Notes for using the `str_replace` command:\n"
        "* The `old_str` parameter should match EXACTLY one or more consecutive lines from the "
        "original file. Be mindful of whitespace!\n"
        "* If the `old_str` parameter is not unique in the file, the replacement is not "
        "performed. Include enough context in `old_str` to make it unique.\n"
        "* The `new_str` parameter should contain the edited lines that replace the `old_str`."
    ),
    parameters={
        "type": "object",
        "properties": {
            "command": {
                "type": "string",
                "enum": ["view", "create", "str_replace", "insert", "undo_edit"],
                "description": "The command to run: `view`, `create`, `str_replace`, `insert` "
                "or `undo_edit`.",
            },
            "path": {
                "type": "string",
                "description": "Path of the file or directory: relative to the repository root "
                "(e.g. `src/module.py`) or absolute under it.",
            },
            "file_text": {
                "type": "string",
                "description": "Required parameter of `create`: the content of the file to be "
                "created.",
            },
            "view_range": {
                "type": "array",
                "items": {"type": "integer"},
                "minItems": 2,
                "maxItems": 2,
                "description": "Optional parameter of `view` when `path` is a file: the lines to "
                "show, e.g. [11, 12] shows lines 11 and 12. Lines are numbered from 1; "
                "[start_line, -1] shows all lines from `start_line` to the end of the file.",
            },
            "old_str": {
                "type": "string",
                "description": "Required parameter of `str_replace`: the exact text in `path` to "
                "replace.",
            },
            "new_str": {
                "type": "string",
                "description": "Optional parameter of `str_replace`: the new text (if not given, "
                "`old_str` is deleted). Required parameter of `insert`: the text to insert.",
            },
            "insert_line": {
                "type": "integer",
                "description": "Required parameter of `insert`: `new_str` is inserted AFTER the "
                "line `insert_line` of `path` (0 inserts at the top of the file).",
            },
        },
        "required": ["command", "path"],
        "additionalProperties": False,
    },
)

SUBMIT = Tool(
    name="submit",
    description=(
        "Submit the current changes of the workspace (the diff of its files against the original "
        "code) for grading. This ends the episode: call it once you have made and checked your "
        "fix."
    ),
    parameters={"type": "object", "properties": {}, "required": [], "additionalProperties": False},
)

TOOLS: tuple[Tool, ...] = (BASH, EDITOR, SUBMIT)

COMMANDS: tuple[str, ...] = ("view", "create", "str_replace", "insert", "undo_edit")
SNIPPET_LINES = 4
"""Lines of context shown above and below an edit."""
PROBE_TIMEOUT = 30.0
"""Seconds the editor's own commands in the sandbox (inspect, list, remove) may take."""
CLIPPED = (
    "<response clipped><NOTE>To save on context only part of this output has been shown to you. "
    "View a file in parts with `view_range`, view a subdirectory, or search with `grep -n` or "
    "`find` to locate what you are looking for.</NOTE>"
)


def format_run(result: RunResult) -> str:
    """A command's result as mini-swe-agent's observation: ``<returncode>`` then ``<output>``, with
    a ``<warning>`` line between them when the command timed out."""
    output = (
        result.output if result.output.endswith("\n") or not result.output else f"{result.output}\n"
    )
    warning = ""
    if result.timed_out:
        warning = (
            f"<warning>The command timed out after {round(result.seconds, 1):g} s and was "
            "killed. Avoid interactive commands and commands that never end; run a smaller "
            "part of the work.</warning>\n"
        )
    return f"<returncode>{result.returncode}</returncode>\n{warning}<output>\n{output}</output>"


def split_lines(text: str) -> list[str]:
    """The lines of ``text`` as ``cat -n`` counts them (a final newline does not start a line)."""
    lines = text.split("\n")
    return lines[:-1] if lines[-1] == "" else lines


def spanned(text: str) -> int:
    """How many lines ``text`` spans once written (at least one)."""
    return len(split_lines(text)) or 1


def numbered(lines: list[str], first: int) -> str:
    """``lines`` numbered from ``first`` as ``cat -n`` does (width 6, a tab, the line)."""
    return "\n".join(f"{first + i:6}\t{line}" for i, line in enumerate(lines))


def cat_n(lines: list[str], what: str, first: int = 1) -> str:
    """SWE-agent's rendering of file lines: a header naming ``what``, then the numbered lines."""
    return f"Here's the result of running `cat -n` on {what}:\n{numbered(lines, first)}\n"


def clip(text: str, limit: int) -> str:
    """``text`` if it has at most ``limit`` characters, else its head (cut at a line end) and
    :data:`CLIPPED`."""
    if len(text) <= limit:
        return text
    head = text[:limit]
    end = head.rfind("\n")
    return f"{head[: end + 1] if end > 0 else head}\n{CLIPPED}"


def line_range(view_range: Any, n_lines: int) -> tuple[int, int]:
    """The 1-indexed inclusive ``(start, end)`` of a valid ``view_range``; a :class:`ToolError`
    saying what is wrong otherwise (``end == -1``: the end of the file)."""
    if (
        not isinstance(view_range, list | tuple)
        or len(view_range) != 2
        or not all(isinstance(i, int) and not isinstance(i, bool) for i in view_range)
    ):
        raise ToolError("Invalid `view_range`. It should be a list of two integers.")
    start, end = view_range
    if not 1 <= start <= n_lines:
        raise ToolError(
            f"Invalid `view_range`: {list(view_range)}. Its first element `{start}` should be "
            f"within the range of lines of the file: [1, {n_lines}]"
        )
    if end == -1:
        return start, n_lines
    if end > n_lines:
        raise ToolError(
            f"Invalid `view_range`: {list(view_range)}. Its second element `{end}` should be "
            f"at most the number of lines in the file: `{n_lines}` (or -1 for the end)"
        )
    if end < start:
        raise ToolError(
            f"Invalid `view_range`: {list(view_range)}. Its second element `{end}` should be "
            f"larger or equal than its first `{start}`"
        )
    return start, end


def occurrence_lines(text: str, old: str) -> list[int]:
    """The 1-indexed lines where the non-overlapping occurrences of ``old`` in ``text`` start."""
    lines, pos = [], text.find(old)
    while pos != -1:
        lines.append(text.count("\n", 0, pos) + 1)
        pos = text.find(old, pos + len(old))
    return sorted(set(lines))


def snippet(text: str, first_line: int, last_line: int) -> tuple[list[str], int]:
    """The lines of ``text`` from ``SNIPPET_LINES`` above the 0-indexed ``first_line`` to as many
    below ``last_line``, and the 1-indexed number of the first one shown."""
    start = max(0, first_line - SNIPPET_LINES)
    return split_lines(text)[start : last_line + SNIPPET_LINES + 1], start + 1


def lines_with_ends(text: str) -> list[str]:
    """The lines of ``text``, each with its ``\\n`` (the last one may have none)."""
    parts = text.split("\n")
    return [f"{p}\n" for p in parts[:-1]] + ([parts[-1]] if parts[-1] else [])


def insert_text(text: str, line: int, new: str) -> str:
    """``text`` with ``new`` inserted as whole lines after its 0-indexed ``line``: a newline is
    added after ``new`` when it has none, and before it when it follows a last line without one."""
    kept = lines_with_ends(text)
    head, tail = "".join(kept[:line]), "".join(kept[line:])
    if head and not head.endswith("\n"):
        head += "\n"
    return head + (new if new.endswith("\n") else f"{new}\n") + tail


# ---------------------------------------------------------------------------------------------
# The editor
# ---------------------------------------------------------------------------------------------
PROBE = (
    'p={path}; if [ -d "$p" ]; then k=directory; elif [ -f "$p" ]; then k=file; '
    'elif [ -e "$p" ] || [ -L "$p" ]; then k=other; else k=missing; fi; '
    'printf \'%s %s %s\' "$k" "$(stat -L -c %s -- "$p" 2>/dev/null || echo 0)" '
    '"$(readlink -f -- "$p" 2>/dev/null)"'
)
"""Prints what a path is (directory, file, other, missing), its size and its resolved path."""
KINDS = ("directory", "file", "other", "missing")
LISTING = (
    "cd -- {path} && {{ find . -mindepth 1 -maxdepth 2 -not -path '*/.*' -type d | sed 's|$|/|'; "
    "find . -mindepth 1 -maxdepth 2 -not -path '*/.*' ! -type d; }} | LC_ALL=C sort"
)
"""Lists a folder's non-hidden entries two levels deep, folders marked with a final ``/``."""


class Entry(NamedTuple):
    """What a path of the workspace is: its kind (:data:`KINDS`), size in bytes, and its path
    relative to the workspace with symlinks resolved (as given when it is missing)."""

    kind: str
    size: int
    path: PurePosixPath


def decode(data: bytes, display: str) -> str:
    """``data`` as UTF-8 text; a :class:`ToolError` for binary or undecodable content."""
    try:
        if b"\0" in data:
            raise UnicodeError("NUL byte")
        return data.decode("utf-8")
    except UnicodeError:
        raise ToolError(
            f"The file {display} is not UTF-8 text (a binary file?): the editor only works on "
            "text files. Inspect it with bash instead (e.g. `file`, `xxd | head`)."
        ) from None


def string_argument(arguments: Mapping[str, Any], name: str, command: str) -> str:
    """The string argument ``name`` of ``command``; a :class:`ToolError` if missing or not text."""
    value = arguments.get(name)
    if value is None:
        raise ToolError(f"Parameter `{name}` is required for command: {command}")
    if not isinstance(value, str):
        raise ToolError(f"Parameter `{name}` must be a string, got {type(value).__name__}")
    return value


class Editor:
    """SWE-agent's ``str_replace_editor`` over one :class:`Sandbox`; ``await editor(arguments)``
    runs one call and returns its observation, or raises :class:`ToolError` with a message for
    the model.

    Paths are relative to ``sandbox.workdir`` or absolute under it; symlinks are followed but
    must stay in the workspace. Each file edit (``create``, ``str_replace``, ``insert``) pushes
    the file's previous text (or its absence) on a per-path undo history; ``undo_edit`` pops it,
    overwriting whatever else changed the file since. Unlike SWE-agent, text stays byte-faithful:
    tabs are not expanded. Files over ``max_file_bytes`` and non-UTF-8 files are refused, and an
    observation over ``max_output`` characters is clipped with a note (:data:`CLIPPED`).
    """

    def __init__(self, sandbox: Sandbox, *, max_output: int = 16_000, max_file_bytes: int = MiB):
        for name, value in (("max_output", max_output), ("max_file_bytes", max_file_bytes)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        self.sandbox = sandbox
        self.max_output = max_output
        self.max_file_bytes = max_file_bytes
        self.history: dict[PurePosixPath, list[str | None]] = {}

    def reset(self) -> None:
        """Forget the undo history (a new episode)."""
        self.history.clear()

    async def __call__(self, arguments: Mapping[str, Any]) -> str:
        """Run one ``str_replace_editor`` call (the arguments of :data:`EDITOR`)."""
        command = arguments.get("command")
        if command not in COMMANDS:
            raise ToolError(
                f"Unrecognized command {command!r}. The allowed commands for the "
                f"str_replace_editor tool are: {', '.join(COMMANDS)}"
            )
        rel = self._locate(string_argument(arguments, "path", command))
        handlers = {
            "view": self._view,
            "create": self._create,
            "str_replace": self._str_replace,
            "insert": self._insert,
            "undo_edit": self._undo_edit,
        }
        return clip(await handlers[command](rel, arguments), self.max_output)

    # -- paths and files -----------------------------------------------------------------------
    def _locate(self, path: str) -> PurePosixPath:
        try:
            return sandbox_path(path, self.sandbox.workdir, allow_root=True)
        except SandboxPathError:
            raise ToolError(
                f"The path {path} is outside the workspace: give a path relative to the "
                f"repository root {self.sandbox.workdir} or absolute under it (no `..`)."
            ) from None

    def _display(self, rel: PurePosixPath) -> str:
        return str(PurePosixPath(self.sandbox.workdir) / rel)

    async def _sh(self, command: str, failure: str) -> str:
        """The output of the editor's own ``command``; a :class:`ToolError` if it fails."""
        result = await self.sandbox.run(command, timeout=PROBE_TIMEOUT)
        if result.returncode or result.timed_out:
            raise ToolError(f"{failure}:\n{format_run(result)}")
        return result.output

    async def _probe(self, rel: PurePosixPath) -> Entry:
        display = self._display(rel)
        output = await self._sh(
            PROBE.format(path=shlex.quote(display)), f"Could not inspect {display}"
        )
        kind, _, rest = output.partition(" ")
        size, _, real = rest.partition(" ")
        if kind not in KINDS or not size.isdigit():
            raise ToolError(f"Could not inspect {display}: {output!r}")
        if kind == "missing":
            return Entry(kind, 0, rel)
        try:
            resolved = sandbox_path(real or display, self.sandbox.workdir, allow_root=True)
        except SandboxPathError:
            raise ToolError(
                f"The path {display} leads outside the workspace (to {real})."
            ) from None
        return Entry(kind, int(size), resolved)

    def _check_file(self, entry: Entry, display: str) -> None:
        if entry.kind == "missing":
            raise ToolError(f"The path {display} does not exist. Please provide a valid path.")
        if entry.kind == "directory":
            raise ToolError(
                f"The path {display} is a directory and only the `view` command can be used on "
                "directories."
            )
        if entry.kind == "other":
            raise ToolError(
                f"The path {display} is not a regular file or directory (a device, a pipe or a "
                "broken symlink)."
            )
        if entry.size > self.max_file_bytes:
            raise ToolError(
                f"The file {display} has {entry.size} bytes, more than the editor's limit of "
                f"{self.max_file_bytes} bytes: read it with bash (grep -n, sed -n, head) and "
                "change it with sed or a script."
            )

    async def _read_text(self, entry: Entry, display: str) -> str:
        """The text of the file ``entry``, checked to be editable."""
        self._check_file(entry, display)
        try:
            data = await self.sandbox.read_bytes(entry.path)
        except (SandboxPathError, OSError) as exc:
            raise ToolError(f"Could not read {display}: {exc}") from None
        return decode(data, display)

    async def _load(self, rel: PurePosixPath) -> tuple[PurePosixPath, str]:
        """The resolved path and text of the file ``rel``, checked to be editable."""
        entry = await self._probe(rel)
        return entry.path, await self._read_text(entry, self._display(rel))

    async def _write(self, rel: PurePosixPath, text: str) -> None:
        try:
            await self.sandbox.write_file(rel, text)
        except (SandboxPathError, OSError) as exc:
            raise ToolError(f"Could not write {self._display(rel)}: {exc}") from None

    def _edited(self, rel: PurePosixPath, previous: str | None) -> None:
        self.history.setdefault(rel, []).append(previous)

    # -- commands ------------------------------------------------------------------------------
    async def _view(self, rel: PurePosixPath, arguments: Mapping[str, Any]) -> str:
        display = self._display(rel)
        view_range = arguments.get("view_range")
        entry = await self._probe(rel)
        if entry.kind == "directory":
            if view_range is not None:
                raise ToolError(
                    "The `view_range` parameter is not allowed when `path` points to a directory."
                )
            return await self._list(entry.path, display)
        lines = split_lines(await self._read_text(entry, display))
        if not lines:
            return f"The file {display} is empty.\n"
        if view_range is None:
            return cat_n(lines, display)
        start, end = line_range(view_range, len(lines))
        return cat_n(lines[start - 1 : end], display, start)

    async def _list(self, rel: PurePosixPath, display: str) -> str:
        output = await self._sh(
            LISTING.format(path=shlex.quote(self._display(rel))), f"Could not list {display}"
        )
        entries = [
            f"{display}/{line[2:]}" if line.startswith("./") else line
            for line in output.splitlines()
        ]
        return (
            f"Here are the files and directories up to 2 levels deep in {display}, excluding "
            "hidden items:\n" + "".join(f"{entry}\n" for entry in entries)
        )

    async def _create(self, rel: PurePosixPath, arguments: Mapping[str, Any]) -> str:
        display = self._display(rel)
        file_text = string_argument(arguments, "file_text", "create")
        entry = await self._probe(rel)
        if entry.kind == "directory":
            self._check_file(entry, display)
        if entry.kind != "missing":
            raise ToolError(
                f"File already exists at: {display}. Cannot overwrite files using command `create`."
            )
        await self._write(rel, file_text)
        self._edited((await self._probe(rel)).path, None)  # the key undo_edit finds
        return f"File created successfully at: {display}"

    async def _str_replace(self, rel: PurePosixPath, arguments: Mapping[str, Any]) -> str:
        display = self._display(rel)
        old = string_argument(arguments, "old_str", "str_replace")
        new = arguments.get("new_str")
        new = "" if new is None else new
        if not isinstance(new, str):
            raise ToolError(f"Parameter `new_str` must be a string, got {type(new).__name__}")
        if not old:
            raise ToolError(
                "Parameter `old_str` must not be empty: give the exact text to replace."
            )
        path, text = await self._load(rel)
        count = text.count(old)
        if not count:
            raise ToolError(
                f"No replacement was performed, old_str `{old}` did not appear verbatim in "
                f"{display}."
            )
        if count > 1:
            raise ToolError(
                f"No replacement was performed. Multiple occurrences of old_str `{old}` in lines "
                f"{occurrence_lines(text, old)}. Please ensure it is unique"
            )
        if new == old:
            raise ToolError(
                f"No replacement was performed, old_str `{old}` is the same as new_str `{new}`."
            )
        edited = text.replace(old, new, 1)
        await self._write(path, edited)
        self._edited(path, text)
        first = text.count("\n", 0, text.find(old))
        shown, start = snippet(edited, first, first + spanned(new) - 1)
        return (
            f"The file {display} has been edited. "
            + cat_n(shown, f"a snippet of {display}", start)
            + "Review the changes and make sure they are as expected. Edit the file again if "
            "necessary."
        )

    async def _insert(self, rel: PurePosixPath, arguments: Mapping[str, Any]) -> str:
        line = arguments.get("insert_line")
        if line is None:
            raise ToolError("Parameter `insert_line` is required for command: insert")
        if not isinstance(line, int) or isinstance(line, bool):
            raise ToolError(f"Parameter `insert_line` must be an integer, got {line!r}")
        new = string_argument(arguments, "new_str", "insert")
        path, text = await self._load(rel)
        n_lines = len(split_lines(text))
        if not 0 <= line <= n_lines:
            raise ToolError(
                f"Invalid `insert_line` parameter: {line}. It should be within the range of lines "
                f"of the file: [0, {n_lines}]"
            )
        edited = insert_text(text, line, new)
        await self._write(path, edited)
        self._edited(path, text)
        shown, start = snippet(edited, line, line + spanned(new) - 1)
        return (
            f"The file {self._display(rel)} has been edited. "
            + cat_n(shown, "a snippet of the edited file", start)
            + "Review the changes and make sure they are as expected (correct indentation, no "
            "duplicate lines, etc). Edit the file again if necessary."
        )

    async def _undo_edit(self, rel: PurePosixPath, arguments: Mapping[str, Any]) -> str:
        display = self._display(rel)
        entry = await self._probe(rel)
        stack = self.history.get(entry.path)
        if not stack:
            raise ToolError(f"No edit history found for {display}.")
        previous = stack[-1]
        if previous is None:
            await self._sh(
                f"rm -f -- {shlex.quote(self._display(entry.path))}", f"Could not remove {display}"
            )
            stack.pop()
            return f"Last edit to {display} undone successfully: the file it created was removed."
        await self._write(entry.path, previous)
        stack.pop()
        return f"Last edit to {display} undone successfully. " + cat_n(
            split_lines(previous), display
        )
