"""The YAML a person reads and edits: a reward as weighted components of signals.

Example (``reward_lib/specs/clicks.yaml`` holds the default)::

    name: engagement
    version: 1
    description: Clicks, more for what was watched to the end, less for skips.
    components:
      - signal: click
        weight: 1.0
        range: [0, 2]            # where `evorec reward tune` may move the weight
      - signal: completion
        weight: 0.5
        range: [0, 2]
        fill: 0                  # the value where the table has no watch fraction
      - signal: rating
        weight: 0.5
        transforms: [{normalise: [0.5, 5]}]   # also: log, {clip: [low, high]}
        when: ["click > 0"]      # the component counts only on these events
        fill: 3.5
    monotone: {rating: increasing}           # a higher rating never lowers the reward
    bounds: [-1, 5]                          # declared output range, checked
    tuning:
      objective: {retention: 0.5, satisfaction: 0.5}
      guardrails: [{metric: arm_agreement, at_least: 1.0}]

Each component's value is ``weight * transforms(signal, NaN -> fill)`` where its conditions hold,
0 elsewhere; the reward is their sum.
"""

from __future__ import annotations

import difflib
import math
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_serializer, model_validator

from recsys.config_files import load_yaml_model, parse_yaml_model
from recsys.errors import ConfigError
from recsys.event_table import COLUMNS
from reward_lib.errors import RewardError
from reward_lib.signals import SIGNALS

Direction = Literal["increasing", "decreasing"]
AlignmentMetric = Literal["alignment", "retention", "satisfaction", "arm_agreement"]
OBJECTIVE_METRICS = ("retention", "satisfaction", "arm_agreement")
DEFAULT_OBJECTIVE = {"retention": 0.5, "satisfaction": 0.5}
OPERATORS = ("<=", ">=", "==", "!=", "<", ">")
CONDITION = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*(<=|>=|==|!=|<|>)\s*(-?\d+(?:\.\d*)?(?:[eE]-?\d+)?)\s*$")
TRANSFORMS = "log, {clip: [low, high]} or {normalise: [low, high]}"


def _known_signal(name: str) -> str:
    if name not in SIGNALS:
        close = difflib.get_close_matches(name, SIGNALS, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(f"unknown signal {name!r}{hint}; known signals: {', '.join(sorted(SIGNALS))}")
    return name


class Transform(BaseModel):
    """``log``: ``log(1 + x)``; ``clip``: into ``[low, high]``; ``normalise``: ``[low, high]`` onto
    ``[0, 1]``, values outside clipped. Written as ``log`` or ``{clip: [low, high]}``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["log", "clip", "normalise"]
    low: float | None = None
    high: float | None = None

    @model_validator(mode="before")
    @classmethod
    def _from_yaml(cls, value: Any) -> Any:
        if value == "log":
            return {"kind": "log"}
        if isinstance(value, dict) and len(value) == 1:
            [(kind, bounds)] = value.items()
            if kind in ("clip", "normalise"):
                if not (isinstance(bounds, list | tuple) and len(bounds) == 2):
                    raise ValueError(f"{kind} takes [low, high], got {bounds!r}")
                return {"kind": kind, "low": bounds[0], "high": bounds[1]}
        if isinstance(value, dict) and "kind" in value:
            return value
        raise ValueError(f"unknown transform {value!r}; expected {TRANSFORMS}")

    @model_validator(mode="after")
    def _ordered(self) -> Transform:
        if self.kind != "log" and not (self.low is not None and self.high is not None and self.low < self.high):
            raise ValueError(f"{self.kind} needs low < high, got [{self.low}, {self.high}]")
        return self

    @property
    def limits(self) -> tuple[float, float]:
        """``(low, high)``, open-ended where unset (a ``log`` has neither)."""
        return (-math.inf if self.low is None else self.low, math.inf if self.high is None else self.high)

    @model_serializer
    def _to_yaml(self) -> Any:
        return self.kind if self.kind == "log" else {self.kind: [self.low, self.high]}


class Condition(BaseModel):
    """``signal op value``, e.g. ``rating >= 4``: the component counts only where it holds (NaN: not)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    signal: Annotated[str, BeforeValidator(_known_signal)]
    op: Literal["<=", ">=", "==", "!=", "<", ">"]
    value: float

    @model_validator(mode="before")
    @classmethod
    def _from_text(cls, value: Any) -> Any:
        if isinstance(value, str):
            match = CONDITION.match(value)
            if match is None:
                raise ValueError(f"condition {value!r} is not 'signal op number' with op one of {' '.join(OPERATORS)}")
            return {"signal": match[1], "op": match[2], "value": float(match[3])}
        return value

    @model_serializer
    def _to_yaml(self) -> str:
        return f"{self.signal} {self.op} {self.value:g}"


class Component(BaseModel):
    """One weighted signal; ``range`` is where tuning may move ``weight`` (and where it must lie)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    signal: Annotated[str, BeforeValidator(_known_signal)]
    name: str | None = Field(default=None, description="defaults to the signal's name")
    weight: float
    range: tuple[float, float] | None = None
    transforms: tuple[Transform, ...] = ()
    when: tuple[Condition, ...] = ()
    fill: float | None = Field(default=None, description="value where the signal is NaN or its column is absent")

    @property
    def label(self) -> str:
        return self.name or self.signal

    @model_validator(mode="after")
    def _weight_in_range(self) -> Component:
        if self.range is not None:
            low, high = self.range
            if low > high:
                raise ValueError(f"range [{low:g}, {high:g}] is empty: low must not exceed high")
            if not low <= self.weight <= high:
                raise ValueError(f"weight {self.weight:g} is outside its declared range [{low:g}, {high:g}]")
        return self


class Guardrail(BaseModel):
    """A bound an alignment metric must keep for a tuned reward to be accepted."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    metric: AlignmentMetric
    at_least: float | None = None
    at_most: float | None = None

    @model_validator(mode="after")
    def _one_bound(self) -> Guardrail:
        if self.at_least is None and self.at_most is None:
            raise ValueError("a guardrail needs at_least or at_most")
        return self


class Tuning(BaseModel):
    """What ``evorec reward tune`` maximises (weights of the per-user correlations) and keeps."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    objective: dict[str, float] = Field(default_factory=lambda: dict(DEFAULT_OBJECTIVE))
    guardrails: tuple[Guardrail, ...] = ()

    @field_validator("objective")
    @classmethod
    def _known_weights(cls, value: dict[str, float]) -> dict[str, float]:
        unknown = sorted(set(value) - set(OBJECTIVE_METRICS))
        if unknown:
            raise ValueError(f"unknown objective metric(s) {', '.join(unknown)}; use {', '.join(OBJECTIVE_METRICS)}")
        if any(weight < 0 for weight in value.values()) or sum(value.values()) <= 0:
            raise ValueError("objective weights must be non-negative and not all zero")
        return value


class RewardSpec(BaseModel):
    """A named, versioned reward: weighted components, declared constraints, tuning settings."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    version: int = Field(ge=1)
    description: str = ""
    components: tuple[Component, ...] = Field(min_length=1)
    monotone: dict[str, Direction] = Field(default_factory=dict)
    bounds: tuple[float, float] | None = Field(default=None, description="declared output range, checked")
    tuning: Tuning = Tuning()
    tuned_from: str | None = Field(default=None, description="name@version this spec was tuned from")

    @property
    def key(self) -> str:
        return f"{self.name}@{self.version}"

    @field_validator("monotone")
    @classmethod
    def _numeric_columns(cls, value: dict[str, str]) -> dict[str, str]:
        for column in value:
            if COLUMNS.get(column) not in ("integer", "number"):
                numeric = sorted(c for c, kind in COLUMNS.items() if kind in ("integer", "number"))
                raise ValueError(f"monotone names {column!r}, not a numeric event column ({', '.join(numeric)})")
        return value

    @field_validator("components")
    @classmethod
    def _distinct_names(cls, value: tuple[Component, ...]) -> tuple[Component, ...]:
        labels = [component.label for component in value]
        repeated = sorted({label for label in labels if labels.count(label) > 1})
        if repeated:
            raise ValueError(f"component names must be distinct: {', '.join(repeated)} repeated (give each a name)")
        return value

    @field_validator("bounds")
    @classmethod
    def _ordered_bounds(cls, value: tuple[float, float] | None) -> tuple[float, float] | None:
        if value is not None and value[0] >= value[1]:
            raise ValueError(f"bounds [{value[0]:g}, {value[1]:g}] need low < high")
        return value

    def with_weights(self, weights: dict[str, float], version: int, tuned_from: str) -> RewardSpec:
        """A copy with new weights (by component name) as ``version``, recording where it came from."""
        components = tuple(c.model_copy(update={"weight": weights.get(c.label, c.weight)}) for c in self.components)
        return self.model_copy(update={"components": components, "version": version, "tuned_from": tuned_from})

    def to_yaml(self) -> str:
        data = self.model_dump(mode="json", exclude_none=True)
        for component in data["components"]:
            for key in ("transforms", "when"):
                if not component[key]:
                    del component[key]
        return yaml.safe_dump(data, sort_keys=False, allow_unicode=True, default_flow_style=None)


def parse_spec(text: str, source: str) -> RewardSpec:
    """A spec from YAML ``text`` (``source`` names it in messages: a file, ``reward.py``)."""
    try:
        return parse_yaml_model(text, source, RewardSpec, "reward spec")
    except ConfigError as exc:
        raise RewardError(str(exc)) from exc


def load_spec(path: Path) -> RewardSpec:
    """A spec from a YAML file; errors name the file, the line and the field."""
    try:
        return load_yaml_model(path, RewardSpec, "reward spec")
    except ConfigError as exc:
        raise RewardError(str(exc)) from exc
