"""The SWE env's tools in real bwrap sandboxes: schemas, ``format_run`` and every editor command."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from agentenv.envs.swe.tools import (
    BASH,
    CLIPPED,
    EDITOR,
    SUBMIT,
    TOOLS,
    Editor,
    format_run,
)
from agentenv.envs.tooluse.base import ToolError
from agentenv.envs.tooluse.schema import check_arguments
from agentenv.sandbox import RunResult, Sandbox

pytestmark = pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap not installed")

SOURCE = "def f():\n    return 1\n\n\ndef g():\n    return 1\n"
LONG = "".join(f"line {i}\n" for i in range(1, 21))


@pytest.fixture
async def sb(tmp_path: Path) -> AsyncIterator[Sandbox]:
    async with Sandbox.create("bwrap", root=tmp_path / "sandboxes") as sandbox:
        await sandbox.write_file("pkg/a.py", SOURCE)
        await sandbox.write_file("long.txt", LONG)
        yield sandbox


@pytest.fixture
def editor(sb: Sandbox) -> Editor:
    return Editor(sb)


async def fails(editor: Editor, **arguments: Any) -> str:
    """The message of the ToolError the call raises."""
    with pytest.raises(ToolError) as info:
        await editor(arguments)
    return str(info.value)


# -- schemas ---------------------------------------------------------------------------------
def test_tools_are_the_three_openai_functions() -> None:
    assert [t.name for t in TOOLS] == ["bash", "str_replace_editor", "submit"]
    for tool in TOOLS:
        schema = tool.schema()
        assert schema["type"] == "function" and schema["function"]["description"]
        assert schema["function"]["parameters"]["additionalProperties"] is False
    assert EDITOR.parameters["properties"]["command"]["enum"] == [
        "view",
        "create",
        "str_replace",
        "insert",
        "undo_edit",
    ]
    assert "fresh `bash -c` subshell" in BASH.description


@pytest.mark.parametrize(
    ("tool", "arguments"),
    [
        (BASH, {"command": "ls"}),
        (EDITOR, {"command": "view", "path": "a.py", "view_range": [1, -1]}),
        (EDITOR, {"command": "create", "path": "a.py", "file_text": "x"}),
        (EDITOR, {"command": "str_replace", "path": "a.py", "old_str": "a", "new_str": "b"}),
        (EDITOR, {"command": "insert", "path": "a.py", "insert_line": 0, "new_str": "x"}),
        (EDITOR, {"command": "undo_edit", "path": "/workspace/a.py"}),
        (SUBMIT, {}),
    ],
)
def test_good_arguments_pass_the_schema(tool: Any, arguments: dict[str, Any]) -> None:
    assert check_arguments(tool, arguments) == []


@pytest.mark.parametrize(
    ("tool", "arguments", "error"),
    [
        (BASH, {}, "missing required argument 'command'"),
        (BASH, {"command": 3}, "command must be string"),
        (BASH, {"command": "ls", "cwd": "/"}, "unexpected argument 'cwd'"),
        (EDITOR, {"command": "edit", "path": "a"}, "command must be one of"),
        (EDITOR, {"command": "view"}, "missing required argument 'path'"),
        (EDITOR, {"command": "view", "path": "a", "view_range": ["1", "2"]}, "view_range[0]"),
        (EDITOR, {"command": "insert", "path": "a", "insert_line": "3"}, "insert_line must be"),
        (SUBMIT, {"patch": "x"}, "unexpected argument 'patch'"),
    ],
)
def test_bad_arguments_fail_the_schema(tool: Any, arguments: dict[str, Any], error: str) -> None:
    errors = check_arguments(tool, arguments)
    assert errors and error in errors[0]


# -- bash observations -----------------------------------------------------------------------
def test_format_run_is_mini_swe_agents_observation() -> None:
    ran = RunResult(returncode=0, output="hi\n", truncated=False, timed_out=False, seconds=0.1)
    assert format_run(ran) == "<returncode>0</returncode>\n<output>\nhi\n</output>"
    bare = RunResult(returncode=1, output="no newline", truncated=False, timed_out=False, seconds=0)
    assert format_run(bare) == "<returncode>1</returncode>\n<output>\nno newline\n</output>"
    empty = RunResult(returncode=0, output="", truncated=False, timed_out=False, seconds=0)
    assert format_run(empty) == "<returncode>0</returncode>\n<output>\n</output>"


async def test_format_run_says_a_command_timed_out(sb: Sandbox) -> None:
    text = format_run(await sb.run("echo started; sleep 5", timeout=0.5))
    assert text.startswith("<returncode>137</returncode>\n<warning>The command timed out after")
    assert "s and was killed" in text and text.endswith("<output>\nstarted\n</output>")


# -- view ------------------------------------------------------------------------------------
async def test_view_file_numbers_lines_like_cat_n(editor: Editor) -> None:
    expected = (
        "Here's the result of running `cat -n` on /workspace/pkg/a.py:\n"
        "     1\tdef f():\n     2\t    return 1\n     3\t\n     4\t\n"
        "     5\tdef g():\n     6\t    return 1\n"
    )
    assert await editor({"command": "view", "path": "pkg/a.py"}) == expected
    assert await editor({"command": "view", "path": "/workspace/pkg/a.py"}) == expected


@pytest.mark.parametrize(
    ("view_range", "first", "last"), [([3, 5], 3, 5), ([18, -1], 18, 20), ([20, 20], 20, 20)]
)
async def test_view_range(editor: Editor, view_range: list[int], first: int, last: int) -> None:
    text = await editor({"command": "view", "path": "long.txt", "view_range": view_range})
    shown = [int(line.split("\t")[0]) for line in text.splitlines()[1:]]
    assert shown == list(range(first, last + 1))
    assert f"{first:6}\tline {first}" in text


@pytest.mark.parametrize(
    ("view_range", "error"),
    [
        ([0, 3], "first element `0` should be within the range of lines of the file: [1, 20]"),
        ([21, -1], "first element `21`"),
        ([3, 21], "second element `21` should be at most the number of lines"),
        ([5, 4], "second element `4` should be larger or equal than its first `5`"),
        ([1], "should be a list of two integers"),
        (["1", "2"], "should be a list of two integers"),
    ],
)
async def test_bad_view_ranges_are_explained(editor: Editor, view_range: Any, error: str) -> None:
    assert error in await fails(editor, command="view", path="long.txt", view_range=view_range)


async def test_view_empty_file(sb: Sandbox, editor: Editor) -> None:
    await sb.write_file("empty.txt", "")
    assert await editor({"command": "view", "path": "empty.txt"}) == (
        "The file /workspace/empty.txt is empty.\n"
    )


async def test_view_folder_lists_two_levels_without_hidden_items(
    sb: Sandbox, editor: Editor
) -> None:
    for path in ("pkg/sub/deep/too_deep.py", "pkg/.secret", ".git/HEAD", ".env", "pkg/sub/b.py"):
        await sb.write_file(path, "x")
    text = await editor({"command": "view", "path": "/workspace"})
    assert text == (
        "Here are the files and directories up to 2 levels deep in /workspace, excluding hidden "
        "items:\n/workspace/long.txt\n/workspace/pkg/\n/workspace/pkg/a.py\n/workspace/pkg/sub/\n"
    )
    sub = await editor({"command": "view", "path": "pkg"})
    assert "/workspace/pkg/sub/deep/\n" in sub and "/workspace/pkg/sub/b.py\n" in sub
    assert ".secret" not in sub and "too_deep" not in sub
    assert "not allowed when `path` points to a directory" in await fails(
        editor, command="view", path=".", view_range=[1, 2]
    )


async def test_long_output_is_clipped(sb: Sandbox) -> None:
    small = Editor(sb, max_output=100)
    text = await small({"command": "view", "path": "long.txt"})
    assert text.endswith(CLIPPED) and "<response clipped><NOTE>" in text
    kept = text.removesuffix(CLIPPED)
    assert len(kept) <= 101 and kept.endswith("\n") and "line 20" not in kept
    assert await small({"command": "view", "path": "long.txt", "view_range": [1, 2]}) == (
        "Here's the result of running `cat -n` on /workspace/long.txt:\n"
        "     1\tline 1\n     2\tline 2\n"
    )
    with pytest.raises(ValueError, match="max_output"):
        Editor(sb, max_output=0)


# -- create ----------------------------------------------------------------------------------
async def test_create_makes_the_file_and_its_folders(sb: Sandbox, editor: Editor) -> None:
    out = await editor({"command": "create", "path": "new/dir/b.py", "file_text": "x = 1\n"})
    assert out == "File created successfully at: /workspace/new/dir/b.py"
    assert await sb.read_file("new/dir/b.py") == "x = 1\n"


async def test_create_refuses_existing_paths_and_needs_text(editor: Editor) -> None:
    assert await fails(editor, command="create", path="pkg/a.py", file_text="x") == (
        "File already exists at: /workspace/pkg/a.py. Cannot overwrite files using command "
        "`create`."
    )
    assert "is a directory" in await fails(editor, command="create", path="pkg", file_text="x")
    assert await fails(editor, command="create", path="b.py") == (
        "Parameter `file_text` is required for command: create"
    )


# -- str_replace -----------------------------------------------------------------------------
async def test_str_replace_edits_once_and_shows_a_snippet(sb: Sandbox, editor: Editor) -> None:
    out = await editor(
        {
            "command": "str_replace",
            "path": "pkg/a.py",
            "old_str": "def g():\n    return 1",
            "new_str": "def g():\n    return 2",
        }
    )
    assert await sb.read_file("pkg/a.py") == "def f():\n    return 1\n\n\ndef g():\n    return 2\n"
    assert out.startswith(
        "The file /workspace/pkg/a.py has been edited. Here's the result of running `cat -n` on "
        "a snippet of /workspace/pkg/a.py:\n     1\tdef f():\n"
    )
    assert "     6\t    return 2\n" in out
    assert out.endswith(
        "Review the changes and make sure they are as expected. Edit the file again if necessary."
    )


async def test_str_replace_snippet_is_a_window(sb: Sandbox, editor: Editor) -> None:
    out = await editor(
        {"command": "str_replace", "path": "long.txt", "old_str": "line 10\n", "new_str": "ten\n"}
    )
    shown = [int(line.split("\t")[0]) for line in out.splitlines()[1:-1]]
    assert shown == list(range(6, 15)) and "    10\tten" in out


async def test_str_replace_without_new_str_deletes(sb: Sandbox, editor: Editor) -> None:
    await editor({"command": "str_replace", "path": "long.txt", "old_str": "line 3\n"})
    assert await sb.read_file("long.txt") == LONG.replace("line 3\n", "")


async def test_str_replace_is_whitespace_exact_and_byte_faithful(
    sb: Sandbox, editor: Editor
) -> None:
    assert await fails(
        editor, command="str_replace", path="pkg/a.py", old_str="def f():\n  return 1"
    ) == (
        "No replacement was performed, old_str `def f():\n  return 1` did not appear verbatim "
        "in /workspace/pkg/a.py."
    )
    await sb.write_file("tabs.mk", "all:\n\techo a\r\n\techo b\n")
    await editor({"command": "str_replace", "path": "tabs.mk", "old_str": "b", "new_str": "\tc"})
    assert await sb.read_bytes("tabs.mk") == b"all:\n\techo a\r\n\techo \tc\n"
    assert "     2\t\techo a\r" in await editor({"command": "view", "path": "tabs.mk"})


async def test_str_replace_refuses_ambiguous_and_empty_edits(sb: Sandbox, editor: Editor) -> None:
    assert await fails(editor, command="str_replace", path="pkg/a.py", old_str="return 1") == (
        "No replacement was performed. Multiple occurrences of old_str `return 1` in lines "
        "[2, 6]. Please ensure it is unique"
    )
    assert "must not be empty" in await fails(
        editor, command="str_replace", path="pkg/a.py", old_str=""
    )
    assert "is the same as new_str" in await fails(
        editor, command="str_replace", path="pkg/a.py", old_str="def f", new_str="def f"
    )
    assert await fails(editor, command="str_replace", path="pkg/a.py") == (
        "Parameter `old_str` is required for command: str_replace"
    )
    assert "must be a string" in await fails(
        editor, command="str_replace", path="pkg/a.py", old_str="def f", new_str=3
    )
    assert await sb.read_file("pkg/a.py") == SOURCE


# -- insert ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "line", "new", "result"),
    [
        ("a\nb\n", 0, "top", "top\na\nb\n"),
        ("a\nb\n", 1, "mid\n", "a\nmid\nb\n"),
        ("a\nb\n", 2, "x\ny", "a\nb\nx\ny\n"),
        ("a\nb", 2, "end", "a\nb\nend\n"),
        ("", 0, "first", "first\n"),
    ],
)
async def test_insert_adds_whole_lines(
    sb: Sandbox, editor: Editor, text: str, line: int, new: str, result: str
) -> None:
    await sb.write_file("f.txt", text)
    out = await editor({"command": "insert", "path": "f.txt", "insert_line": line, "new_str": new})
    assert await sb.read_file("f.txt") == result
    assert out.startswith(
        "The file /workspace/f.txt has been edited. Here's the result of running `cat -n` on a "
        "snippet of the edited file:\n"
    )
    assert "Review the changes and make sure they are as expected" in out


async def test_insert_snippet_shows_context(editor: Editor) -> None:
    out = await editor(
        {"command": "insert", "path": "long.txt", "insert_line": 10, "new_str": "new"}
    )
    shown = [line.split("\t") for line in out.splitlines()[1:-1]]
    assert shown[0] == ["     7", "line 7"] and ["    11", "new"] in shown
    assert shown[-1] == ["    15", "line 14"]


async def test_insert_errors(editor: Editor) -> None:
    assert await fails(editor, command="insert", path="long.txt", insert_line=21, new_str="x") == (
        "Invalid `insert_line` parameter: 21. It should be within the range of lines of the "
        "file: [0, 20]"
    )
    assert "[0, 20]" in await fails(
        editor, command="insert", path="long.txt", insert_line=-1, new_str="x"
    )
    assert await fails(editor, command="insert", path="long.txt", new_str="x") == (
        "Parameter `insert_line` is required for command: insert"
    )
    assert "must be an integer" in await fails(
        editor, command="insert", path="long.txt", insert_line="3", new_str="x"
    )
    assert await fails(editor, command="insert", path="long.txt", insert_line=1) == (
        "Parameter `new_str` is required for command: insert"
    )


# -- undo_edit -------------------------------------------------------------------------------
async def test_two_edits_then_two_undos_restore_the_original(sb: Sandbox, editor: Editor) -> None:
    await editor({"command": "str_replace", "path": "pkg/a.py", "old_str": "f()", "new_str": "h()"})
    await editor(
        {"command": "insert", "path": "/workspace/pkg/a.py", "insert_line": 0, "new_str": "#"}
    )
    await sb.write_file("long.txt", "untouched by undo\n")
    first = await editor({"command": "undo_edit", "path": "pkg/a.py"})
    assert first.startswith(
        "Last edit to /workspace/pkg/a.py undone successfully. Here's the result of running "
        "`cat -n` on /workspace/pkg/a.py:\n     1\tdef h():\n"
    )
    await editor({"command": "undo_edit", "path": "./pkg/a.py"})
    assert await sb.read_file("pkg/a.py") == SOURCE
    assert await sb.read_file("long.txt") == "untouched by undo\n"
    assert await fails(editor, command="undo_edit", path="pkg/a.py") == (
        "No edit history found for /workspace/pkg/a.py."
    )


async def test_undo_of_create_removes_the_file(sb: Sandbox, editor: Editor) -> None:
    await editor({"command": "create", "path": "b.py", "file_text": "x\n"})
    assert await editor({"command": "undo_edit", "path": "b.py"}) == (
        "Last edit to /workspace/b.py undone successfully: the file it created was removed."
    )
    assert (await sb.run("test -e b.py")).returncode == 1
    await editor({"command": "create", "path": "b.py", "file_text": "again\n"})
    assert await sb.read_file("b.py") == "again\n"


async def test_reset_forgets_the_history(editor: Editor) -> None:
    await editor({"command": "insert", "path": "long.txt", "insert_line": 0, "new_str": "x"})
    editor.reset()
    assert "No edit history" in await fails(editor, command="undo_edit", path="long.txt")


# -- paths -----------------------------------------------------------------------------------
@pytest.mark.parametrize("path", ["/etc/passwd", "../x", "pkg/../../x", "/workspacex/a"])
async def test_paths_outside_the_workspace_are_refused(editor: Editor, path: str) -> None:
    for arguments in (
        {"command": "view", "path": path},
        {"command": "create", "path": path, "file_text": "x"},
    ):
        message = await fails(editor, **arguments)
        assert message.startswith(f"The path {path} is outside the workspace")


async def test_symlinks_are_followed_inside_the_workspace_only(sb: Sandbox, editor: Editor) -> None:
    await sb.run("ln -s /etc/passwd out && ln -s pkg/a.py inside")
    assert "leads outside the workspace (to /etc/passwd)" in await fails(
        editor, command="view", path="out"
    )
    await editor({"command": "str_replace", "path": "inside", "old_str": "f()", "new_str": "h()"})
    assert (await sb.read_file("pkg/a.py")).startswith("def h():")
    await editor({"command": "undo_edit", "path": "pkg/a.py"})  # one history for both names
    assert await sb.read_file("pkg/a.py") == SOURCE


async def test_model_text_never_runs_on_the_host_or_as_a_command(
    sb: Sandbox, editor: Editor
) -> None:
    path = "$(touch pwned)`touch pwned2`; touch pwned3 'x"
    await editor({"command": "create", "path": path, "file_text": "ok\n"})
    assert "ok" in await editor({"command": "view", "path": path})
    await editor({"command": "undo_edit", "path": path})
    assert (await sb.run("ls")).output.split() == ["long.txt", "pkg"]


# -- other errors ----------------------------------------------------------------------------
async def test_command_and_path_arguments_are_checked(editor: Editor) -> None:
    assert "Unrecognized command None" in await fails(editor, path="a")
    assert await fails(editor, command="edit", path="a") == (
        "Unrecognized command 'edit'. The allowed commands for the str_replace_editor tool are: "
        "view, create, str_replace, insert, undo_edit"
    )
    assert await fails(editor, command="view") == "Parameter `path` is required for command: view"
    assert "must be a string" in await fails(editor, command="view", path=["a"])


@pytest.mark.parametrize("command", ["view", "str_replace", "insert"])
async def test_missing_files_and_folders_are_refused(editor: Editor, command: str) -> None:
    arguments = {"old_str": "x", "insert_line": 0, "new_str": "y"}
    assert await fails(editor, command=command, path="nope.py", **arguments) == (
        "The path /workspace/nope.py does not exist. Please provide a valid path."
    )
    if command != "view":
        assert await fails(editor, command=command, path="pkg", **arguments) == (
            "The path /workspace/pkg is a directory and only the `view` command can be used on "
            "directories."
        )


@pytest.mark.parametrize("data", [b"\x7fELF\x00\x01", b"caf\xe9\n"])
async def test_binary_and_non_utf8_files_are_refused(
    sb: Sandbox, editor: Editor, data: bytes
) -> None:
    await sb.write_file("blob.bin", data)
    for arguments in (
        {"command": "view"},
        {"command": "str_replace", "old_str": "E", "new_str": "e"},
        {"command": "insert", "insert_line": 0, "new_str": "x"},
    ):
        assert "is not UTF-8 text" in await fails(editor, path="blob.bin", **arguments)
    assert await sb.read_bytes("blob.bin") == data


async def test_large_files_and_special_files_are_refused(sb: Sandbox) -> None:
    editor = Editor(sb, max_file_bytes=100)
    assert "has 151 bytes, more than the editor's limit of 100 bytes" in await fails(
        editor, command="view", path="long.txt"
    )
    await sb.run("mkfifo pipe && ln -s missing broken")
    for path in ("pipe", "broken"):
        assert "is not a regular file or directory" in await fails(
            editor, command="view", path=path
        )
