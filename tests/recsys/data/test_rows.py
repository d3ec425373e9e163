import pytest

from recsys.data.rows import decode_line, make_plan, parse_line
from recsys.data.sources import InteractionColumns, InteractionFiles
from recsys.errors import DataError

CSV = InteractionFiles(
    paths=["r.csv"],
    columns=InteractionColumns(user="userId", item="movieId", rating="rating", timestamp="timestamp"),
)
DAT = InteractionFiles(
    paths=["ratings.dat"],
    delimiter="::",
    header=False,
    columns=InteractionColumns(user=0, item=1, rating=2, timestamp=3),
)


def test_header_names_resolve_to_positions_whatever_their_order():
    plan = make_plan("r.csv", "timestamp,movieId,userId,rating", CSV)
    assert plan.positions == {"user": 2, "item": 1, "rating": 3, "timestamp": 0}
    record, problem = parse_line("964982703,31,1,2.5", "r.csv", 0, 2, plan)
    assert problem is None
    assert record == {
        "user": "1",
        "item": "31",
        "rating": "2.5",
        "timestamp": "964982703",
        "src": 0,
        "line": 2,
    }


def test_mapping_naming_a_missing_column_is_an_error_naming_file_and_column():
    with pytest.raises(DataError, match=r"r.csv, line 1.*'movieId' is not among them"):
        make_plan("r.csv", "userId,itemId,rating,timestamp", CSV)


def test_multi_character_delimiter_and_field_count_from_first_row():
    plan = make_plan("ratings.dat", "1::1193::5::978300760", DAT)
    assert plan.n_fields == 4
    record, _ = parse_line("6040::1097::4::956715569", "ratings.dat", 0, 9, plan)
    assert record is not None and record["item"] == "1097"


@pytest.mark.parametrize(
    ("line", "reason", "anomaly"),
    [
        (
            "1::1193::5",
            "expected 4 fields separated by '::', found 3 (truncated line?)",
            "SCHEMA_MISSING_COLUMN",
        ),
        ("1::1193::5::978300760::x", "expected 4 fields separated by '::', found 5", "SCHEMA_NEW_COLUMN"),
        ("   ", "blank line", "FEATURE_TYPE_NOT_PRESENT"),
    ],
)
def test_malformed_lines_become_dead_letters_with_file_line_and_reason(line, reason, anomaly):
    plan = make_plan("ratings.dat", "1::1193::5::978300760", DAT)
    record, problem = parse_line(line, "ratings.dat", 0, 7, plan)
    assert record is None
    assert problem["file"] == "ratings.dat" and problem["line"] == 7
    assert problem["reason"] == reason and problem["anomaly"] == anomaly


def test_csv_quoting_keeps_delimiters_inside_quotes():
    spec = InteractionFiles(paths=["x.csv"], columns=InteractionColumns(user="u", item="i"))
    plan = make_plan("x.csv", "u,i", spec)
    record, problem = parse_line('7,"Heat, the movie"', "x.csv", 0, 2, plan)
    assert problem is None and record["item"] == "Heat, the movie"


def test_undecodable_bytes_name_the_byte_column_and_the_fix():
    text, problem = decode_line(b"1::Caf\xe9::5::1\n", "utf-8", "movies.dat", 12)
    assert text is None
    assert problem["line"] == 12
    assert "byte 0xe9 at column 7" in problem["reason"] and "latin-1" in problem["reason"]
    assert decode_line(b"1::Caf\xe9::5::1\n", "latin-1", "movies.dat", 12) == ("1::Café::5::1", None)


def test_date_timestamps_are_converted_to_unix_seconds():
    spec = InteractionFiles(
        paths=["x.csv"],
        columns=InteractionColumns(user="u", item="i", timestamp="t"),
        timestamp_format="%Y-%m-%d",
    )
    plan = make_plan("x.csv", "u,i,t", spec)
    record, _ = parse_line("1,2,2000-01-02", "x.csv", 0, 2, plan)
    assert record["timestamp"] == "946771200"
    record, problem = parse_line("1,2,2000-13-02", "x.csv", 0, 3, plan)
    assert record is None and "does not match the format" in problem["reason"]


def test_a_byte_order_mark_is_not_part_of_the_first_field():
    text, problem = decode_line("\ufeff1::1193::5::978300760\n".encode(), "utf-8", "ratings.dat", 1)
    assert problem is None and text == "1::1193::5::978300760"
    later, _ = decode_line("\ufeff1::1::5::1\n".encode(), "utf-8", "ratings.dat", 2)
    assert later is not None and later.startswith("\ufeff")  # only a file's first bytes are a BOM


def test_control_characters_and_over_long_fields_make_a_bad_row():
    plan = make_plan("ratings.dat", "1::1193::5::978300760", DAT, max_field_chars=50)
    record, problem = parse_line("1::11\x0093::5::978300760", "ratings.dat", 0, 4, plan)
    assert record is None and problem is not None and "U+0000" in problem["reason"]
    assert problem["feature"] == "item_id"
    record, problem = parse_line("1::" + "9" * 60 + "::5::978300760", "ratings.dat", 0, 5, plan)
    assert record is None and problem is not None and "60 characters long, over the limit of 50" in problem["reason"]
    record, problem = parse_line("1::" + "9" * 5000 + "::5::978300760", "ratings.dat", 0, 5, plan)
    assert (
        record is None
        and problem is not None
        and "5,017 characters long, so a field is over the limit of 50" in (problem["reason"])
    )
    assert len(problem["text"]) == 300 and len(problem["reason"]) <= 303
    record, problem = parse_line("1\t::1193::5::978300760", "ratings.dat", 0, 6, plan)
    assert problem is None and record is not None and record["user"] == "1"  # a tab is whitespace, not a control
