"""A reward as something to call: a compiled YAML spec, or a Python function registered with ``@reward``.

Both give a :class:`Reward`: name, version, the event columns it needs, its output bounds and
monotonicity constraints, and ``reward(events) -> E floats``. A spec compiles to a weighted sum
of component columns (:func:`component_matrix`), which tuning reuses: the columns do not depend
on the weights, so a new set of weights costs one matrix product.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from reward_lib.errors import RewardError
from reward_lib.signals import SIGNALS
from reward_lib.spec import Component, Direction, RewardSpec, Transform

RewardFunction = Callable[[pd.DataFrame], np.ndarray]
Interval = tuple[float, float]
OPERATIONS: dict[str, Callable[[np.ndarray, float], np.ndarray]] = {
    "<": np.less, "<=": np.less_equal, ">": np.greater, ">=": np.greater_equal, "==": np.equal, "!=": np.not_equal,
}  # fmt: skip


@dataclass(frozen=True)
class Reward:
    """A named, versioned function of an event table: ``reward(events)`` is one float per event.

    ``columns`` are the event columns it cannot do without; ``bounds`` the range its values must
    stay in (None: undeclared, which validation reports as unbounded); ``monotone`` the columns a
    value must never fall (``increasing``) or rise (``decreasing``) with; ``source`` where it is
    defined (a file, ``reward.py``, ``python:module.function``).
    """

    name: str
    version: int
    function: RewardFunction = field(repr=False)
    columns: frozenset[str]
    bounds: Interval | None
    monotone: Mapping[str, Direction]
    source: str
    description: str = ""
    spec: RewardSpec | None = None

    @property
    def key(self) -> str:
        return f"{self.name}@{self.version}"

    def __call__(self, events: pd.DataFrame) -> np.ndarray:
        try:
            values = np.asarray(self.function(events), dtype=np.float64)
        except RewardError:
            raise
        except Exception as exc:
            raise RewardError(f"reward {self.key} ({self.source}) failed: {type(exc).__name__}: {exc}") from exc
        if values.shape != (len(events),):
            raise RewardError(
                f"reward {self.key} ({self.source}) returned shape {values.shape}; expected one value per event, "
                f"({len(events)},)"
            )
        return values


def _apply(transform: Transform, values: np.ndarray) -> np.ndarray:
    if transform.kind == "log":
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(values > -1, np.log1p(values), np.nan)
    low, high = transform.limits
    if transform.kind == "clip":
        return np.clip(values, low, high)
    return np.clip((values - low) / (high - low), 0.0, 1.0)


def _signal(name: str, events: pd.DataFrame, fill: float | None) -> np.ndarray:
    signal = SIGNALS[name]
    if fill is not None and not set(signal.columns) <= set(events.columns):
        return np.full(len(events), fill)
    values = np.asarray(signal.compute(events), dtype=np.float64)
    return values if fill is None else np.where(np.isnan(values), fill, values)


def component_values(component: Component, events: pd.DataFrame) -> np.ndarray:
    """``E`` unweighted values: the signal (NaN -> ``fill``), transformed, 0 where a condition fails."""
    values = _signal(component.signal, events, component.fill)
    for transform in component.transforms:
        values = _apply(transform, values)
    for condition in component.when:
        holds = OPERATIONS[condition.op](_signal(condition.signal, events, None), condition.value)
        values = np.where(holds, values, 0.0)
    return values


def component_matrix(spec: RewardSpec, events: pd.DataFrame) -> np.ndarray:
    """``E X C`` unweighted component values; the reward is this times :func:`weights`."""
    if not spec.components:
        return np.zeros((len(events), 0))
    return np.column_stack([component_values(component, events) for component in spec.components])


def weights(spec: RewardSpec) -> np.ndarray:
    return np.array([component.weight for component in spec.components], dtype=np.float64)


def required_columns(spec: RewardSpec) -> frozenset[str]:
    """Columns the spec cannot do without: those of signals with no ``fill``, and of conditions."""
    needed = {c for component in spec.components if component.fill is None for c in SIGNALS[component.signal].columns}
    needed |= {c for component in spec.components for cond in component.when for c in SIGNALS[cond.signal].columns}
    return frozenset(needed)


def _transform_range(transform: Transform, low: float, high: float) -> Interval:
    if transform.kind == "log":
        return (math.log1p(low) if low > -1 else -math.inf, math.log1p(high) if high > -1 else -math.inf)
    t_low, t_high = transform.limits
    if transform.kind == "clip":
        return (min(max(low, t_low), t_high), min(max(high, t_low), t_high))
    scale = t_high - t_low
    return (min(max((low - t_low) / scale, 0.0), 1.0), min(max((high - t_low) / scale, 0.0), 1.0))


def component_range(component: Component) -> Interval:
    """The interval the unweighted component's values lie in, worked out from its signal's bounds."""
    low, high = SIGNALS[component.signal].bounds
    if component.fill is not None:
        low, high = min(low, component.fill), max(high, component.fill)
    for transform in component.transforms:
        low, high = _transform_range(transform, low, high)
    if component.when:
        low, high = min(low, 0.0), max(high, 0.0)
    return low, high


def output_range(spec: RewardSpec, weight_vector: np.ndarray | None = None) -> Interval:
    """The interval the reward's values lie in (infinite when a weighted component is unbounded)."""
    chosen = weights(spec) if weight_vector is None else weight_vector
    low = high = 0.0
    for component, weight in zip(spec.components, chosen.tolist(), strict=True):
        if weight == 0:
            continue
        c_low, c_high = component_range(component)
        low += min(weight * c_low, weight * c_high)
        high += max(weight * c_low, weight * c_high)
    return low, high


def spec_reward(spec: RewardSpec, source: str) -> Reward:
    """The spec as a callable reward (the sum of its weighted components); its bounds are the declared
    ones, else the worked-out range."""
    active = [(c, w) for c, w in zip(spec.components, weights(spec).tolist(), strict=True) if w != 0]

    def function(events: pd.DataFrame) -> np.ndarray:  # weight-0 components are not computed
        return sum((w * component_values(c, events) for c, w in active), start=np.zeros(len(events)))

    return Reward(
        spec.name, spec.version, function, required_columns(spec), spec.bounds or output_range(spec),
        dict(spec.monotone), source, spec.description, spec,
    )  # fmt: skip


REGISTRY: dict[tuple[str, int], Reward] = {}
"""Rewards registered in Python with ``@reward``, by (name, version)."""


def reward(
    name: str,
    version: int = 1,
    columns: tuple[str, ...] = (),
    bounds: Interval | None = None,
    monotone: Mapping[str, Direction] | None = None,
) -> Callable[[RewardFunction], RewardFunction]:
    """Register ``function(events) -> E floats`` as the reward ``name@version``.

    Example::

        @reward("watched_clicks", version=1, columns=("event", "watch_fraction"), bounds=(0, 1),
                monotone={"watch_fraction": "increasing"})
        def watched_clicks(events):
            return (events["event"] == "click").to_numpy() * events["watch_fraction"].to_numpy()
    """

    def register(function: RewardFunction) -> RewardFunction:
        if (name, version) in REGISTRY:
            raise RewardError(f"reward {name}@{version} is already registered ({REGISTRY[name, version].source})")
        source = f"python:{function.__module__}.{function.__qualname__}"
        description = (function.__doc__ or "").strip().splitlines()[0] if function.__doc__ else ""
        REGISTRY[name, version] = Reward(
            name, version, function, frozenset(columns), bounds, dict(monotone or {}), source, description
        )
        return function

    return register
