"""The interaction schema as a tensorflow-metadata ``Schema``: inference, row validation, anomalies.

TFDV cannot join this stack (../shared/STACK.md), so this module does its job on TFDV's own protos:
the schema is inferred on the first run from declared types and a profile of the data, saved as
text proto, and every later run validates each row against it. Rows that break it go to the
dead-letter file; the per-feature tally is written as an ``Anomalies`` proto, readable by any
TFDV-aware tool.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from google.protobuf import text_format
from tensorflow_metadata.proto.v0 import anomalies_pb2, schema_pb2

from recsys.data.rows import FIELDS, Record, dead_letter
from recsys.data.sources import InteractionFiles
from recsys.errors import DataError

FEATURE = {"user": "user_id", "item": "item_id", "rating": "rating", "timestamp": "timestamp"}
TIMESTAMP_DOMAIN = (0, 4_102_444_800)  # 1970-01-01 .. 2100-01-01: plausible event times
AnomalyKey = tuple[str, str]  # (feature, AnomalyInfo.Type name)


def _as_int(raw: str) -> int | None:
    """An integer from '42' or an integral float text such as '978300760.0'."""
    try:
        return int(raw)
    except ValueError:
        try:
            value = float(raw)
        except ValueError:
            return None
        return int(value) if value.is_integer() else None


def _as_float(raw: str) -> float | None:
    try:
        return float(raw)
    except ValueError:
        return None


# --- inference --------------------------------------------------------------------------------


def empty_profile() -> dict[str, list[float]]:
    """Per field: [present, int-parsable, float-parsable, min, max] (an additive accumulator)."""
    return {name: [0, 0, 0, math.inf, -math.inf] for name in FIELDS}


def fields_to_profile(spec: InteractionFiles) -> tuple[str, ...]:
    """The fields whose schema depends on the data: undeclared id types, an undeclared rating range."""
    needed = [n for n in ("user", "item") if getattr(spec.columns, n) is not None and n not in spec.types]
    if spec.columns.rating is not None and spec.rating_range is None:
        needed.append("rating")
    return tuple(needed)


def profile_add(
    profile: dict[str, list[float]], record: Record, fields: tuple[str, ...] = FIELDS
) -> dict[str, list[float]]:
    for name in fields:
        raw = record.get(name)
        if raw is not None:
            profile_value(profile[name], raw)
    return profile


def profile_value(stats: list[float], raw: str, count: int = 1) -> None:
    """Add ``count`` occurrences of the raw value ``raw`` to one field's profile (empty values are absent)."""
    if raw == "":
        return
    stats[0] += count
    stats[1] += count * (_as_int(raw) is not None)
    number = _as_float(raw)
    if number is not None and math.isfinite(number):
        stats[2] += count
        stats[3] = min(stats[3], number)
        stats[4] = max(stats[4], number)


def profile_merge(profiles: Iterable[dict[str, list[float]]]) -> dict[str, list[float]]:
    merged = empty_profile()
    for profile in profiles:
        for name, stats in profile.items():
            target = merged[name]
            target[0] += stats[0]
            target[1] += stats[1]
            target[2] += stats[2]
            target[3] = min(target[3], stats[3])
            target[4] = max(target[4], stats[4])
    return merged


def infer_schema(spec: InteractionFiles, profile: dict[str, list[float]]) -> schema_pb2.Schema:
    """A schema from the declared types and ranges, the data's profile filling in the rest.

    Ids are INT when declared so or when every value is an integer, else BYTES; ratings are FLOAT
    within the declared range (or the observed one); timestamps are INT within 1970..2100.
    """
    schema = schema_pb2.Schema()
    for name in FIELDS:
        column = getattr(spec.columns, name)
        if column is None:
            continue
        present, ints, floats, low, high = profile[name]
        feature = schema.feature.add(name=FEATURE[name])
        feature.presence.min_fraction = 1.0
        feature.presence.min_count = 1
        feature.value_count.min = 1
        feature.value_count.max = 1
        declared = spec.types.get(name)  # type: ignore[call-overload]
        if name in ("user", "item"):
            is_int = declared == "int" or (declared is None and present > 0 and ints == present)
            feature.type = schema_pb2.INT if is_int else schema_pb2.BYTES
        elif name == "rating":
            feature.type = schema_pb2.FLOAT
            bounds = spec.rating_range or ((low, high) if floats else None)
            if bounds is not None:
                feature.float_domain.min, feature.float_domain.max = bounds
            feature.float_domain.disallow_nan = True
            feature.float_domain.disallow_inf = True
        else:
            feature.type = schema_pb2.INT
            feature.int_domain.min, feature.int_domain.max = TIMESTAMP_DOMAIN
    return schema


def save_schema(schema: schema_pb2.Schema, path: Path) -> None:
    path.write_text(text_format.MessageToString(schema))


def load_schema(path: Path) -> schema_pb2.Schema:
    try:
        return text_format.Parse(path.read_text(), schema_pb2.Schema())
    except text_format.ParseError as exc:
        raise DataError(f"{path}: not a valid tensorflow-metadata Schema text proto: {exc}") from exc


# --- validation -------------------------------------------------------------------------------


@dataclass(frozen=True)
class FieldRule:
    """The checks of one feature, flattened from the schema proto for fast per-row use."""

    field: str
    kind: str  # "INT", "FLOAT" or "BYTES"
    required: bool
    low: float | None
    high: float | None


def rules_from_schema(schema: schema_pb2.Schema) -> tuple[FieldRule, ...]:
    """Per-row rules; a schema without user_id and item_id cannot describe interactions."""
    by_feature = {f.name: f for f in schema.feature}
    missing = [FEATURE[n] for n in ("user", "item") if FEATURE[n] not in by_feature]
    if missing:
        raise DataError(f"the schema has no feature {missing}: it does not describe interactions")
    rules = []
    for name in FIELDS:
        feature = by_feature.get(FEATURE[name])
        if feature is None:
            continue
        low = high = None
        if feature.HasField("int_domain"):
            low, high = feature.int_domain.min, feature.int_domain.max
        elif feature.HasField("float_domain"):
            domain = feature.float_domain
            low = domain.min if domain.HasField("min") else None
            high = domain.max if domain.HasField("max") else None
        rules.append(
            FieldRule(
                field=name,
                kind=schema_pb2.FeatureType.Name(feature.type),
                required=feature.presence.min_fraction >= 1.0,
                low=low,
                high=high,
            )
        )
    return tuple(rules)


def _shown(record: Record) -> str:
    return " ".join(f"{FEATURE[name]}={record[name]!r}" for name in FIELDS if record.get(name) is not None)


def validate_record(
    record: Record, rules: tuple[FieldRule, ...], path: str, latest_timestamp: int
) -> tuple[Record | None, Record | None]:
    """Type and range-check one parsed record: ``(typed_record, None)`` or ``(None, dead_letter)``.

    Typed records carry ids as canonical strings (``'007'`` and ``'7'`` are one INT id), ratings
    as float (None when absent) and timestamps as int (0 when the data has none).
    """
    line = record["line"]
    typed: dict[str, Any] = {"src": record["src"], "line": line, "rating": None, "timestamp": 0}
    for rule in rules:
        feature = FEATURE[rule.field]
        raw = record.get(rule.field)
        if raw in (None, ""):
            if rule.required:
                return None, dead_letter(
                    path,
                    line,
                    f"{feature} is empty",
                    _shown(record),
                    feature,
                    "FEATURE_TYPE_LOW_FRACTION_PRESENT",
                )
            continue
        value: Any
        if rule.kind == "INT":
            value = _as_int(raw)
            if value is None:
                return None, dead_letter(
                    path,
                    line,
                    f"{feature} {raw!r} is not an integer",
                    _shown(record),
                    feature,
                    "INT_TYPE_NOT_INT_STRING",
                )
        elif rule.kind == "FLOAT":
            value = _as_float(raw)
            if value is None:
                return None, dead_letter(
                    path,
                    line,
                    f"{feature} {raw!r} is not a number",
                    _shown(record),
                    feature,
                    "FLOAT_TYPE_STRING_NOT_FLOAT",
                )
            if math.isnan(value) or math.isinf(value):
                kind = "FLOAT_TYPE_HAS_NAN" if math.isnan(value) else "FLOAT_TYPE_HAS_INF"
                return None, dead_letter(path, line, f"{feature} is {raw}", _shown(record), feature, kind)
        else:
            value = raw
        if rule.low is not None and value < rule.low:
            kind = "INT_TYPE_SMALL_INT" if rule.kind == "INT" else "FLOAT_TYPE_SMALL_FLOAT"
            return None, dead_letter(
                path,
                line,
                f"{feature} {raw} is below the schema's minimum {rule.low:g}",
                _shown(record),
                feature,
                kind,
            )
        if rule.high is not None and value > rule.high:
            kind = "INT_TYPE_BIG_INT" if rule.kind == "INT" else "FLOAT_TYPE_BIG_FLOAT"
            return None, dead_letter(
                path,
                line,
                f"{feature} {raw} is above the schema's maximum {rule.high:g}",
                _shown(record),
                feature,
                kind,
            )
        if rule.field == "timestamp" and value > latest_timestamp:
            return None, dead_letter(
                path,
                line,
                f"timestamp {raw} is in the future of this run",
                _shown(record),
                feature,
                "INT_TYPE_BIG_INT",
            )
        typed[rule.field] = str(value) if rule.field in ("user", "item") else value
    return typed, None


# --- anomalies --------------------------------------------------------------------------------


def anomalies_proto(
    schema: schema_pb2.Schema, counts: dict[AnomalyKey, int], examples: dict[AnomalyKey, str], rows_read: int
) -> anomalies_pb2.Anomalies:
    """The run's rejected rows, tallied per feature the way TFDV reports anomalies."""
    result = anomalies_pb2.Anomalies()
    result.baseline.CopyFrom(schema)
    result.anomaly_name_format = anomalies_pb2.Anomalies.SERIALIZED_PATH
    totals: dict[str, int] = {}
    for (feature, kind), count in sorted(counts.items()):
        info = result.dataset_anomaly_info if not feature else result.anomaly_info[feature]
        info.severity = anomalies_pb2.AnomalyInfo.ERROR
        reason = info.reason.add()
        reason.type = anomalies_pb2.AnomalyInfo.Type.Value(kind)
        reason.short_description = f"{count} rows ({count / max(rows_read, 1):.4%})"
        reason.description = f"{count} of {rows_read} rows; for example: {examples.get((feature, kind), '')}"
        totals[feature] = totals.get(feature, 0) + count
        info.short_description = f"{totals[feature]} rows ({totals[feature] / max(rows_read, 1):.4%})"
        info.description = "; ".join(r.description for r in info.reason)
    return result


def save_anomalies(anomalies: anomalies_pb2.Anomalies, path: Path) -> None:
    path.write_text(text_format.MessageToString(anomalies))
