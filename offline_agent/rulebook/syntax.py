"""Edits of a block's syntax tree that keep the rest of its text as it was written.

A rule finds what it changes by structure and name (the module constant ``DIM``, the ``TrainingPlan(...)``
call in ``training_plan()``, the return statement of the loss's ``forward``), never by matching text, so a
reformatted block (other line breaks, keyword order, comments between arguments, spacing) takes the same
edit. Each edit splices new text over the span of the node it changes, so comments and layout elsewhere
survive; a changed expression is written with :func:`ast.unparse`.
"""

from __future__ import annotations

import ast
import copy
import functools
import re
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from recsys.candidate import parse_block
from recsys.errors import EvorecError

_LINE_END = re.compile(r"\r\n|\r|\n")
Function = ast.FunctionDef | ast.AsyncFunctionDef
ConstantValue = str | bytes | bool | int | float | None
"""A value a rule writes into code (as :func:`ast.unparse` writes an ``ast.Constant``)."""


class NotFound(EvorecError):
    """The code lacks the structure an edit or a precondition looks for; the message says what and where."""


def lines_of(text: str) -> list[str]:
    """``text`` split after each line end the Python tokenizer counts (``\\n``, ``\\r\\n``, ``\\r``), ends kept."""
    starts = [0, *(match.end() for match in _LINE_END.finditer(text))]
    lines = [text[start:end] for start, end in zip(starts, [*starts[1:], len(text)], strict=True)]
    return lines if lines[-1] else lines[:-1]


def callee(call: ast.Call) -> str | None:
    """The name a call is made by: ``Adam`` for ``Adam(...)`` and for ``torch.optim.Adam(...)``."""
    if isinstance(call.func, ast.Name):
        return call.func.id
    return call.func.attr if isinstance(call.func, ast.Attribute) else None


class _Fill(ast.NodeTransformer):
    """Names that are holes of a pattern replaced by their nodes (a string: a name)."""

    def __init__(self, holes: dict[str, ast.expr | str]) -> None:
        self.holes = holes

    def visit_Name(self, node: ast.Name) -> ast.expr:
        hole = self.holes.get(node.id)
        if hole is None:
            return node
        return ast.Name(hole, node.ctx) if isinstance(hole, str) else copy.deepcopy(hole)


def expression(pattern: str, **holes: ast.expr | str) -> ast.expr:
    """``pattern`` parsed as an expression, each name in ``holes`` replaced by that node (a string: a name)."""
    return ast.fix_missing_locations(_Fill(holes).visit(ast.parse(pattern, mode="eval").body))


def statement(pattern: str, **holes: ast.expr | str) -> ast.stmt:
    """``pattern`` parsed as one statement, its holes filled as in :func:`expression`."""
    return ast.fix_missing_locations(_Fill(holes).visit(ast.parse(pattern).body[0]))


def imported_names(statement: ast.Import | ast.ImportFrom) -> list[tuple[str, ast.alias]]:
    """The names an import statement binds, each with its alias node (``import torch.nn`` binds ``torch``)."""
    bound = []
    for alias in statement.names:
        if alias.name != "*":
            default = alias.name.split(".")[0] if isinstance(statement, ast.Import) else alias.name
            bound.append((alias.asname or default, alias))
    return bound


def literal(node: ast.expr) -> Any:
    """The value of a literal expression; raises :class:`ValueError` for anything else."""
    try:
        return ast.literal_eval(node)
    except (TypeError, SyntaxError, RecursionError) as exc:
        raise ValueError(str(exc)) from exc


class Code:
    """One block's text and its syntax tree. Edits return the new text; parse it again for the next edit."""

    def __init__(self, block: str, text: str) -> None:
        self.block = block
        self.text = text
        try:
            self.tree = parse_block(text, filename=f"{block}.py")
        except SyntaxError as exc:
            raise NotFound(f"{block}.py does not parse: line {exc.lineno}: {exc.msg}") from exc
        self.lines = lines_of(text)
        self._starts = [0]
        for line in self.lines:
            self._starts.append(self._starts[-1] + len(line))

    # finding things --------------------------------------------------------------------------------------
    @property
    def where(self) -> str:
        return f"{self.block}.py"

    def constant_node(self, name: str) -> ast.expr | None:
        """The value of the last module-level ``name = value`` (or ``name: type = value``)."""
        found = None
        for statement in self.tree.body:
            if isinstance(statement, ast.Assign):
                targets = statement.targets
            elif isinstance(statement, ast.AnnAssign) and statement.value is not None:
                targets = [statement.target]
            else:
                continue
            if [ast.unparse(target) for target in targets] == [name]:
                found = statement.value
        return found

    def constant(self, name: str) -> Any:
        """The literal value of the module constant ``name``; None when there is none or it is no literal."""
        node = self.constant_node(name)
        if node is None:
            return None
        try:
            return literal(node)
        except ValueError:
            return None

    def bound_value(self, node: ast.expr) -> ast.expr:
        """The value a module constant's name stands for (``lr=LEARNING_RATE``: the ``1e-3`` of
        ``LEARNING_RATE = 1e-3``), else ``node``: an edit of the keyword then sets the constant, which a
        declared search space may name, instead of leaving it unread."""
        if isinstance(node, ast.Name):
            return self.constant_node(node.id) or node
        return node

    def classdef(self, name: str) -> ast.ClassDef | None:
        return next((s for s in self.tree.body if isinstance(s, ast.ClassDef) and s.name == name), None)

    def function(self, name: str, scope: ast.Module | ast.ClassDef | None = None) -> Function:
        """The function ``name`` defined directly in ``scope`` (the module by default)."""
        found = next((s for s in (scope or self.tree).body if isinstance(s, Function) and s.name == name), None)
        if found is None:
            owner = f"class {scope.name}" if isinstance(scope, ast.ClassDef) else "the module"
            raise NotFound(f"{self.where}: {owner} defines no {name}()")
        return found

    def uses(self, name: str) -> bool:
        """Whether ``name`` occurs as a name, an attribute or a defined function or class anywhere."""
        return any(
            (isinstance(node, ast.Name) and node.id == name)
            or (isinstance(node, ast.Attribute) and node.attr == name)
            or (isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef) and node.name == name)
            for node in ast.walk(self.tree)
        )

    def returned_class(self, function: str) -> ast.ClassDef:
        """The class of this module that ``function()`` returns an instance of (``return SASRec(spec)``)."""
        body = self.function(function).body
        for statement in body:
            if isinstance(statement, ast.Return) and isinstance(statement.value, ast.Call):
                name = callee(statement.value)
                found = self.classdef(name) if name else None
                if found is not None:
                    return found
        raise NotFound(f"{self.where}: {function}() returns no instance of a class defined in it")

    def calls(self, within: ast.AST, name: str) -> list[ast.Call]:
        """Every call made by ``name`` (plain or as an attribute) inside ``within``."""
        return [node for node in ast.walk(within) if isinstance(node, ast.Call) and callee(node) == name]

    def the_call(self, function: str, name: str) -> ast.Call:
        """The one call by ``name`` in the module function ``function``."""
        found = self.calls(self.function(function), name)
        if len(found) != 1:
            raise NotFound(f"{self.where}: {function}() makes {len(found)} {name}(...) calls, not one")
        return found[0]

    def call_with_keyword(self, function: str, keyword: str) -> ast.Call:
        """The one call in ``function`` that passes ``keyword=``."""
        found = [
            call
            for call in ast.walk(self.function(function))
            if isinstance(call, ast.Call) and keyword_of(call, keyword)
        ]
        if len(found) != 1:
            raise NotFound(f"{self.where}: {function}() makes {len(found)} calls with {keyword}=..., not one")
        return found[0]

    def final_return(self, function: Function, owner: str = "") -> ast.expr:
        """The value of the return statement that ends ``function``."""
        last = function.body[-1]
        if not isinstance(last, ast.Return) or last.value is None:
            raise NotFound(f"{self.where}: {owner}{function.name}() does not end by returning a value")
        return last.value

    def imports(self) -> Iterator[ast.Import | ast.ImportFrom]:
        return (s for s in self.tree.body if isinstance(s, ast.Import | ast.ImportFrom))

    def bound_by_imports(self) -> set[str]:
        return {name for statement in self.imports() for name, _ in imported_names(statement)}

    # positions --------------------------------------------------------------------------------------------
    def offset(self, line: int, column: int) -> int:
        """The character offset of a node position (``column`` counts UTF-8 bytes, as the parser does)."""
        return self._starts[line - 1] + len(self.lines[line - 1].encode()[:column].decode())

    def span(self, node: ast.AST) -> tuple[int, int]:
        start = self.offset(node.lineno, node.col_offset)  # type: ignore[attr-defined]
        return start, self.offset(node.end_lineno, node.end_col_offset)  # type: ignore[attr-defined]

    def segment(self, node: ast.AST) -> str:
        start, end = self.span(node)
        return self.text[start:end]

    def line_start(self, line: int) -> int:
        """Offset of the start of ``line`` (1-based); one past the last line is the end of the text."""
        return self._starts[min(line, len(self.lines) + 1) - 1]

    def indentation(self, statement: ast.stmt) -> str:
        prefix = self.lines[statement.lineno - 1].encode()[: statement.col_offset].decode()
        if prefix.strip():
            raise NotFound(f"{self.where}, line {statement.lineno}: the statement shares its line with other code")
        return prefix

    def first_line(self, statement: ast.stmt) -> int:
        """The first line of ``statement`` with its decorators and the comment lines right above it."""
        decorators = getattr(statement, "decorator_list", [])
        line = min([statement.lineno, *(d.lineno for d in decorators)])
        while line > 1 and self.lines[line - 2].lstrip().startswith("#"):
            line -= 1
        return line

    # edits: each returns the whole new text -----------------------------------------------------------------
    def splice(self, start: int, end: int, text: str) -> str:
        return self.text[:start] + text + self.text[end:]

    def replace(self, node: ast.AST, new: ast.expr | str) -> str:
        """``node`` replaced by ``new`` (a node is written with :func:`ast.unparse`)."""
        start, end = self.span(node)
        return self.splice(start, end, new if isinstance(new, str) else ast.unparse(new))

    def replace_statement(self, statement: ast.stmt, code: str) -> str:
        """``statement`` (with its decorators and the comments right above it) replaced by the lines ``code``."""
        start = self.line_start(self.first_line(statement))
        end = self.line_start(statement.end_lineno + 1)  # type: ignore[operator]
        return self.splice(start, end, code.rstrip("\n") + "\n")

    def rename(self, old: str, new: str) -> str:
        """Every use of the name ``old`` (not an attribute of that name) written ``new``."""
        names = [node for node in ast.walk(self.tree) if isinstance(node, ast.Name) and node.id == old]
        text = self.text
        for start, end in sorted(map(self.span, names), reverse=True):
            text = text[:start] + new + text[end:]
        return text

    def set_value(self, node: ast.expr, value: ConstantValue) -> str:
        return self.replace(node, written(value))

    def set_keyword(self, call: ast.Call, name: str, value: ConstantValue) -> str:
        """``call`` with ``name=value``: the keyword's value (or the module constant it names) replaced, or the
        keyword added after the arguments."""
        present = keyword_of(call, name)
        if present is not None:
            return self.set_value(self.bound_value(present.value), value)
        arguments = [*call.args, *call.keywords]
        added = f"{name}={written(value)}"
        if not arguments:
            end = self.span(call)[1] - 1  # before the closing parenthesis
            return self.splice(end, end, added)
        end = max(self.span(argument)[1] for argument in arguments)
        return self.splice(end, end, f", {added}")

    def rename_call(self, call: ast.Call, name: str) -> str:
        """``call`` made by ``name`` instead: ``torch.optim.Adam(...)`` becomes ``torch.optim.AdamW(...)``."""
        func = copy.deepcopy(call.func)
        if isinstance(func, ast.Attribute):
            func.attr = name
            return self.replace(call.func, func)
        return self.replace(call.func, ast.Name(name))

    def insert_after(self, statement: ast.stmt, new: Sequence[ast.stmt]) -> str:
        """``new`` statements after ``statement``, at its indentation."""
        indent = self.indentation(statement)
        text = "".join(f"{indent}{line}\n" for node in new for line in ast.unparse(node).splitlines())
        position = self.line_start(statement.end_lineno + 1)  # type: ignore[operator]
        prefix = "" if self.text[:position].endswith(("\n", "\r")) or not self.text else "\n"
        return self.splice(position, position, prefix + text)

    def append_to(self, function: Function, new: Sequence[ast.stmt]) -> str:
        if function.body[-1].lineno == function.lineno:
            raise NotFound(f"{self.where}, line {function.lineno}: {function.name}() is written on one line")
        return self.insert_after(function.body[-1], new)

    def add_imports(self, statements: Sequence[ast.Import | ast.ImportFrom]) -> str:
        """The imports among ``statements`` that bind a name no import of this module binds yet, added after
        its last top-level import (after the docstring when it has none)."""
        bound = self.bound_by_imports()
        missing: list[ast.stmt] = []
        for statement in statements:
            aliases = [alias for name, alias in imported_names(statement) if name not in bound]
            if aliases:
                missing.append(
                    ast.Import(aliases)
                    if isinstance(statement, ast.Import)
                    else ast.ImportFrom(statement.module, aliases, statement.level)
                )
                bound |= {name for name, _ in imported_names(missing[-1])}  # type: ignore[arg-type]
        if not missing:
            return self.text
        anchors: list[ast.stmt] = list(self.imports())
        if not anchors and self.docstring():
            anchors = self.tree.body[:1]
        if anchors:
            return self.insert_after(anchors[-1], missing)
        return "".join(f"{ast.unparse(node)}\n" for node in missing) + "\n" + self.text

    def docstring(self) -> bool:
        first = self.tree.body[0] if self.tree.body else None
        return (
            isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str)
        )

    def first_definition(self) -> ast.stmt | None:
        """The first top-level function or class: where leading constants and helpers end."""
        return next((s for s in self.tree.body if isinstance(s, Function | ast.ClassDef)), None)

    def insert_code(self, code: str, before: ast.stmt | None) -> str:
        """``code`` (top-level statements) before the statement ``before`` (its decorators and the comments
        above it) with two blank lines either side, or at the end of the module."""
        code = code.strip("\n")
        if before is None:
            return self.text.rstrip("\n") + f"\n\n\n{code}\n"
        position = self.line_start(self.first_line(before))
        return self.splice(position, position, f"{code}\n\n\n")

    def add_constants(self, code: str) -> str:
        """Module constant assignments in ``code`` after the module's last leading one (or its imports)."""
        end = self.first_definition()
        leading = [
            s for s in self.tree.body[: self.tree.body.index(end) if end else None] if not isinstance(s, ast.Expr)
        ]
        if not leading:
            return self.insert_code(code, end)
        position = self.line_start(leading[-1].end_lineno + 1)  # type: ignore[operator]
        separator = "" if isinstance(leading[-1], ast.Assign | ast.AnnAssign) else "\n"
        return self.splice(position, position, separator + code.strip("\n") + "\n")


def written(value: ConstantValue) -> str:
    """``value`` as Python source, strings in double quotes as the project writes them."""
    shown = ast.unparse(ast.Constant(value))
    if isinstance(value, str) and shown.startswith("'") and '"' not in value:  # then no quote is escaped
        return f'"{shown[1:-1]}"'
    return shown


def keyword_of(call: ast.Call, name: str) -> ast.keyword | None:
    return next((k for k in call.keywords if k.arg == name), None)


class Template:
    """A code template: a Python file under ``templates/`` whose imports are merged into the block it is
    added to and whose other statements (its docstring left out) are inserted as written."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.code = Code(path.stem, path.read_text())

    @functools.cached_property
    def imports(self) -> list[ast.Import | ast.ImportFrom]:
        return list(self.code.imports())

    def statements(self) -> list[ast.stmt]:
        """The statements after the docstring that are not imports."""
        body = self.code.tree.body[1:] if self.code.docstring() else self.code.tree.body
        return [s for s in body if not isinstance(s, ast.Import | ast.ImportFrom)]

    def text_of(self, statements: Sequence[ast.stmt]) -> str:
        """The template's own text of ``statements`` (consecutive), comments and layout included."""
        if not statements:
            return ""
        start = self.code.line_start(self.code.first_line(statements[0]))
        return self.code.text[start : self.code.line_start(statements[-1].end_lineno + 1)]  # type: ignore[operator]

    @property
    def text(self) -> str:
        return self.path.read_text()

    @property
    def constants_only(self) -> bool:
        return all(isinstance(s, ast.Assign | ast.AnnAssign) for s in self.statements())

    def add_to(self, code: Code, before: Callable[[Code], ast.stmt] | None = None) -> str:
        """``code`` with the template's missing imports, then its statements: constants after the module's
        constants, definitions before the statement ``before`` finds (default: the first function or class)."""
        with_imports = Code(code.block, code.add_imports(self.imports))
        body = self.text_of(self.statements())
        if self.constants_only:
            return with_imports.add_constants(body)
        return with_imports.insert_code(body, before(with_imports) if before else with_imports.first_definition())


@functools.cache
def load_template(path: Path) -> Template:
    """The template at ``path``, read and parsed once (templates are package data)."""
    return Template(path)
