"""Turning raw lines of interaction files into field records, and bad lines into dead letters.

Pure functions over one line or one file header, so that the Beam pipeline, the pandas reference
and the tests share them. A record is a plain dict (cheap to pickle between Beam stages)::

    {"user": "1", "item": "31", "rating": "2.5", "timestamp": "1260759144", "src": 0, "line": 2}

Field values stay strings here; :mod:`recsys.data.schema` types and checks them.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from recsys.data.sources import InteractionFiles
from recsys.errors import DataError

FIELDS = ("user", "item", "rating", "timestamp")
MAX_TEXT = 300  # characters of the offending line (and of its reason) kept in a dead letter
MAX_FIELD_CHARS = 1000  # default limit of one field; longer ones are dead-lettered (prepare.max_field_chars)
CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")  # C0/C1 controls but tab and newline: never in an id
BOM = "\ufeff"

Record = dict[str, Any]


@dataclass(frozen=True)
class ParsePlan:
    """How to cut the lines of one file: resolved column positions and the expected field count."""

    delimiter: str
    positions: dict[str, int]
    n_fields: int
    has_header: bool
    timestamp_format: str
    max_field_chars: int = MAX_FIELD_CHARS


def dead_letter(
    path: str, line: int, reason: str, text: str = "", feature: str = "", anomaly: str = "UNKNOWN_TYPE"
) -> Record:
    """A rejected row: where it was, why, and (the start of) what it said."""
    return {
        "file": path,
        "line": line,
        "reason": reason if len(reason) <= MAX_TEXT else f"{reason[:MAX_TEXT]}...",
        "feature": feature,
        "anomaly": anomaly,
        "text": text[:MAX_TEXT],
    }


def field_problem(record: Record, path: str, line: int, max_chars: int, text: str = "") -> Record | None:
    """A dead letter for a field no id or value can be: longer than ``max_chars``, or holding a control
    character (a NUL inside an id would otherwise make a new id); None when every field is fine."""
    for name in FIELDS:
        value = record.get(name)
        if not isinstance(value, str):
            continue
        feature = f"{name}_id" if name in ("user", "item") else name
        if len(value) > max_chars:
            return dead_letter(
                path, line, f"{feature} is {len(value):,} characters long, over the limit of {max_chars:,} "
                "(prepare.max_field_chars)", text or value, feature, "SEQUENCE_VALUE_TOO_LARGE_FRACTION",
            )  # fmt: skip
        control = CONTROL.search(value)
        if control is not None:
            return dead_letter(
                path, line, f"{feature} holds the control character U+{ord(control.group()):04X} at position "
                f"{control.start() + 1}", text or value, feature, "ENUM_TYPE_UNEXPECTED_STRING_VALUES",
            )  # fmt: skip
    return None


def split_fields(text: str, delimiter: str) -> list[str]:
    """Cut one line into fields; single-character delimiters honour CSV quoting."""
    if len(delimiter) == 1:
        return next(csv.reader([text], delimiter=delimiter), [])
    return text.split(delimiter)


def header_names(text: str, spec: InteractionFiles) -> list[str]:
    names = [n.strip().lstrip("\ufeff") for n in split_fields(text, spec.delimiter)]
    if spec.header_type_suffix:
        names = [n.split(":", 1)[0] for n in names]
    return names


def make_plan(path: str, first_line: str, spec: InteractionFiles, max_field_chars: int = MAX_FIELD_CHARS) -> ParsePlan:
    """Resolve the column mapping against a file's first line (its header, or its first row).

    Raises :class:`DataError` naming the file and the missing column when the mapping does not fit.
    """
    columns = {k: v for k, v in spec.columns.model_dump().items() if v is not None}
    if spec.header:
        names = header_names(first_line, spec)
        positions = {}
        for fieldname, column in columns.items():
            if isinstance(column, int):
                positions[fieldname] = column
            elif column in names:
                positions[fieldname] = names.index(column)
            else:
                raise DataError(
                    f"{path}, line 1: the header has columns {names}; the mapping's {fieldname} column "
                    f"{column!r} is not among them"
                )
        n_fields = len(names)
    else:
        positions = {k: int(v) for k, v in columns.items()}
        n_fields = len(split_fields(first_line, spec.delimiter))
    widest = max(positions.values())
    if widest >= n_fields:
        raise DataError(
            f"{path}, line 1: {n_fields} fields separated by {spec.delimiter!r}, but the mapping reads "
            f"column {widest}; check the delimiter and the column mapping"
        )
    return ParsePlan(spec.delimiter, positions, n_fields, spec.header, spec.timestamp_format, max_field_chars)


def to_unix_seconds(raw: str, fmt: str) -> str:
    """A timestamp in the declared format as unix seconds (still a string: typing comes later)."""
    if fmt == "unix":
        return raw
    if fmt == "unix_ms":
        return str(int(float(raw)) // 1000)
    moment = datetime.strptime(raw, fmt)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return str(int(moment.timestamp()))


def parse_line(text: str, path: str, src: int, line: int, plan: ParsePlan) -> tuple[Record | None, Record | None]:
    """One raw line into ``(record, None)`` or ``(None, dead_letter)``."""
    if not text.strip():
        return None, dead_letter(path, line, "blank line", text, anomaly="FEATURE_TYPE_NOT_PRESENT")
    longest = plan.n_fields * (plan.max_field_chars + 2 + len(plan.delimiter))  # every field quoted, at the limit
    if len(text) > longest:
        return None, dead_letter(
            path, line, f"the line is {len(text):,} characters long, so a field is over the limit of "
            f"{plan.max_field_chars:,} characters (prepare.max_field_chars)", text,
            anomaly="SEQUENCE_VALUE_TOO_LARGE_FRACTION",
        )  # fmt: skip
    try:
        fields = split_fields(text, plan.delimiter)
    except csv.Error as exc:  # e.g. a field over the csv module's own limit
        return None, dead_letter(path, line, f"cannot be cut into fields: {exc}", text)
    if len(fields) != plan.n_fields:
        return None, dead_letter(
            path,
            line,
            f"expected {plan.n_fields} fields separated by {plan.delimiter!r}, found {len(fields)}"
            + (" (truncated line?)" if len(fields) < plan.n_fields else ""),
            text,
            anomaly="SCHEMA_MISSING_COLUMN" if len(fields) < plan.n_fields else "SCHEMA_NEW_COLUMN",
        )
    record: Record = {name: None for name in FIELDS}
    for name, position in plan.positions.items():
        record[name] = fields[position].strip()
    problem = field_problem(record, path, line, plan.max_field_chars, text)
    if problem is not None:
        return None, problem
    if record["timestamp"] not in (None, "") and plan.timestamp_format != "unix":
        try:
            record["timestamp"] = to_unix_seconds(record["timestamp"], plan.timestamp_format)
        except ValueError:
            return None, dead_letter(
                path,
                line,
                f"timestamp {record['timestamp']!r} does not match the format {plan.timestamp_format!r}",
                text,
                feature="timestamp",
                anomaly="INT_TYPE_NOT_INT_STRING",
            )
    record["src"] = src
    record["line"] = line
    return record, None


def decode_line(raw: bytes, encoding: str, path: str, line: int) -> tuple[str | None, Record | None]:
    """Bytes of one line as text (a file's byte order mark removed), or a dead letter saying where the
    encoding broke."""
    try:
        text = raw.decode(encoding).rstrip("\r\n")
        return (text.removeprefix(BOM) if line == 1 else text), None
    except UnicodeDecodeError as exc:
        shown = raw[:MAX_TEXT].decode(encoding, errors="replace").rstrip("\r\n")
        return None, dead_letter(
            path,
            line,
            f"not valid {encoding}: byte 0x{raw[exc.start]:02x} at column {exc.start + 1}; "
            f"set the source's encoding (MovieLens .dat and u.* files are latin-1)",
            shown,
        )
