"""A candidate's declared search space: which of its numbers may be tuned, and over what values.

A block declares, beside the module constants it names, a literal ``SEARCH_SPACE``::

    LEARNING_RATE = 1e-3
    BATCH_SIZE = 128
    SEARCH_SPACE = {
        "LEARNING_RATE": {"low": 1e-4, "high": 1e-2, "log": True},
        "BATCH_SIZE": {"choices": [64, 128, 256, 512]},
    }

The candidate is untrusted: the declaration is read from the syntax tree with ``ast.literal_eval`` and the
values are written back by splicing the constants' literals (:class:`~offline_agent.rulebook.syntax.Code`),
so the rest of the text, comments included, stays as written and no candidate code runs here.
"""

from __future__ import annotations

import ast
import hashlib
import math
from dataclasses import dataclass
from typing import Any

from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    ValidationError,
    model_validator,
)

from offline_agent.rulebook.syntax import Code, NotFound, literal
from recsys.candidate import BLOCKS, parse_block
from recsys.errors import EvorecError

SPACE = "SEARCH_SPACE"
EXPECTED = '{"low": number, "high": number, "log": bool (optional), "step": number (optional)} or {"choices": [...]}'
Number = StrictInt | StrictFloat
Value = bool | int | float | str | None
"""A value tuning writes: a literal ``ast.unparse`` writes back as it was."""


class SpaceError(EvorecError):
    """A declared search space is malformed; the message names the block, the constant and what was expected."""


class NumberRange(BaseModel):
    """Numbers from ``low`` to ``high``: integers when all of ``low``, ``high`` and ``step`` are."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    low: Number
    high: Number
    log: StrictBool = False
    step: Number | None = Field(default=None, gt=0)

    @model_validator(mode="after")
    def _consistent(self) -> NumberRange:
        if not self.low < self.high:
            raise ValueError(f"low ({self.low}) must be below high ({self.high})")
        if self.log and self.low <= 0:
            raise ValueError(f"a log scale needs low above 0, not {self.low}")
        if self.log and self.step is not None:
            raise ValueError("log and step do not combine (Optuna draws either on a log scale or on a grid)")
        if self.step is not None and not math.isclose(
            round((self.high - self.low) / self.step) * self.step, self.high - self.low
        ):
            raise ValueError(f"high - low ({self.high - self.low}) is not a multiple of step ({self.step})")
        return self

    @property
    def integer(self) -> bool:
        return all(isinstance(bound, int) for bound in (self.low, self.high, self.step or 1))

    def distribution(self) -> BaseDistribution:
        if self.integer:
            return IntDistribution(int(self.low), int(self.high), log=self.log, step=int(self.step or 1))
        return FloatDistribution(self.low, self.high, log=self.log, step=self.step)

    def written(self, value: Any) -> Value:
        """A drawn value as it is written into code: an int, or a float without the draw's noise digits
        (four significant digits off a grid, the grid's own otherwise), kept inside the range."""
        if self.integer:
            return int(value)
        shown = float(f"{value:.10g}") if self.step is not None else float(f"{value:.4g}")
        return min(max(shown, float(self.low)), float(self.high))


class Choices(BaseModel):
    """One of a few literal values (at least two: one choice tunes nothing)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    choices: tuple[StrictBool | StrictInt | StrictFloat | StrictStr | None, ...] = Field(min_length=2)

    def distribution(self) -> BaseDistribution:
        return CategoricalDistribution(self.choices)

    def written(self, value: Any) -> Value:
        return value  # one of the declared choices, as declared


@dataclass(frozen=True)
class Tunable:
    """One declared constant: the block holding it, its name and the values it may take."""

    block: str
    name: str
    domain: NumberRange | Choices

    @property
    def key(self) -> str:
        """Its name in a study and in records: ``optim.LEARNING_RATE``."""
        return f"{self.block}.{self.name}"


def _problem(location: tuple[int | str, ...], message: str) -> str:
    """One of pydantic's errors as ``field: message``, without its ``Value error, `` prefix."""
    shown = message.removeprefix("Value error, ")
    return f"{'.'.join(map(str, location))}: {shown}" if location else shown


def _domain(block: str, name: str, declared: Any) -> NumberRange | Choices:
    where = f"{block}.py: {SPACE}[{name!r}]"
    if not isinstance(declared, dict):
        raise SpaceError(f"{where} is {type(declared).__name__}; expected {EXPECTED}")
    try:
        return Choices.model_validate(declared) if "choices" in declared else NumberRange.model_validate(declared)
    except ValidationError as exc:
        problems = "; ".join(_problem(error["loc"], error["msg"]) for error in exc.errors())
        raise SpaceError(f"{where}: {problems}; expected {EXPECTED}") from None


def _reads(code: Code, name: str) -> bool:
    return any(
        isinstance(node, ast.Name) and node.id == name and isinstance(node.ctx, ast.Load)
        for node in ast.walk(code.tree)
    )


def _block_space(block: str, source: str) -> list[Tunable]:
    try:
        code = Code(block, source)
    except NotFound as exc:
        raise SpaceError(str(exc)) from None
    node = code.constant_node(SPACE)
    if node is None:
        return []
    try:
        declared = literal(node)
    except ValueError:
        raise SpaceError(
            f"{block}.py, line {node.lineno}: {SPACE} must be a literal dict (it is read without running the code)"
        ) from None
    if not isinstance(declared, dict) or not all(isinstance(name, str) for name in declared):
        raise SpaceError(f"{block}.py, line {node.lineno}: {SPACE} must map constant names to ranges: {EXPECTED}")
    space = []
    for name, entry in declared.items():
        domain = _domain(block, name, entry)
        if code.constant_node(name) is None:
            raise SpaceError(f"{block}.py: {SPACE} names {name}, but the block has no module constant {name}")
        value = code.constant(name)
        if isinstance(domain, NumberRange) and (isinstance(value, bool) or not isinstance(value, int | float)):
            raise SpaceError(f"{block}.py: {SPACE} gives {name} a range, but {name} is {value!r}, not a number literal")
        if not _reads(code, name):
            raise SpaceError(
                f"{block}.py: {SPACE} names {name}, which the block never reads (tuning it would do nothing)"
            )
        space.append(Tunable(block, name, domain))
    return space


def declared_space(sources: dict[str, str]) -> tuple[Tunable, ...]:
    """Every block's declared tunables (none when no block declares a space); raises :class:`SpaceError`."""
    return tuple(tunable for block in BLOCKS for tunable in _block_space(block, sources[block]))


def current_values(sources: dict[str, str], space: tuple[Tunable, ...]) -> dict[str, Any] | None:
    """The declared constants' values as written, by key; None when one is missing or not a literal."""
    values = {}
    for tunable in space:
        try:
            code = Code(tunable.block, sources[tunable.block])
        except NotFound:
            return None
        node = code.constant_node(tunable.name)
        if node is None:
            return None
        try:
            values[tunable.key] = literal(node)
        except ValueError:
            return None
    return values


def _masked(tree: ast.Module, names: set[str]) -> ast.Module:
    """``tree`` with the value of every module-level assignment to one of ``names`` replaced by ``None``."""
    for statement in tree.body:
        if isinstance(statement, ast.Assign):
            targets = statement.targets
        elif isinstance(statement, ast.AnnAssign):
            targets = [statement.target]
        else:
            continue
        if any(isinstance(target, ast.Name) and target.id in names for target in targets):
            statement.value = ast.Constant(None)
    return tree


def structure(sources: dict[str, str], space: tuple[Tunable, ...]) -> str | None:
    """A hash of the code with the declared constants' values and the declaration itself masked: equal for
    candidates that differ only in the numbers tuning sets (or in comments and layout); None when it does
    not parse."""
    digest = hashlib.sha256()
    for block in BLOCKS:
        names = {SPACE, *(t.name for t in space if t.block == block)}
        try:
            tree = parse_block(sources[block])
        except (SyntaxError, ValueError):
            return None
        digest.update(block.encode() + b"\0" + ast.dump(_masked(tree, names)).encode() + b"\0")
    return digest.hexdigest()


def with_values(sources: dict[str, str], space: tuple[Tunable, ...], values: dict[str, Value]) -> dict[str, str]:
    """The blocks with each declared constant's literal replaced by its value in ``values`` (by key) where
    that changes it."""
    updated = dict(sources)
    for tunable in space:
        code = Code(tunable.block, updated[tunable.block])
        node = code.constant_node(tunable.name)
        assert node is not None  # declared_space checked it
        value = values[tunable.key]
        if not (type(code.constant(tunable.name)) is type(value) and code.constant(tunable.name) == value):
            updated[tunable.block] = code.set_value(node, value)  # an unchanged value keeps its text (1e-3)
    return updated
