"""An edit as a reviewer reads it: the parent's and the child's blocks as unified diffs, line by line.

Each line carries its kind, so the page marks insertions and deletions with ``<ins>``/``<del>``
(announced by screen readers, coloured by the style sheet) while keeping the ``+``/``-`` prefix.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Literal

from recsys.candidate import BLOCKS

LineKind = Literal["file", "hunk", "add", "delete", "context"]
CONTEXT_LINES = 3


@dataclass(frozen=True)
class DiffLine:
    kind: LineKind
    text: str


@dataclass(frozen=True)
class BlockDiff:
    """The changes to one block (e.g. ``loss.py``) and how many lines they add and delete."""

    block: str
    lines: tuple[DiffLine, ...]
    added: int
    deleted: int


def _kind(line: str) -> LineKind:
    if line.startswith(("---", "+++")):
        return "file"
    if line.startswith("@@"):
        return "hunk"
    if line.startswith("+"):
        return "add"
    if line.startswith("-"):
        return "delete"
    return "context"


def block_diffs(parent: dict[str, str], child: dict[str, str]) -> list[BlockDiff]:
    """The blocks that differ, in the candidate contract's order (then any others by name)."""
    names = [b for b in BLOCKS if b in parent or b in child]
    names += sorted((set(parent) | set(child)) - set(BLOCKS))
    diffs = []
    for name in names:
        before, after = parent.get(name, ""), child.get(name, "")
        if before == after:
            continue
        raw = difflib.unified_diff(
            before.splitlines(), after.splitlines(), f"{name}.py (parent)", f"{name}.py (child)",
            n=CONTEXT_LINES, lineterm="",
        )  # fmt: skip
        lines = tuple(DiffLine(_kind(line), line) for line in raw)
        added = sum(line.kind == "add" for line in lines)
        deleted = sum(line.kind == "delete" for line in lines)
        diffs.append(BlockDiff(name, lines, added, deleted))
    return diffs
