"""Proposed changes to a candidate's blocks: parsing replies, applying them, spotting near-duplicates.

A reply (from an LLM or the rulebook) holds a rationale in free text and any number of edits::

    <<<<<<< SEARCH loss.py
    negatives = torch.randint(1, self.num_items + 1, positives.shape, device=positives.device)
    =======
    negatives = torch.randint(1, self.num_items + 1, (*positives.shape, 16), device=positives.device)
    >>>>>>> REPLACE

or whole-block rewrites in a fenced block labelled with the block's file name (```python loss.py).
Each SEARCH text must occur exactly once in its block. A malformed reply is rejected with a
reason that the next prompt shows to the proposer.
"""

from __future__ import annotations

import hashlib
import io
import re
import tokenize
from dataclasses import dataclass, field

from recsys.candidate import BLOCKS
from recsys.errors import EvorecError

EDIT = re.compile(
    r"^<{7} SEARCH[ \t]+(?P<block>[\w.]+)[ \t]*\n(?P<search>.*?)^={7}[ \t]*\n(?P<replace>.*?)^>{7} REPLACE[ \t]*$",
    re.MULTILINE | re.DOTALL,
)
REWRITE = re.compile(
    r"^```(?:python)?[ \t]+(?P<block>\w+)\.py[ \t]*\n(?P<source>.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL
)


class EditError(EvorecError):
    """A proposed change cannot be applied; the message is fed back to the proposer."""


@dataclass(frozen=True)
class Edit:
    block: str
    search: str
    replace: str


@dataclass(frozen=True)
class ProposedChange:
    rationale: str
    edits: tuple[Edit, ...] = ()
    rewrites: dict[str, str] = field(default_factory=dict)


def _block_name(raw: str) -> str:
    name = raw.removesuffix(".py")
    if name not in BLOCKS:
        raise EditError(f"block {raw!r} does not exist; the blocks are {', '.join(b + '.py' for b in BLOCKS)}")
    return name


def parse_reply(text: str) -> ProposedChange:
    """The edits and rewrites of a reply; raises :class:`EditError` saying what is malformed."""
    edits = [Edit(_block_name(m["block"]), m["search"], m["replace"]) for m in EDIT.finditer(text)]
    rewrites = {_block_name(m["block"]): m["source"] for m in REWRITE.finditer(text)}
    unmatched = len(re.findall(r"^<{7} SEARCH", text, re.MULTILINE)) - len(edits)
    if unmatched:
        raise EditError(
            f"{unmatched} SEARCH block(s) are not closed as '<<<<<<< SEARCH file.py' / '=======' / '>>>>>>> REPLACE'"
        )
    if not edits and not rewrites:
        raise EditError("the reply holds no SEARCH/REPLACE edit and no ```python <block>.py rewrite")
    rationale = EDIT.sub("", REWRITE.sub("", text)).strip()
    return ProposedChange(rationale, tuple(edits), rewrites)


def apply_change(sources: dict[str, str], change: ProposedChange) -> dict[str, str]:
    """The blocks after the change; every SEARCH must match exactly once, and something must change."""
    updated = {**sources, **change.rewrites}
    for number, edit in enumerate(change.edits, start=1):
        count = updated[edit.block].count(edit.search)
        if count == 0:
            raise EditError(f"edit {number}: the SEARCH text is not in {edit.block}.py (it must match exactly)")
        if count > 1:
            raise EditError(f"edit {number}: the SEARCH text occurs {count} times in {edit.block}.py; add context")
        updated[edit.block] = updated[edit.block].replace(edit.search, edit.replace, 1)
    if updated == sources:
        raise EditError("the change leaves every block as it was")
    return updated


def normalized_source(source: str) -> str:
    """The code's tokens without comments, blank lines or layout: what the program does, roughly."""
    kept: list[str] = []
    try:
        for token in tokenize.generate_tokens(io.StringIO(source).readline):
            if token.type in (tokenize.COMMENT, tokenize.NL, tokenize.INDENT, tokenize.DEDENT):
                continue
            if token.type == tokenize.STRING and token.line.strip() == token.string.strip():
                continue  # docstrings and bare strings
            if token.type == tokenize.NEWLINE and (not kept or kept[-1] == "\n"):
                continue  # the line end of a dropped docstring
            kept.append("\n" if token.type == tokenize.NEWLINE else token.string)
    except (tokenize.TokenError, IndentationError):
        return source
    return " ".join(kept)


def behaviour_hash(sources: dict[str, str]) -> str:
    """Equal for candidates that differ only in comments, docstrings or formatting (near-duplicates)."""
    digest = hashlib.sha256()
    for block in BLOCKS:
        digest.update(block.encode() + b"\0" + normalized_source(sources[block]).encode() + b"\0")
    return digest.hexdigest()
