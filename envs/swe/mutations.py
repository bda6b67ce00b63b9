"""Procedural bug injection: AST mutations confined to one function of a Python module.

The families follow SWE-smith's procedural modifiers (Yang et al. 2025, "SWE-smith: Scaling Data
for Software Engineering Agents", arXiv 2504.21798; ``swesmith/bug_gen/procedural``):

=================  ===========================================================================
family             what it does (SWE-smith name)
=================  ===========================================================================
``op_flip``        flip an operator to its mirror: ``+``/``-``, ``*``/``/``, ``//``/``%``,
                   ``<<``/``>>``, ``&``/``|``, ``==``/``!=``, ``<``/``>``, ``<=``/``>=``,
                   ``in``/``not in``, ``is``/``is not``, ``and``/``or``
                   (``func_pm_flip_operators``)
``op_change``      replace an arithmetic or comparison operator by another of its kind
                   (``func_pm_op_change``)
``op_swap``        swap the operands of a binary operation or a single comparison
                   (``func_pm_op_swap``)
``op_break_chain`` drop the middle operand of ``a op b op c`` (``func_pm_op_break_chains``)
``change_const``   move an integer constant by one (``func_pm_op_change_const``)
``invert_if``      swap the bodies of an ``if``/``else`` (``func_pm_ctrl_invert_if``)
``remove_cond``    delete an ``if`` statement that has no ``else`` (``func_pm_remove_cond``)
``remove_assign``  delete an assignment (``func_pm_remove_assign``)
``remove_loop``    delete a ``for``/``while`` loop (``func_pm_remove_loop``)
``remove_wrapper`` replace a ``with``/``try`` statement by its body (``func_pm_remove_wrapper``)
``shuffle``        permute the statements of the function's body (``func_pm_ctrl_shuffle``)
=================  ===========================================================================

Every mutation is computed twice: on a copy of the module's AST (the *expected* tree) and as a
text edit of the function's own lines (an expression's exact source span re-written with
:func:`ast.unparse`, or whole statement lines deleted, dedented or moved). The edit is kept only
when the edited file parses to exactly the expected tree, so everything outside the edited span
— comments, formatting, the other functions — stays byte-identical. Pure: no I/O; deterministic
for a given source, family and seed.
"""

from __future__ import annotations

import ast
import copy
import difflib
import hashlib
import random
from collections.abc import Iterator
from dataclasses import dataclass

FAMILIES: tuple[str, ...] = (
    "op_flip",
    "op_change",
    "op_swap",
    "op_break_chain",
    "change_const",
    "invert_if",
    "remove_cond",
    "remove_assign",
    "remove_loop",
    "remove_wrapper",
    "shuffle",
)
"""The mutation families, in a fixed order."""

_FLIP: dict[type[ast.AST], type[ast.AST]] = {
    ast.Add: ast.Sub,
    ast.Sub: ast.Add,
    ast.Mult: ast.Div,
    ast.Div: ast.Mult,
    ast.FloorDiv: ast.Mod,
    ast.Mod: ast.FloorDiv,
    ast.LShift: ast.RShift,
    ast.RShift: ast.LShift,
    ast.BitAnd: ast.BitOr,
    ast.BitOr: ast.BitAnd,
    ast.Eq: ast.NotEq,
    ast.NotEq: ast.Eq,
    ast.Lt: ast.Gt,
    ast.Gt: ast.Lt,
    ast.LtE: ast.GtE,
    ast.GtE: ast.LtE,
    ast.In: ast.NotIn,
    ast.NotIn: ast.In,
    ast.Is: ast.IsNot,
    ast.IsNot: ast.Is,
    ast.And: ast.Or,
    ast.Or: ast.And,
}
_ARITH: tuple[type[ast.AST], ...] = (ast.Add, ast.Sub, ast.Mult, ast.Div, ast.FloorDiv, ast.Mod)
_COMPARE: tuple[type[ast.AST], ...] = (ast.Eq, ast.NotEq, ast.Lt, ast.LtE, ast.Gt, ast.GtE)


@dataclass(frozen=True)
class Mutation:
    """One injected bug: ``new_source`` is the whole file with ``function`` changed.

    ``start``/``end`` are the 1-based, inclusive line span of ``function`` in the original file and
    ``function_lines`` its text after the mutation (what :func:`combine` splices in).
    """

    family: str
    file: str
    function: str
    new_source: str
    diff: str
    start: int
    end: int
    function_lines: str

    @property
    def key(self) -> str:
        """A short stable hash of the change (file, function, diff)."""
        return hashlib.sha256(f"{self.file}\0{self.function}\0{self.diff}".encode()).hexdigest()[:8]


@dataclass(frozen=True)
class Function:
    """A function or method of a module: dotted ``name`` and the 1-based inclusive line span."""

    name: str
    start: int
    end: int
    node: ast.FunctionDef | ast.AsyncFunctionDef


def functions(tree: ast.Module) -> list[Function]:
    """Module-level functions and methods of (nested) classes, in source order."""
    found: list[Function] = []

    def visit(body: list[ast.stmt], prefix: str) -> None:
        for node in body:
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                start = min([node.lineno] + [d.lineno for d in node.decorator_list])
                found.append(Function(prefix + node.name, start, node.end_lineno or start, node))
            elif isinstance(node, ast.ClassDef):
                visit(node.body, f"{prefix}{node.name}.")

    visit(tree.body, "")
    return found


def unified_diff(old: str, new: str, path: str) -> str:
    """A ``git apply``/``patch -p1`` compatible diff of one file (``a/PATH`` → ``b/PATH``)."""
    lines = difflib.unified_diff(
        old.splitlines(keepends=True),
        new.splitlines(keepends=True),
        fromfile=f"a/{path}",
        tofile=f"b/{path}",
    )
    out: list[str] = []
    for line in lines:
        if line.endswith("\n"):
            out.append(line)
        else:
            out.append(line + "\n\\ No newline at end of file\n")
    return "".join(out)


# --- text edits ------------------------------------------------------------------------------


class _Skip(Exception):
    """The site cannot be edited textually (shared lines, odd layout)."""


def _offsets(lines: list[str]) -> list[int]:
    """Start offset of each line (0-based index) in the joined text."""
    out, total = [], 0
    for line in lines:
        out.append(total)
        total += len(line)
    return out


def _span(lines: list[str], node: ast.AST) -> tuple[int, int]:
    """Character offsets ``[start, end)`` of an expression node in the joined source."""
    starts = _offsets(lines)

    def offset(lineno: int, col: int) -> int:
        return starts[lineno - 1] + len(lines[lineno - 1].encode()[:col].decode())

    return offset(node.lineno, node.col_offset), offset(node.end_lineno, node.end_col_offset)


def _stmt_lines(lines: list[str], node: ast.stmt) -> tuple[int, int]:
    """0-based ``[start, end)`` line range of a statement that owns its lines, else ``_Skip``."""
    first = min(
        [node.lineno] + [d.lineno for d in getattr(node, "decorator_list", [])]
    )  # decorators open the statement
    head = lines[first - 1].encode()
    col = (
        node.col_offset if first == node.lineno else min(d.col_offset for d in node.decorator_list)
    )
    if head[:col].strip():
        raise _Skip("statement shares its first line")
    tail = lines[node.end_lineno - 1].encode()[node.end_col_offset :].strip()
    if tail and not tail.startswith(b"#"):
        raise _Skip("statement shares its last line")
    return first - 1, node.end_lineno


def _indent(lines: list[str], node: ast.stmt) -> str:
    line = lines[node.lineno - 1]
    return line[: len(line) - len(line.lstrip())]


def _block(lines: list[str], body: list[ast.stmt]) -> tuple[int, int]:
    return _stmt_lines(lines, body[0])[0], _stmt_lines(lines, body[-1])[1]


def _dedent(chunk: list[str], prefix: str, new: str) -> list[str]:
    out = []
    for line in chunk:
        if not line.strip():
            out.append(line)
        elif line.startswith(prefix):
            out.append(new + line[len(prefix) :])
        else:
            raise _Skip("body line with less indentation (multi-line string?)")
    return out


# --- sites -----------------------------------------------------------------------------------


def _replace_expr(tree: ast.Module, lines: list[str], node: ast.expr) -> list[str]:
    """Re-write ``node``'s source span with its (already mutated) unparsed text.

    Parenthesised when the bare text would parse differently in its context.
    """
    text = "".join(lines)
    start, end = _span(lines, node)
    want = ast.dump(tree)
    new = ast.unparse(node)
    for candidate in (new, f"({new})"):
        edited = text[:start] + candidate + text[end:]
        try:
            if ast.dump(ast.parse(edited)) == want:
                return edited.splitlines(keepends=True)
        except SyntaxError:
            continue
    raise _Skip("no text edit reproduces the mutated tree")


def _parents(tree: ast.AST) -> dict[int, tuple[ast.AST, str]]:
    """id(child statement) → (parent, field) for statement lists."""
    out: dict[int, tuple[ast.AST, str]] = {}
    for node in ast.walk(tree):
        for field in ("body", "orelse", "finalbody"):
            children = getattr(node, field, None)
            for child in children if isinstance(children, list) else []:
                if isinstance(child, ast.stmt):
                    out[id(child)] = (node, field)
        for handler in getattr(node, "handlers", None) or []:
            out[id(handler)] = (node, "handlers")
    return out


def _replace_stmt(
    tree: ast.AST, node: ast.stmt, replacement: list[ast.stmt], lines: list[str], text: list[str]
) -> list[str]:
    """Put ``replacement`` (tree) and ``text`` (source lines) in place of statement ``node``."""
    parent, field = _parents(tree)[id(node)]
    siblings: list[ast.stmt] = getattr(parent, field)
    index = next(i for i, s in enumerate(siblings) if s is node)
    if not replacement and len(siblings) == 1:
        replacement = [ast.Pass()]
        text = [_indent(lines, node) + "pass\n"]
    siblings[index : index + 1] = replacement
    start, end = _stmt_lines(lines, node)
    return lines[:start] + text + lines[end:]


def _edit(
    family: str, tree: ast.Module, node: ast.AST, lines: list[str], rng: random.Random
) -> list[str] | None:
    """Mutate ``node`` (in ``tree``, the expected copy) and return the edited lines, or None."""
    if family == "op_flip":
        if isinstance(node, ast.BinOp | ast.BoolOp) and type(node.op) in _FLIP:
            node.op = _FLIP[type(node.op)]()
        elif isinstance(node, ast.Compare) and len(node.ops) == 1 and type(node.ops[0]) in _FLIP:
            node.ops = [_FLIP[type(node.ops[0])]()]
        else:
            return None
        return _replace_expr(tree, lines, node)
    if family == "op_change":
        if isinstance(node, ast.BinOp) and type(node.op) in _ARITH:
            node.op = rng.choice([o for o in _ARITH if o is not type(node.op)])()
        elif isinstance(node, ast.Compare) and len(node.ops) == 1 and type(node.ops[0]) in _COMPARE:
            node.ops = [rng.choice([o for o in _COMPARE if o is not type(node.ops[0])])()]
        else:
            return None
        return _replace_expr(tree, lines, node)
    if family == "op_swap":
        if isinstance(node, ast.BinOp):
            node.left, node.right = node.right, node.left
        elif isinstance(node, ast.Compare) and len(node.ops) == 1:
            node.left, node.comparators = node.comparators[0], [node.left]
        else:
            return None
        other = node.right if isinstance(node, ast.BinOp) else node.comparators[0]
        if ast.dump(node.left) == ast.dump(other):
            return None
        return _replace_expr(tree, lines, node)
    if family == "op_break_chain":
        if isinstance(node, ast.BinOp) and isinstance(node.left, ast.BinOp):
            node.left = node.left.left
        elif isinstance(node, ast.Compare) and len(node.ops) >= 2:
            node.ops, node.comparators = node.ops[1:], node.comparators[1:]
        else:
            return None
        return _replace_expr(tree, lines, node)
    if family == "change_const":
        if not (isinstance(node, ast.Constant) and type(node.value) is int):
            return None
        node.value = node.value + rng.choice((-1, 1)) if node.value else 1
        return _replace_expr(tree, lines, node)
    if family == "invert_if":
        if not (isinstance(node, ast.If) and node.orelse):
            return None
        else_first = node.orelse[0]
        if lines[else_first.lineno - 1].lstrip().startswith("elif"):
            return None
        bs, be = _block(lines, node.body)
        es, ee = _block(lines, node.orelse)
        body = _dedent(lines[bs:be], _indent(lines, node.body[0]), _indent(lines, else_first))
        orelse = _dedent(lines[es:ee], _indent(lines, else_first), _indent(lines, node.body[0]))
        node.body, node.orelse = node.orelse, node.body
        return lines[:bs] + orelse + lines[be:es] + body + lines[ee:]
    if family == "remove_cond":
        if not (isinstance(node, ast.If) and not node.orelse):
            return None
        return _replace_stmt(tree, node, [], lines, [])
    if family == "remove_assign":
        if not isinstance(node, ast.Assign | ast.AugAssign | ast.AnnAssign):
            return None
        return _replace_stmt(tree, node, [], lines, [])
    if family == "remove_loop":
        if not isinstance(node, ast.For | ast.AsyncFor | ast.While):
            return None
        return _replace_stmt(tree, node, [], lines, [])
    if family == "remove_wrapper":
        if not isinstance(node, ast.With | ast.AsyncWith | ast.Try | ast.TryStar):
            return None
        bs, be = _block(lines, node.body)
        text = _dedent(lines[bs:be], _indent(lines, node.body[0]), _indent(lines, node))
        return _replace_stmt(tree, node, list(node.body), lines, text)
    if family == "shuffle":
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            return None
        body = node.body
        doc = int(
            isinstance(body[0], ast.Expr)
            and isinstance(body[0].value, ast.Constant)
            and isinstance(body[0].value.value, str)
        )
        stmts = body[doc:]
        if len(stmts) < 2:
            return None
        ranges = [_stmt_lines(lines, s) for s in stmts]
        order = list(range(len(stmts)))
        while order == sorted(order):
            rng.shuffle(order)
        out = lines[: ranges[0][0]]
        for slot, src in enumerate(order):
            out += lines[ranges[src][0] : ranges[src][1]]
            if slot + 1 < len(ranges):
                out += lines[ranges[slot][1] : ranges[slot + 1][0]]
        out += lines[ranges[-1][1] :]
        node.body = body[:doc] + [stmts[i] for i in order]
        return out
    raise ValueError(f"unknown mutation family {family!r}; known: {', '.join(FAMILIES)}")


_CANDIDATES: dict[str, tuple[type[ast.AST], ...]] = {
    "op_flip": (ast.BinOp, ast.BoolOp, ast.Compare),
    "op_change": (ast.BinOp, ast.Compare),
    "op_swap": (ast.BinOp, ast.Compare),
    "op_break_chain": (ast.BinOp, ast.Compare),
    "change_const": (ast.Constant,),
    "invert_if": (ast.If,),
    "remove_cond": (ast.If,),
    "remove_assign": (ast.Assign, ast.AugAssign, ast.AnnAssign),
    "remove_loop": (ast.For, ast.AsyncFor, ast.While),
    "remove_wrapper": (ast.With, ast.AsyncWith, ast.Try, ast.TryStar),
    "shuffle": (ast.FunctionDef, ast.AsyncFunctionDef),
}
"""Node types each family can act on (a cheap filter before the tree is copied)."""


def _seed(seed: int, *parts: object) -> int:
    digest = hashlib.sha256(repr((seed, *parts)).encode()).digest()
    return int.from_bytes(digest[:8], "big")


def _owners(tree: ast.Module) -> dict[int, Function]:
    owner_of: dict[int, Function] = {}
    for fn in functions(tree):
        for inner in ast.walk(fn.node):
            owner_of[id(inner)] = fn
    return owner_of


def sites(source: str, family: str) -> list[int]:
    """Cheap list of the ``ast.walk`` indices where ``family`` may apply (inside a function)."""
    if family not in FAMILIES:
        raise ValueError(f"unknown mutation family {family!r}; known: {', '.join(FAMILIES)}")
    tree = ast.parse(source)
    owner_of = _owners(tree)
    found = []
    for index, node in enumerate(ast.walk(tree)):
        fn = owner_of.get(id(node))
        if fn is None or not isinstance(node, _CANDIDATES[family]):
            continue
        if family == "shuffle" and node is not fn.node:
            continue
        if family == "change_const" and type(getattr(node, "value", None)) is not int:
            continue
        found.append(index)
    return found


def mutate(source: str, file: str, family: str, site: int, seed: int = 0) -> Mutation | None:
    """Mutate node ``site`` (an index from :func:`sites`); None when no exact text edit exists.

    ``file`` is the path recorded in the diff (relative to the package root). ``seed`` picks
    among the choices a family has (which operator, which permutation, +1 or -1).
    """
    tree = ast.parse(source)
    original = ast.dump(tree)
    lines = source.splitlines(keepends=True)
    fn = _owners(tree).get(id(list(ast.walk(tree))[site]))
    if fn is None:
        return None
    expected = copy.deepcopy(tree)
    target = list(ast.walk(expected))[site]
    rng = random.Random(_seed(seed, file, fn.name, site, family))
    try:
        edited = _edit(family, expected, target, lines, rng)
    except _Skip:
        return None
    if edited is None:
        return None
    new_source = "".join(edited)
    try:
        parsed = ast.parse(new_source)
    except SyntaxError:
        return None
    want = ast.dump(expected)
    if want == original or ast.dump(parsed) != want:
        return None
    delta = len(edited) - len(lines)
    return Mutation(
        family=family,
        file=file,
        function=fn.name,
        new_source=new_source,
        diff=unified_diff(source, new_source, file),
        start=fn.start,
        end=fn.end,
        function_lines="".join(edited[fn.start - 1 : fn.end + delta]),
    )


def mutations(source: str, file: str, family: str, seed: int = 0) -> Iterator[Mutation]:
    """Every site of ``family`` in ``source``'s functions, each mutated once, in source order."""
    for site in sites(source, family):
        mutation = mutate(source, file, family, site, seed)
        if mutation is not None:
            yield mutation


def combine(source: str, bugs: list[Mutation]) -> str:
    """Apply several mutations of one file, each in a different function, to ``source``."""
    if len({b.file for b in bugs}) > 1:
        raise ValueError("combine() takes mutations of one file")
    if len({b.function for b in bugs}) != len(bugs):
        raise ValueError("combine() takes mutations of distinct functions")
    lines = source.splitlines(keepends=True)
    for bug in sorted(bugs, key=lambda b: b.start, reverse=True):
        lines[bug.start - 1 : bug.end] = bug.function_lines.splitlines(keepends=True)
    return "".join(lines)
