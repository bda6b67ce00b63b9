"""Scripted policies for SWEEnv: an expert that applies the instance's fix, and a random baseline.

The expert is stateless. It reads the protocol from the system prompt and its own earlier
messages from the chat:

- native: replays each hunk of the fix (``instance.patch``, the inverse of the bug) as a
  ``str_replace_editor`` ``str_replace`` of the hunk's old lines (context and removed) by its new
  lines (context and added), a few calls per message, then calls ``submit``;
- text (mini-swe-agent's protocol): applies the fix with ``git apply`` in one bash block, then
  runs the submission command.

Actions are Hermes ``<tool_call>`` text, which the env reads under the native protocol.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from agentenv.envs.swe.env import SUBMIT_MARKER
from agentenv.envs.swe.factory import Instance
from agentenv.envs.swe.grading import touched_files
from agentenv.envs.swe.tools import BASH, EDITOR, SUBMIT

Messages = Sequence[dict[str, Any]]
CALLS_PER_MESSAGE = 4
"""Editor calls the expert puts in one message (the env's default ``max_calls_per_turn``)."""
_HUNK = re.compile(r"^@@ -\d+(?:,\d+)? \+\d+(?:,\d+)? @@")
_FILE = re.compile(r"^\+\+\+ b/(.+)$")
_HEREDOC = "AGENTENV_FIX_PATCH"


@dataclass(frozen=True)
class Hunk:
    """One hunk of a diff as an edit: ``old`` text replaced by ``new`` in ``path``."""

    path: str
    old: str
    new: str


def hunks(diff: str) -> list[Hunk]:
    """The hunks of a unified diff, each as the text before and after it (newline markers
    ``\\ No newline at end of file`` drop the preceding line's newline)."""
    found: list[Hunk] = []
    path, old, new = "", [], []

    def close() -> None:
        if old or new:
            found.append(Hunk(path, "".join(old), "".join(new)))

    for line in diff.splitlines(keepends=True):
        file = _FILE.match(line.rstrip("\n"))
        if file or _HUNK.match(line):
            close()
            old, new = [], []
            if file:
                path = file.group(1)
            continue
        if line.startswith("\\"):
            for side in (old, new):
                if side and side[-1].endswith("\n"):
                    side[-1] = side[-1][:-1]
        elif line.startswith(" "):
            old.append(line[1:])
            new.append(line[1:])
        elif line.startswith("-") and not line.startswith("--- "):
            old.append(line[1:])
        elif line.startswith("+"):
            new.append(line[1:])
    close()
    return found


def call_text(calls: Sequence[dict[str, Any]]) -> str:
    """Calls as Hermes ``<tool_call>`` blocks."""
    return "\n".join(
        f"<tool_call>\n{json.dumps(c, ensure_ascii=False)}\n</tool_call>" for c in calls
    )


def bash_block(command: str, thought: str) -> str:
    """A text-protocol reply: a thought and one bash block."""
    return f"THOUGHT: {thought}\n\n```bash\n{command}\n```"


def is_text_protocol(messages: Messages) -> bool:
    return bool(messages) and SUBMIT_MARKER in str(messages[0].get("content") or "")


def _own(messages: Messages) -> list[str]:
    """The expert's earlier messages (text of every assistant turn, tool calls included)."""
    texts = []
    for message in messages:
        if message.get("role") == "assistant":
            calls = json.dumps(message.get("tool_calls") or [])
            texts.append(f"{message.get('content') or ''}\n{calls}")
    return texts


def edit_calls(instance: Instance) -> list[dict[str, Any]]:
    """The fix as ``str_replace`` calls of the editor, one per hunk."""
    return [
        {
            "name": EDITOR.name,
            "arguments": {
                "command": "str_replace",
                "path": h.path,
                "old_str": h.old,
                "new_str": h.new,
            },
        }
        for h in hunks(instance.patch)
    ]


def _with_newline(text: str) -> str:
    return text if text.endswith("\n") else text + "\n"


def solve(task: Instance, messages: Messages) -> str:
    """The expert's next action for ``task`` given the chat so far."""
    own = _own(messages)
    if is_text_protocol(messages):
        if any("git apply" in text for text in own):
            return bash_block(
                f"echo {SUBMIT_MARKER} && git add -A && git diff --cached",
                "The fix is applied; submit it.",
            )
        files = " ".join(touched_files(task.patch))
        return bash_block(
            f"git apply <<'{_HEREDOC}'\n{_with_newline(task.patch)}{_HEREDOC}\ngit diff --stat",
            f"The failing tests point at {files}; apply the fix there.",
        )
    edits = edit_calls(task)
    done = sum(text.count(EDITOR.name) for text in own)
    if done >= len(edits):
        return call_text([{"name": SUBMIT.name, "arguments": {}}])
    return call_text(edits[done : done + CALLS_PER_MESSAGE])


# ---------------------------------------------------------------------------------------------
# Random baseline
# ---------------------------------------------------------------------------------------------
_COMMANDS = (
    "ls",
    "ls -R | head -50",
    "git status",
    "git diff",
    "python -m pytest -q -x 2>&1 | tail -5",
    "grep -rn 'def ' --include=*.py . | head -20",
    "cat README* | head -20",
    "python -c 'print(1)'",
    "sleep 0.1",
    "echo hello > notes.txt",
    "sed -i 's/==/!=/' $(ls *.py | head -1)",
    "rm -rf .git",
    "cat /etc/passwd | head -2",
    "",
)
_GARBAGE = ("submit", "<tool_call>{", "```bash\nls\n```\n```bash\npwd\n```", "I fixed it.", "")


def random_action(task: Instance, messages: Messages, rng: np.random.Generator) -> str:
    """A random baseline: a random command (60%), an editor call on a random file of the fix
    (20%), a submission (5%), or malformed text (15%)."""
    roll = rng.random()
    files = touched_files(task.patch) or ["README"]
    text = is_text_protocol(messages)
    if roll < 0.15:
        return str(rng.choice(_GARBAGE))
    if roll < 0.2:
        if text:
            return bash_block(f"echo {SUBMIT_MARKER} && git diff", "Submit.")
        return call_text([{"name": SUBMIT.name, "arguments": {}}])
    if roll < 0.4 and not text:
        path = str(rng.choice(files))
        command = str(rng.choice(["view", "str_replace", "insert", "undo_edit", "create"]))
        arguments = {"command": command, "path": path, "old_str": "return", "new_str": "return"}
        if command == "insert":
            arguments = {"command": command, "path": path, "insert_line": 1, "new_str": "# x\n"}
        return call_text([{"name": EDITOR.name, "arguments": arguments}])
    command = str(rng.choice(_COMMANDS))
    if text:
        return bash_block(command, "Look around.")
    return call_text([{"name": BASH.name, "arguments": {"command": command}}])
