"""The prepare transform on batches of rows (pyarrow and pandas), for the Beam pipeline's stages.

Each function takes and returns whole batches, so that the per-row Python work of
:mod:`recsys.data.rows` and :mod:`recsys.data.schema` runs only where a row needs it. Every step
has a fast vectorised path for rows that are plainly well formed, and sends every other row
through the per-row functions, which decide and word its dead letter. The fast paths only accept
rows the per-row functions would accept with the same values, so the output is the same either
way: the fast path is an optimisation, never a second definition.
"""

from __future__ import annotations

import codecs
import heapq
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from recsys.data.config import SplitConfig
from recsys.data.rows import (
    BOM,
    CONTROL,
    FIELDS,
    ParsePlan,
    Record,
    dead_letter,
    decode_line,
    field_problem,
    parse_line,
)
from recsys.data.schema import FieldRule, profile_value, validate_record
from recsys.data.splits import SPLITS, assign_splits, build_vocab
from recsys.data.statistics import IdSummary, NumericSummary

# Characters str.strip() removes (str.isspace); a field starting or ending with one takes the per-row path.
PY_WHITESPACE = r"\t\n\x0b\x0c\r\x1c-\x1f \x{85}\x{a0}\x{1680}\x{2000}-\x{200a}\x{2028}\x{2029}\x{202f}\x{205f}\x{3000}"
_INT = r"^-?[0-9]{1,15}$"  # exact in float64, so range checks agree with Python's int/float comparisons
_FLOAT = r"^-?[0-9]{1,15}(\.[0-9]{1,15})?$"
# Codecs in which a newline byte is always a line end, so a block decodes like its lines one by one.
_LINE_SAFE_CODECS = {"utf-8", "iso8859-1", "ascii", "cp1252"}

ID_DTYPE = pd.ArrowDtype(pa.string())  # ids stay Arrow strings: cheap to pickle between stages, no Python objects
RAW_SCHEMA = pa.schema([(name, pa.string()) for name in FIELDS] + [("src", pa.int32()), ("line", pa.int64())])
TYPED_COLUMNS = ("user", "item", "rating", "timestamp", "src", "line")


# --- reading and parsing ----------------------------------------------------------------------------


def decode_block(data: bytes, first_line: int, path: str, encoding: str) -> tuple[pa.Array, np.ndarray, list[Record]]:
    """Lines of a block of whole lines as text with their numbers, and dead letters for undecodable ones."""
    count = data.count(b"\n") + (1 if data and not data.endswith(b"\n") else 0)
    if codecs.lookup(encoding).name in _LINE_SAFE_CODECS:
        try:
            text = data.decode(encoding)
            text = text.removeprefix(BOM) if first_line == 1 else text  # a file's byte order mark, as decode_line
        except UnicodeDecodeError:
            pass  # some line is bad: decode them one by one
        else:
            lines = pc.split_pattern(pa.array([text.removesuffix("\n")], pa.string()), "\n").values
            if "\r" in text:
                lines = pc.utf8_rtrim(lines, characters="\r")
            return lines[:count], np.arange(first_line, first_line + count, dtype=np.int64), []
    kept: list[str] = []
    numbers: list[int] = []
    dead: list[Record] = []
    for number, raw in enumerate(data.split(b"\n")[:count], start=first_line):
        decoded, problem = decode_line(raw, encoding, path, number)
        if decoded is not None:
            kept.append(decoded)
            numbers.append(number)
        elif problem is not None:
            dead.append(problem)
    return pa.array(kept, pa.string()), np.asarray(numbers, np.int64), dead


def records_table(records: list[Record]) -> pa.Table:
    """Raw string-valued records (the per-row path's output) as a table of :data:`RAW_SCHEMA`."""
    return pa.table({name: [r[name] for r in records] for name in RAW_SCHEMA.names}, schema=RAW_SCHEMA)


def parse_lines(
    lines: pa.Array, numbers: np.ndarray, path: str, src: int, plan: ParsePlan
) -> tuple[pa.Table, list[Record]]:
    """Lines into a raw table (fields as stripped strings) and dead letters, like :func:`parse_line`."""
    split = pc.split_pattern(lines, plan.delimiter)
    fast = _fast_line_mask(lines, split, plan)
    slow = list(np.flatnonzero(~fast))
    table = RAW_SCHEMA.empty_table()
    if fast.any():
        fields = split.filter(pa.array(fast))
        columns: dict[str, Any] = {name: pa.nulls(len(fields), pa.string()) for name in FIELDS}
        for name, position in plan.positions.items():
            columns[name] = pc.list_element(fields, position)
        columns["src"] = pa.array(np.full(len(fields), src, np.int32))
        columns["line"] = pa.array(numbers[fast])
        table = pa.table(columns, schema=RAW_SCHEMA)
        clean = _unpadded(lines.filter(pa.array(fast)), plan.delimiter)
        slow.extend(np.flatnonzero(fast)[~clean])
        table = table.filter(pa.array(clean))
    records: list[Record] = []
    dead: list[Record] = []
    for index in sorted(slow):
        record, problem = parse_line(lines[index].as_py(), path, src, int(numbers[index]), plan)
        if record is not None:
            records.append(record)
        elif problem is not None:
            dead.append(problem)
    if records:
        table = pa.concat_tables([table, records_table(records)])
    return table, dead


def _fast_line_mask(lines: pa.Array, split: pa.Array, plan: ParsePlan) -> np.ndarray:
    """Lines that :func:`split_fields` would cut like a plain split, into the expected field count."""
    if plan.timestamp_format != "unix" or plan.delimiter in ('"', "\r", "\n"):
        return np.zeros(len(lines), bool)
    fast = pc.equal(pc.list_value_length(split), plan.n_fields)
    # lines that may hold a field over the limit or a control character: checked one by one (field_problem)
    fast = pc.and_(fast, pc.less_equal(pc.utf8_length(lines), plan.max_field_chars))
    fast = pc.and_(fast, pc.invert(pc.match_substring_regex(lines, CONTROL.pattern)))
    if len(plan.delimiter) == 1:  # csv quoting: lines with a quote (or a stray CR or NUL) take the per-row path
        fast = pc.and_(fast, pc.invert(pc.match_substring_regex(lines, r'["\r\x00]')))
    return pc.fill_null(fast, False).to_numpy(zero_copy_only=False)


def _unpadded(lines: pa.Array, delimiter: str) -> np.ndarray:
    """Lines none of whose fields needs stripping: no whitespace at either end or beside a delimiter."""
    sep = "".join(f"\\x{{{ord(c):x}}}" for c in delimiter)
    padded = f"^[{PY_WHITESPACE}]|[{PY_WHITESPACE}]$|[{PY_WHITESPACE}]{sep}|{sep}[{PY_WHITESPACE}]"
    return ~pc.match_substring_regex(lines, padded).to_numpy(zero_copy_only=False)


def parquet_table(
    table: pa.Table, path: str, src: int, columns: dict[str, str], max_field_chars: int
) -> tuple[pa.Table, list[Record]]:
    """A Parquet file's rows as a raw table (values as ``str()`` gives them, the row number as the line),
    and dead letters for rows with a field over the limit or holding a control character."""
    values: dict[str, Any] = {name: [None] * table.num_rows for name in FIELDS}
    for name, column in columns.items():
        values[name] = [None if v is None else str(v) for v in table.column(column).to_pylist()]
    values["src"] = [src] * table.num_rows
    values["line"] = list(range(1, table.num_rows + 1))
    raw = pa.table(values, schema=RAW_SCHEMA)
    dead: list[Record] = []
    keep = np.ones(table.num_rows, bool)
    for row in range(table.num_rows):
        record: Record = {name: values[name][row] for name in FIELDS}
        problem = field_problem(record, path, row + 1, max_field_chars)
        if problem is not None:
            dead.append(problem)
            keep[row] = False
    return (raw if keep.all() else raw.filter(pa.array(keep))), dead


# --- schema: profile and validation -------------------------------------------------------------------


def profile_table(profile: dict[str, list[float]], table: pa.Table, fields: tuple[str, ...]) -> dict[str, list[float]]:
    """:func:`recsys.data.schema.profile_add` over a raw table, once per distinct value."""
    for name in fields:
        counts = pc.value_counts(table.column(name).drop_null()).to_pylist()
        for entry in counts:
            profile_value(profile[name], entry["values"], entry["counts"])
    return profile


def validate_table(
    table: pa.Table, rules: tuple[FieldRule, ...], paths: dict[int, str], latest_timestamp: int
) -> tuple[pd.DataFrame, list[Record]]:
    """Typed rows (:data:`TYPED_COLUMNS`) and dead letters, as :func:`validate_record` decides them."""
    n = table.num_rows
    fast = np.ones(n, bool)
    typed: dict[str, Any] = {"rating": np.full(n, np.nan), "timestamp": np.zeros(n, np.int64)}
    for rule in rules:
        raw = table.column(rule.field)
        ok, values = _fast_values(raw, rule, latest_timestamp)
        fast &= ok
        typed[rule.field] = values
    for name in ("user", "item"):
        if name not in typed:  # no rule (a schema without the field cannot validate, so never here)
            typed[name] = pd.array(table.column(name), dtype=ID_DTYPE)
    typed["src"] = table.column("src").to_numpy()
    typed["line"] = table.column("line").to_numpy()
    frame = pd.DataFrame({name: typed[name] for name in TYPED_COLUMNS})
    good = frame[fast]
    dead: list[Record] = []
    slow_rows: list[Record] = []
    if not fast.all():
        for record in table.filter(pa.array(~fast)).to_pylist():
            row, problem = validate_record(record, rules, paths[record["src"]], latest_timestamp)
            if row is not None:
                slow_rows.append(row)
            elif problem is not None:
                dead.append(problem)
    if slow_rows:
        good = pd.concat([good, typed_frame(slow_rows)], ignore_index=True)
    return good.reset_index(drop=True), dead


def typed_frame(rows: list[Record]) -> pd.DataFrame:
    """Typed records (dicts) as a frame of :data:`TYPED_COLUMNS`; a missing rating is NaN."""
    frame = pd.DataFrame(rows, columns=list(TYPED_COLUMNS))
    types = {"user": ID_DTYPE, "item": ID_DTYPE, "rating": "float64", "timestamp": "int64", "src": "int32"}
    return frame.astype({**types, "line": "int64"})


def _fast_values(raw: pa.ChunkedArray, rule: FieldRule, latest_timestamp: int) -> tuple[np.ndarray, Any]:
    """(rows the fast path accepts, their typed values); other rows' values are placeholders."""
    n = len(raw)
    if rule.kind == "BYTES":
        ok = pc.fill_null(pc.greater(pc.utf8_length(raw), 0), False).to_numpy(zero_copy_only=False)
        return ok, pd.array(raw, dtype=ID_DTYPE)
    pattern = _INT if rule.kind == "INT" else _FLOAT
    ok = pc.fill_null(pc.match_substring_regex(raw, pattern), False).to_numpy(zero_copy_only=False)
    cleaned = pc.if_else(pa.array(ok), raw, pa.scalar("0"))
    numbers = pc.cast(cleaned, pa.int64() if rule.kind == "INT" else pa.float64()).to_numpy()
    if rule.low is not None:
        ok &= numbers >= rule.low
    if rule.high is not None:
        ok &= numbers <= rule.high
    if rule.field == "timestamp":
        ok &= numbers <= latest_timestamp
    if rule.field in ("user", "item"):  # canonical ids: '007' and '7' are one id
        return ok, pd.array(pc.cast(pa.array(numbers), pa.string()), dtype=ID_DTYPE)
    if rule.kind == "INT" and rule.field == "rating":
        numbers = numbers.astype(np.float64)
    assert len(numbers) == n
    return ok, numbers


# --- per-user partitions: duplicates, k-core, sequences -------------------------------------------------


def to_table(frame: pd.DataFrame) -> pa.Table:
    """Rows as an Arrow table: what crosses between stages, as Arrow tables pickle and unpickle several
    times faster than pandas frames (ids stay Arrow strings either way)."""
    return pa.Table.from_pandas(frame, preserve_index=False).replace_schema_metadata(None)


def to_frame(table: pa.Table) -> pd.DataFrame:
    """An Arrow table of rows as a frame, ids as Arrow strings; missing numbers (nulls) as NaN."""
    return table.to_pandas(types_mapper={pa.string(): ID_DTYPE}.get)


def user_partitions(frame: pd.DataFrame, count: int) -> Iterator[tuple[int, pa.Table]]:
    """Split rows into ``count`` partitions by a stable hash of the user id (same on every worker)."""
    if frame.empty:
        return
    codes, uniques = pd.factorize(frame["user"])
    slots = (pd.util.hash_array(np.asarray(uniques, dtype=object)) % np.uint64(count)).astype(np.int64)[codes]
    order = np.argsort(slots, kind="stable")  # each partition's rows keep their order
    bounds = np.searchsorted(slots[order], np.arange(count + 1))
    table = to_table(frame)
    for slot in range(count):
        if bounds[slot] < bounds[slot + 1]:
            part = table.take(order[bounds[slot] : bounds[slot + 1]])
            for name in ("user", "item"):
                part = part.set_column(part.schema.get_field_index(name), name, pc.dictionary_encode(part[name]))
            yield slot, part


def _encoded(column: pa.ChunkedArray) -> pa.DictionaryArray:
    """An id column as one dictionary array. Partitions carry ids dictionary-encoded (a few thousand
    distinct ids, a small integer a row): a fraction of the bytes to copy between stages, and id
    operations run once per distinct id."""
    array = column.combine_chunks()
    return array if pa.types.is_dictionary(array.type) else pc.dictionary_encode(array)


def concat_rows(tables: Iterable[pa.Table]) -> pd.DataFrame:
    """One partition's rows in file order (file, then line), whatever order its pieces came in."""
    frame = to_frame(pa.concat_tables(list(tables)))
    return frame.sort_values(["src", "line"], kind="stable", ignore_index=True)


def drop_duplicates(frame: pd.DataFrame, paths: dict[int, str]) -> tuple[pd.DataFrame, list[Record]]:
    """Keep the first (in file order) of a user's exact repeats of (item, time, rating); dead-letter the rest."""
    keys = frame[["user", "item", "timestamp"]].assign(rating=frame["rating"] + 0.0)  # -0.0 == 0.0, as in Python
    repeated = keys.duplicated(keep="first").to_numpy()
    if not repeated.any():
        return frame, []
    first = keys.assign(position=np.arange(len(frame)))
    first = first.groupby(list(keys.columns), dropna=False, sort=False, observed=True)
    first_position = first["position"].transform("first").to_numpy()
    dead = []
    for row in np.flatnonzero(repeated):
        original = frame.iloc[first_position[row]]
        current = frame.iloc[row]
        dead.append(
            dead_letter(
                paths[int(current["src"])],
                int(current["line"]),
                f"duplicate of {paths[int(original['src'])]}, line {int(original['line'])}",
                f"user_id={current['user']!r} item_id={current['item']!r} timestamp={int(current['timestamp'])}",
                anomaly="SCHEMA_TRAINING_SERVING_SKEW",
            )
        )
    return frame[~repeated].reset_index(drop=True), dead


def in_file_order(frame: pd.DataFrame) -> pa.Table:
    """A partition's rows (in file order) without their file and line: from here on the order stands for them."""
    return to_table(frame.drop(columns=["src", "line"]))


@dataclass(frozen=True)
class IdCounts:
    """Rows per id, as two Arrow arrays: one object however many ids, as Beam sizes a side input (the
    runner's state cache) object by object."""

    ids: pa.Array  # strings
    counts: pa.Array  # int64

    @classmethod
    def of(cls, column: pa.ChunkedArray) -> IdCounts:
        encoded = _encoded(column)
        counts = np.bincount(encoded.indices.to_numpy(), minlength=len(encoded.dictionary))
        present = counts > 0
        return cls(encoded.dictionary.filter(present), pa.array(counts[present], pa.int64()))

    @classmethod
    def merge(cls, parts: Iterable[IdCounts]) -> IdCounts:
        """The counts of all ``parts`` (exact, so the order of parts does not matter)."""
        tables = [pa.table({"id": part.ids, "count": part.counts}) for part in parts]
        if not tables:
            return cls(pa.array([], pa.string()), pa.array([], pa.int64()))
        summed = pa.concat_tables(tables).group_by("id").aggregate([("count", "sum")])
        return cls(summed.column("id").combine_chunks(), summed.column("count_sum").combine_chunks())

    def as_dict(self) -> dict[str, int]:
        return dict(zip(self.ids.to_pylist(), self.counts.to_pylist(), strict=True))

    def per_row(self, column: pa.ChunkedArray) -> np.ndarray:
        """The count of each row's id (0 for ids not counted)."""
        encoded = _encoded(column)
        index = pc.fill_null(pc.index_in(encoded.dictionary, value_set=self.ids), -1).to_numpy()
        return np.append(self.counts.to_numpy(), 0)[index][encoded.indices.to_numpy()]


@dataclass(frozen=True)
class Vocabulary:
    """Dense indices from ``start`` in :func:`recsys.data.splits.build_vocab` order, the ids as one Arrow array."""

    tokens: pa.Array
    start: int

    @classmethod
    def build(cls, ids: Iterable[str], start: int) -> Vocabulary:
        return cls(pa.array(list(build_vocab(ids, start)), pa.string()), start)

    def indices(self, column: pa.ChunkedArray) -> np.ndarray:
        """The dense index of each row's id (-1 for ids not in the vocabulary)."""
        encoded = _encoded(column)
        index = pc.fill_null(pc.index_in(encoded.dictionary, value_set=self.tokens), -1).to_numpy()
        return np.where(index < 0, -1, index + self.start)[encoded.indices.to_numpy()]


def numbers(table: pa.Table, name: str) -> np.ndarray:
    """A numeric column as float64, NaN where missing."""
    return pc.fill_null(table.column(name).cast(pa.float64(), safe=False), np.nan).to_numpy()


def keep_frequent(table: pa.Table, item_counts: IdCounts, min_items: int, min_users: int) -> tuple[pa.Table, int, int]:
    """One k-core round on a partition: drop rare items (counted over all partitions), then rare users.

    Returns the kept rows (in their order) and how many rows each side dropped.
    """
    frequent = item_counts.per_row(table.column("item")) >= min_items
    kept = table.filter(frequent)
    codes = _encoded(kept.column("user")).indices.to_numpy()
    sizes = np.bincount(codes)[codes] if len(codes) else codes
    return kept.filter(sizes >= min_users), int((~frequent).sum()), int((sizes < min_users).sum())


def numeric_summary(values: np.ndarray) -> NumericSummary:
    """Sufficient statistics of one numeric column (NaN: missing, left out)."""
    present = values[~np.isnan(values)]
    if not len(present):
        return NumericSummary()
    return NumericSummary(
        len(present),
        float(present.sum()),
        float((present * present).sum()),  # not np.dot: BLAS sums in an order set by its thread count
        int((present == 0).sum()),
        float(present.min()),
        float(present.max()),
    )


def merge_numeric(parts: Iterable[NumericSummary]) -> NumericSummary:
    merged = NumericSummary()
    for part in parts:
        merged = NumericSummary(
            merged.count + part.count,
            merged.total + part.total,
            merged.total_sq + part.total_sq,
            merged.zeros + part.zeros,
            min(merged.low, part.low),
            max(merged.high, part.high),
        )
    return merged


def id_summary(counts: dict[str, int]) -> IdSummary:
    """Unique ids, the ten most frequent (ties: the larger id first kept, shown in id order), mean length."""
    top = heapq.nlargest(10, ((count, token) for token, count in counts.items()))
    ranked = sorted(top, key=lambda pair: (-pair[0], pair[1]))
    unique = len(counts)
    length = sum(len(token) for token in counts)
    return IdSummary(unique, tuple((token, count) for count, token in ranked), length / max(unique, 1))


def sequences(table: pa.Table, users: Vocabulary, items: Vocabulary, split: SplitConfig) -> pa.Table:
    """A partition's rows (in file order) as interaction rows: dense ids, time order per user (ties in
    file order), positions and split labels."""
    user_idx = users.indices(table.column("user"))
    timestamp = table.column("timestamp").to_numpy()
    order = np.lexsort((timestamp, user_idx))  # stable: rows of one user and time keep their file order
    user_idx = user_idx[order]
    starts = np.flatnonzero(np.diff(user_idx, prepend=user_idx[:1] - 1))
    length = np.diff(np.append(starts, len(order)))
    position = np.arange(len(order)) - np.repeat(starts, length)
    length = np.repeat(length, length)
    if split.method == "leave_one_out":
        codes = np.where(position == length - 1, 2, np.where(position == length - 2, 1, 0))
    else:
        tokens = table.column("user").take(pa.array(order[starts])).to_pylist()
        labels = [
            label
            for token, size in zip(tokens, length[starts], strict=True)
            for label in assign_splits(int(size), "random", str(token), split.ratios, split.seed)
        ]
        codes = np.fromiter((SPLITS.index(label) for label in labels), np.int8, len(labels))
    columns = {
        "user_idx": user_idx.astype(np.int32),
        "item_idx": items.indices(table.column("item"))[order].astype(np.int32),
        "timestamp": timestamp[order].astype(np.int64),
        "rating": numbers(table, "rating")[order].astype(np.float32),  # NaN: no rating
        "position": position.astype(np.int32),
        "split": codes.astype(np.int8),  # index into SPLITS
    }
    return pa.table(columns)


INTERACTION_SCHEMA = pa.schema(
    [
        ("user_idx", pa.int32()),
        ("item_idx", pa.int32()),
        ("timestamp", pa.int64()),
        ("rating", pa.float32()),
        ("position", pa.int32()),
        ("split", pa.dictionary(pa.int8(), pa.string())),
    ]
)


def _labels(codes: np.ndarray) -> pa.DictionaryArray:
    """Split codes as a dictionary array whose dictionary lists the labels in order of first appearance."""
    present, first = np.unique(codes, return_index=True)
    order = present[np.argsort(first)]
    remap = np.zeros(len(SPLITS), np.int8)
    remap[order] = np.arange(len(order), dtype=np.int8)
    return pa.DictionaryArray.from_arrays(pa.array(remap[codes]), pa.array([SPLITS[c] for c in order], pa.string()))


def interactions_table(pieces: Iterable[pa.Table]) -> pa.Table:
    """The rows of one output shard by user, then position (so the file's bytes are deterministic)."""
    table = pa.concat_tables(list(pieces))
    order = np.lexsort((table.column("position").to_numpy(), table.column("user_idx").to_numpy()))  # unique keys
    rating = table.column("rating").to_numpy()[order]
    columns = {
        "user_idx": table.column("user_idx").to_numpy()[order],
        "item_idx": table.column("item_idx").to_numpy()[order],
        "timestamp": table.column("timestamp").to_numpy()[order],
        "rating": pa.array(rating, mask=np.isnan(rating)),
        "position": table.column("position").to_numpy()[order],
        "split": _labels(table.column("split").to_numpy()[order]),
    }
    return pa.table(columns, schema=INTERACTION_SCHEMA)
