"""The same candidate written differently: what a rule must see through (layout, keyword order, comments,
annotations, names imported from another module, a loss written through a helper)."""

from __future__ import annotations

import ast
from collections.abc import Callable

Splice = tuple[int, int, str]


def _offsets(text: str) -> Callable[[int, int], int]:
    lines = text.splitlines(keepends=True)
    starts = [0]
    for line in lines:
        starts.append(starts[-1] + len(line))

    def offset(line: int, column: int) -> int:
        return starts[line - 1] + len(lines[line - 1].encode()[:column].decode())

    return offset


def _apply(text: str, splices: list[Splice]) -> str:
    for start, end, new in sorted(splices, reverse=True):
        text = text[:start] + new + text[end:]
    ast.parse(text)  # the variant must stay valid Python
    return text


def _calls_spread_out(text: str) -> str:
    """Every outermost call with keywords: one argument a line, keywords reversed and spaced
    (``batch_size = 128``), a comment after each."""
    tree, offset = ast.parse(text), _offsets(text)
    calls = [node for node in ast.walk(tree) if isinstance(node, ast.Call) and node.keywords]
    inner = {id(n) for call in calls for n in ast.walk(call) if n is not call and isinstance(n, ast.Call)}

    def segment(node: ast.AST) -> str:
        return text[offset(node.lineno, node.col_offset) : offset(node.end_lineno, node.end_col_offset)]  # type: ignore[attr-defined]

    splices = []
    for call in (c for c in calls if id(c) not in inner):
        arguments = [f"{segment(a)},  # positional\n" for a in call.args]
        for keyword in reversed(call.keywords):
            shown = f"{keyword.arg} = " if keyword.arg else "**"
            arguments.append(f"{shown}{segment(keyword.value)},  # {keyword.arg or 'rest'}, réglé\n")
        new = f"{segment(call.func)}(  # one argument a line\n{''.join(arguments)})"
        splices.append((offset(call.lineno, call.col_offset), offset(call.end_lineno, call.end_col_offset), new))  # type: ignore[arg-type]
    return _apply(text, splices)


def _returns_parenthesized(text: str) -> str:
    """``return (\\n value\\n)`` for every return of a value."""
    tree, offset = ast.parse(text), _offsets(text)
    splices: list[Splice] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Return) and node.value is not None:
            value = node.value
            start = offset(value.lineno, value.col_offset)
            end = offset(value.end_lineno, value.end_col_offset)  # type: ignore[arg-type]
            splices += [(start, start, "(  # the result\n"), (end, end, "\n)")]
    return _apply(text, splices)


def _constants_annotated(text: str) -> str:
    """Module constants as ``NAME: type = (  # comment\\n value\\n)``."""
    tree, offset = ast.parse(text), _offsets(text)
    splices = []
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            try:
                kind = type(ast.literal_eval(node.value)).__name__
            except ValueError:
                continue
            start = offset(node.lineno, node.col_offset)
            value_start = offset(node.value.lineno, node.value.col_offset)
            end = offset(node.end_lineno, node.end_col_offset)  # type: ignore[arg-type]
            value = text[value_start:end]
            splices.append((start, end, f"{node.targets[0].id}: {kind} = (  # tuned\n    {value}\n)"))
    return _apply(text, splices)


def _imports_reversed(text: str) -> str:
    """``from m import a, b`` as ``from m import (\\n b,\\n a,\\n)``, a comment line before each definition."""
    tree, offset = ast.parse(text), _offsets(text)
    splices = []
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and node.module != "__future__":
            names = "".join(f"    {ast.unparse(alias)},\n" for alias in reversed(node.names))
            new = f"from {'.' * node.level}{node.module or ''} import (\n{names})"
            splices.append((offset(node.lineno, node.col_offset), offset(node.end_lineno, node.end_col_offset), new))  # type: ignore[arg-type]
        elif isinstance(node, ast.FunctionDef | ast.ClassDef):
            first = min([node.lineno, *(d.lineno for d in node.decorator_list)])
            splices.append((offset(first, 0), offset(first, 0), f"# {node.name} — below\n"))
    return _apply(text, splices)


def restyled(source: str) -> str:
    """Other layout, keyword order, spacing, annotations and comments; the same program."""
    for step in (_calls_spread_out, _returns_parenthesized, _constants_annotated, _imports_reversed):
        source = step(source)
    return source


def unparsed(source: str) -> str:
    """The block as :func:`ast.unparse` writes it: comments gone, one style throughout."""
    return ast.unparse(ast.parse(source)) + "\n"


WEIGHTED_MEAN = "(losses * weights).sum() / weights.sum().clamp(min=1e-12)"


def through_module_names(source: str) -> str:
    """Names of the project imported as a module (``import recsys.candidate as api_0``, ``api_0.TrainingPlan``),
    and a loss's weighted mean written through a ``weighted_mean(losses, weights)`` helper."""
    tree = ast.parse(source)
    aliases: dict[str, str] = {}
    body: list[ast.stmt] = []
    for number, node in enumerate(tree.body):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("recsys"):
            module = f"api_{number}"
            body.append(ast.Import([ast.alias(str(node.module), module)]))
            aliases |= {alias.asname or alias.name: f"{module}.{alias.name}" for alias in node.names}
        else:
            body.append(node)
    tree.body = body
    helper = False

    class Rename(ast.NodeTransformer):
        def visit_Name(self, node: ast.Name) -> ast.expr:
            if node.id in aliases and isinstance(node.ctx, ast.Load):
                return ast.parse(aliases[node.id], mode="eval").body
            return node

        def visit_BinOp(self, node: ast.BinOp) -> ast.expr:
            nonlocal helper
            if ast.unparse(node) == WEIGHTED_MEAN:
                helper = True
                return ast.parse("weighted_mean(losses, weights)", mode="eval").body
            return self.generic_visit(node)  # type: ignore[return-value]

    tree = Rename().visit(tree)
    text = ast.unparse(ast.fix_missing_locations(tree)) + "\n"
    if helper:
        text += f"\n\ndef weighted_mean(losses, weights):\n    return {WEIGHTED_MEAN}\n"
    return text


VARIANTS: dict[str, Callable[[str], str]] = {
    "as_written": lambda source: source,
    "unparsed": unparsed,
    "restyled": restyled,
    "module_names": through_module_names,
}
