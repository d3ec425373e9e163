"""The batch functions' fast paths agree with the per-row functions, row for row and letter for letter, and the
partition functions with the pure ones they stand for (vocabularies, time order, splits)."""

from __future__ import annotations

import math
import sys

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from recsys.data.columnar import (
    PY_WHITESPACE,
    IdCounts,
    Vocabulary,
    decode_block,
    interactions_table,
    parse_lines,
    sequences,
    validate_table,
)
from recsys.data.config import SplitConfig
from recsys.data.rows import decode_line, make_plan, parse_line
from recsys.data.schema import FieldRule, validate_record
from recsys.data.sources import InteractionColumns, InteractionFiles
from recsys.data.splits import SPLITS, assign_splits, build_vocab, time_order

RULES = (
    FieldRule("user", "INT", True, None, None),
    FieldRule("item", "BYTES", True, None, None),
    FieldRule("rating", "FLOAT", True, 0.5, 5.0),
    FieldRule("timestamp", "INT", True, 0, 4_102_444_800),
)
LATEST = 1_700_000_000
TRICKY = [
    "1,10,4.0,1000",
    "007,10,4.5,1000",  # canonical id 7
    "-3,x y,1,5",
    " 2,10,4.0,1000",  # padded: stripped by the per-row path
    "2,10\u3000,4.0,1000",  # ideographic space
    "2,10\x1c,4.0,1000",  # str.strip() removes file separators too
    '3,"a,b",4.0,1000',  # csv quoting
    "3,10,4.0",  # missing field
    "3,10,4.0,1000,9",  # extra field
    "",  # blank
    "\t ",
    "3,,4.0,1000",  # empty item
    "4,10,5.5,1000",  # above the rating range
    "4,10,nan,1000",
    "4,10,4.0,-1",
    f"4,10,4.0,{LATEST + 1}",
    "4,10,4.00000000000000001,1000",  # more digits than the fast path takes
    "5,10,4,1000.0",  # integral float timestamp
    "99999999999999999999,10,4.0,1000",  # beyond int64
    "6,10,4.0,1000\r",
]


def _spec(delimiter: str = ",") -> InteractionFiles:
    columns = InteractionColumns(user=0, item=1, rating=2, timestamp=3)
    return InteractionFiles(paths=["e.csv"], columns=columns, header=False, delimiter=delimiter)


def _per_row(lines: list[str], delimiter: str) -> tuple[list[tuple], list[dict]]:
    plan = make_plan("e.csv", "1,2,3,4".replace(",", delimiter), _spec(delimiter))
    rows, dead = [], []
    for number, text in enumerate(lines, start=1):
        text = text.rstrip("\r")
        record, problem = parse_line(text, "e.csv", 0, number, plan)
        if record is not None:
            record, problem = validate_record(record, RULES, "e.csv", LATEST)
        if record is not None:
            rows.append((record["user"], record["item"], record["rating"], record["timestamp"], record["line"]))
        else:
            dead.append(problem)
    return sorted(rows), sorted(dead, key=lambda d: d["line"])


def _batched(lines: list[str], delimiter: str) -> tuple[list[tuple], list[dict]]:
    plan = make_plan("e.csv", "1,2,3,4".replace(",", delimiter), _spec(delimiter))
    texts, numbers, dead = decode_block(("\n".join(lines) + "\n").encode(), 1, "e.csv", "utf-8")
    table, bad = parse_lines(texts, numbers, "e.csv", 0, plan)
    frame, invalid = validate_table(table, RULES, {0: "e.csv"}, LATEST)
    rows = [
        (r.user, r.item, None if math.isnan(r.rating) else r.rating, int(r.timestamp), int(r.line))
        for r in frame.itertuples()
    ]
    return sorted(rows), sorted(dead + bad + invalid, key=lambda d: d["line"])


@pytest.mark.parametrize("delimiter", [",", "::", "\t"])
def test_batches_give_the_rows_and_dead_letters_of_the_per_row_path(delimiter):
    lines = [line.replace(",", delimiter) if delimiter != "," else line for line in TRICKY]
    assert _batched(lines, delimiter) == _per_row(lines, delimiter)


def test_blocks_are_cut_into_the_lines_a_file_iterator_gives():
    data = b"a\r\nb\n\nc"  # CRLF, an empty line, no newline at the end
    texts, numbers, dead = decode_block(data, 3, "e.csv", "latin-1")
    expected = [decode_line(raw, "latin-1", "e.csv", 1)[0] for raw in data.splitlines(keepends=True)]
    assert (texts.to_pylist(), numbers.tolist(), dead) == (expected, [3, 4, 5, 6], [])


def test_a_block_with_a_bad_byte_is_decoded_line_by_line():
    data = b"1,10,4.0,1000\n2,1\xe9,4.0,1000\n3,10,4.0,1000"
    texts, numbers, dead = decode_block(data, 5, "e.csv", "utf-8")
    assert (texts.to_pylist(), numbers.tolist()) == (["1,10,4.0,1000", "3,10,4.0,1000"], [5, 7])
    assert dead == [decode_line(b"2,1\xe9,4.0,1000\n", "utf-8", "e.csv", 6)[1]]


def test_the_whitespace_class_is_exactly_what_str_strip_removes():
    chars = [chr(c) for c in range(sys.maxunicode + 1) if not 0xD800 <= c <= 0xDFFF]
    matched = pc.match_substring_regex(pa.array(chars), f"^[{PY_WHITESPACE}]$").to_pylist()
    assert [c for c, hit in zip(chars, matched, strict=True) if hit] == [c for c in chars if c.isspace()]


def test_a_vocabulary_gives_the_indices_of_build_vocab_and_minus_one_for_unknown_ids():
    ids = ["10", "9", "007", "7", "abc", "\u00b2", "x y"]
    vocab = Vocabulary.build(ids, start=1)
    column = pa.chunked_array([["abc", "7", "nope"], ["007", "x y", "10"]])
    expected = build_vocab(ids, start=1)
    wanted = [expected["abc"], expected["7"], -1, expected["007"], expected["x y"], expected["10"]]
    assert list(vocab.indices(column)) == wanted


def test_id_counts_of_parts_add_up_whatever_the_order_and_unknown_ids_count_zero():
    parts = [IdCounts.of(pa.chunked_array([["a", "b", "a"]])), IdCounts.of(pa.chunked_array([["b", "c"], ["a"]]))]
    assert IdCounts.merge(parts).as_dict() == IdCounts.merge(parts[::-1]).as_dict() == {"a": 3, "b": 2, "c": 1}
    assert list(IdCounts.merge(parts).per_row(pa.chunked_array([["c", "zz", "a"]]))) == [1, 0, 3]
    assert IdCounts.merge([]).as_dict() == {}


@pytest.mark.parametrize("method", ["leave_one_out", "random"])
def test_sequences_order_each_user_by_time_ties_in_file_order_and_split_like_the_pure_functions(method):
    rng = np.random.default_rng(3)
    n = 400
    users = [f"u{u}" for u in rng.integers(0, 12, n)]
    rows = pa.table(
        {
            "user": pa.array(users, pa.string()),
            "item": pa.array([f"i{i}" for i in rng.integers(0, 30, n)], pa.string()),
            "rating": pa.array(rng.integers(1, 6, n).astype(float)),
            "timestamp": pa.array(rng.integers(0, 20, n)),  # many ties within a user
        }
    )
    user_vocab, item_vocab = Vocabulary.build(set(users), 0), Vocabulary.build(rows.column("item").to_pylist(), 1)
    split = SplitConfig(method=method)
    out = interactions_table([sequences(rows, user_vocab, item_vocab, split)]).to_pylist()

    records = [dict(r, src=0, line=line) for line, r in enumerate(rows.to_pylist())]
    users_index, items_index = build_vocab(users, 0), build_vocab(rows.column("item").to_pylist(), 1)
    expected = []
    for user in sorted(set(users), key=users_index.__getitem__):
        events = time_order([r for r in records if r["user"] == user])
        labels = assign_splits(len(events), method, user, split.ratios, split.seed)
        for position, (event, label) in enumerate(zip(events, labels, strict=True)):
            expected.append((users_index[user], items_index[event["item"]], event["timestamp"], position, label))
    assert [(r["user_idx"], r["item_idx"], r["timestamp"], r["position"], r["split"]) for r in out] == expected
    assert {r["split"] for r in out} <= set(SPLITS)
