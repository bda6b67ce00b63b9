"""Import order and import cycles of the package.

- Every module of agentenv (``agentenv.*``, ``agentenv.envs.*``, ``agentenv.policies.*``,
  ``agentenv.rewards.*``) imports as the first project module of a fresh interpreter, so a cycle
  that only bites when one of its modules is imported first fails. Run as a script, this file is
  the import server doing that: it loads the third-party modules the package uses (no project
  module), then forks one child per module. Each child starts with no project module in
  ``sys.modules``, exactly as a fresh interpreter, and pays only for project code.
- The static import graph has no cycle, counting the imports that run when a module is imported
  and, separately, function-local ones too (one must not hide a cycle).

Modules that need an optional extra that is not installed (docker, mcp, ray, vllm) are skipped:
a ``ModuleNotFoundError`` for exactly those names.
"""

from __future__ import annotations

import ast
import contextlib
import importlib
import importlib.util
import json
import os
import pkgutil
import subprocess
import sys
import traceback
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

PACKAGES = ("agentenv", "agentenv.envs", "agentenv.policies", "agentenv.rewards")
ROOTS = ("agentenv",)
OPTIONAL_EXTRAS = frozenset({"docker", "mcp", "ray", "vllm"})


def _optional_extra(exc: ModuleNotFoundError) -> str | None:
    top = (exc.name or "").partition(".")[0]
    return top if top in OPTIONAL_EXTRAS else None


def _ours(name: str, roots: Sequence[str]) -> bool:
    return any(name == root or name.startswith(root + ".") for root in roots)


def package_modules(packages: Sequence[str] = PACKAGES) -> dict[str, Path]:
    """Module name → source file of every module under ``packages`` (``pkgutil.walk_packages``
    over the installed package; a subpackage that needs a missing optional extra is listed but
    not walked)."""

    def onerror(name: str) -> None:
        exc = sys.exc_info()[1]
        if not (isinstance(exc, ModuleNotFoundError) and _optional_extra(exc)):
            raise exc

    modules = {}
    for top in packages:
        package = importlib.import_module(top)
        modules[top] = Path(package.__spec__.origin)
        for info in pkgutil.walk_packages(package.__path__, top + ".", onerror=onerror):
            modules[info.name] = Path(importlib.util.find_spec(info.name).origin)
    return modules


@pytest.fixture(scope="module")
def modules() -> dict[str, Path]:
    return package_modules()


# ---------------------------------------------------------------------------------------------
# each module first in a fresh interpreter
# ---------------------------------------------------------------------------------------------
def _in_child(fn: Callable[..., dict[str, Any]], *args: Any) -> dict[str, Any]:
    """``fn(*args)`` in a forked child, its JSON result read back over a pipe (the child's own
    output goes to /dev/null)."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        status = 1
        try:  # the child leaves by os._exit whatever happens: it must not run the server's loop
            os.close(read)
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, 1)
            os.dup2(devnull, 2)
            with os.fdopen(write, "w") as out:
                json.dump(fn(*args), out)
            status = 0
        finally:
            os._exit(status)
    os.close(write)
    with os.fdopen(read) as inp:
        text = inp.read()
    _, status = os.waitpid(pid, 0)
    if status != 0 or not text:
        return {"failed": f"the child exited without a result (wait status {status})"}
    return json.loads(text)


def _import_all(names: Sequence[str], roots: Sequence[str]) -> dict[str, Any]:
    """Import every module, then list the modules loaded that are not ours, in load order."""
    for name in names:
        with contextlib.suppress(ImportError):  # each module's own child reports it
            importlib.import_module(name)
    third_party = []
    for name, module in list(sys.modules.items()):
        spec = getattr(module, "__spec__", None)
        if name != "__main__" and not _ours(name, roots) and spec and spec.name == name:
            third_party.append(name)
    return {"third_party": third_party}


def _import_first(name: str) -> dict[str, Any]:
    try:
        importlib.import_module(name)
    except ModuleNotFoundError as exc:
        extra = _optional_extra(exc)
        return {"skipped": extra} if extra else {"failed": traceback.format_exc()}
    except Exception:
        return {"failed": traceback.format_exc()}
    return {}


def serve() -> None:
    """The import server: reads ``{"modules": [...], "roots": [...]}`` on stdin, writes
    ``{"imported": [...], "skipped": {module: extra}, "failed": {module: traceback}}``."""
    request = json.load(sys.stdin)
    names, roots = request["modules"], request["roots"]
    for name in _in_child(_import_all, names, roots)["third_party"]:
        if name not in sys.modules:
            importlib.import_module(name)
    leaked = sorted(name for name in sys.modules if _ours(name, roots))
    if leaked:
        raise RuntimeError(f"third-party modules imported project modules: {leaked}")
    report: dict[str, Any] = {"imported": [], "skipped": {}, "failed": {}}
    for name in names:
        result = _in_child(_import_first, name)
        if "failed" in result:
            report["failed"][name] = result["failed"]
        elif "skipped" in result:
            report["skipped"][name] = result["skipped"]
        else:
            report["imported"].append(name)
    json.dump(report, sys.stdout)


def _serve(
    names: Sequence[str], roots: Sequence[str], pythonpath: Path | None = None
) -> dict[str, Any]:
    env = dict(os.environ)
    if pythonpath is not None:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(pythonpath), env.get("PYTHONPATH")]))
    # -P: the test folder is not put on sys.path, so nothing in it shadows a real module
    done = subprocess.run(
        [sys.executable, "-P", __file__],
        input=json.dumps({"modules": list(names), "roots": list(roots)}),
        capture_output=True,
        text=True,
        env=env,
        timeout=1800,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.mark.slow
def test_every_module_imports_first(modules):
    # a package's __main__ runs the command line when imported: an entry point, not a module
    names = sorted(name for name in modules if name.rpartition(".")[2] != "__main__")
    report = _serve(names, ROOTS)
    failed = "\n\n".join(f"{name} imported first:\n{tb}" for name, tb in report["failed"].items())
    assert not report["failed"], failed
    assert sorted([*report["imported"], *report["skipped"]]) == names


def test_import_server_reports_an_order_dependent_cycle(tmp_path):
    package = tmp_path / "cyc"
    package.mkdir()
    files = {
        "__init__.py": "",
        # a first works (A exists when b asks for it); b first fails (a asks for B too early)
        "a.py": "A = 1\nfrom cyc.b import B\n",
        "b.py": "from cyc.a import A\nB = 2\n",
        "absent.py": "import cyc_no_such_module\n",
    }
    extra = next((e for e in sorted(OPTIONAL_EXTRAS) if importlib.util.find_spec(e) is None), None)
    if extra:
        files["extra.py"] = f"import {extra}.client\n"
    for name, text in files.items():
        (package / name).write_text(text)
    names = ["cyc", *(f"cyc.{name[:-3]}" for name in files if name != "__init__.py")]
    report = _serve(names, ["cyc"], pythonpath=tmp_path)
    assert report["imported"] == ["cyc", "cyc.a"]
    assert set(report["failed"]) == {"cyc.b", "cyc.absent"}
    assert "cannot import name 'B'" in report["failed"]["cyc.b"]
    assert report["skipped"] == ({"cyc.extra": extra} if extra else {})


# ---------------------------------------------------------------------------------------------
# the static import graph
# ---------------------------------------------------------------------------------------------
def _type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _import_nodes(body: list[ast.stmt], lazy: bool) -> Iterator[ast.Import | ast.ImportFrom]:
    """Import statements that run when the module is imported (class bodies, if/try/with blocks;
    not ``if TYPE_CHECKING:``), plus those inside functions when ``lazy``."""
    for node in body:
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            if lazy:
                yield from (n for n in ast.walk(node) if isinstance(n, ast.Import | ast.ImportFrom))
        elif isinstance(node, ast.If) and _type_checking(node.test):
            yield from _import_nodes(node.orelse, lazy)
        else:
            for field in ("body", "orelse", "finalbody", "handlers", "cases"):
                block = getattr(node, field, None)
                if isinstance(block, list):
                    yield from _import_nodes(block, lazy)


def _packages_above(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def import_graph(modules: dict[str, Path], *, lazy: bool) -> dict[str, dict[str, int]]:
    """Module → {project module it imports: line}.

    ``import a.b`` and ``from a import b`` point at the most specific project module named
    (``a.b`` if it is a module, else ``a``), and at the packages above it that the importer is
    not inside (importing a submodule runs its packages' ``__init__`` first; the importer's own
    packages are already being imported when it runs). An explicit import of one of its own
    packages (``from agentenv import X`` inside ``agentenv.envs``) counts: it reads a partly
    initialised package.
    """

    def resolve(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    graph = {}
    for module, path in modules.items():
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        inside = set(_packages_above(module))
        edges: dict[str, int] = {}
        for node in _import_nodes(ast.parse(path.read_text(encoding="utf-8")).body, lazy):
            if isinstance(node, ast.Import):
                targets = [resolve(alias.name) for alias in node.names]
            else:
                base = node.module or ""
                if node.level:
                    parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*parts, base] if base else parts)
                targets = [
                    f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else resolve(base)
                    for alias in node.names
                ]
            for target in filter(None, targets):
                above = [p for p in _packages_above(target) if p not in inside]
                for name in [target, *above]:
                    if name != module:
                        edges.setdefault(name, node.lineno)
        graph[module] = edges
    return graph


def find_cycles(graph: dict[str, dict[str, int]]) -> list[str]:
    """One shortest cycle per strongly connected component, as ``a (line 3) -> b (line 7) -> a``."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    components: list[set[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                components.append(component)

    for v in sorted(graph):
        if v not in index:
            visit(v)
    cycles = []
    for component in components:
        start = min(component)
        came_from: dict[str, str] = {}
        queue = deque([start])
        while start not in came_from:
            v = queue.popleft()
            for w in sorted(graph[v]):
                if w in component and w not in came_from:
                    came_from[w] = v
                    queue.append(w)
        path, v = [], came_from[start]
        while v != start:
            path.append(v)
            v = came_from[v]
        path = [start, *reversed(path)]
        hops = [f"{a} (line {graph[a][b]})" for a, b in zip(path, [*path[1:], start], strict=True)]
        cycles.append(" -> ".join([*hops, start]))
    return sorted(cycles)


@pytest.mark.parametrize("lazy", [False, True], ids=["at-import", "with-function-local"])
def test_no_import_cycle(modules, lazy):
    cycles = find_cycles(import_graph(modules, lazy=lazy))
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_import_graph_finds_cycles(tmp_path):
    package = tmp_path / "pkg"
    package.mkdir()
    files = {
        "__init__.py": "from pkg.a import A\n",
        # through a package re-export: pkg -> pkg.a -> pkg.b -> pkg
        "a.py": "from pkg.b import B\n\nA = 1\n",
        "b.py": "B = 2\nfrom pkg import A\n",
        # only through a function-local import
        "c.py": "def f():\n    from pkg.d import D\n\n    return D\n",
        "d.py": "from .c import f\n\nD = f\n",
        # type-only imports never run
        "e.py": "from typing import TYPE_CHECKING\n\nif TYPE_CHECKING:\n    from pkg.f import F\n",
        "f.py": "from pkg.e import TYPE_CHECKING as F\n",
    }
    for name, text in files.items():
        (package / name).write_text(text)
    modules = {
        "pkg" if name == "__init__.py" else f"pkg.{name[:-3]}": package / name for name in files
    }
    assert find_cycles(import_graph(modules, lazy=False)) == [
        "pkg (line 1) -> pkg.a (line 1) -> pkg.b (line 2) -> pkg"
    ]
    assert find_cycles(import_graph(modules, lazy=True)) == [
        "pkg (line 1) -> pkg.a (line 1) -> pkg.b (line 2) -> pkg",
        "pkg.c (line 2) -> pkg.d (line 1) -> pkg.c",
    ]


if __name__ == "__main__":
    serve()
