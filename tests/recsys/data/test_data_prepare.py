"""Real Beam runs (FnApiRunner) on small files: accounting, dead letters, schema reuse, determinism."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from google.protobuf import text_format
from tensorflow_metadata.proto.v0 import anomalies_pb2, statistics_pb2

from recsys.data.beam_prepare import run_prepare
from recsys.data.catalog import layout_source
from recsys.data.config import FilterConfig, PrepareConfig, SplitConfig
from recsys.data.prepared import PreparedDataset
from recsys.data.reference import prepare_with_pandas
from recsys.data.sources import DatasetSource, InteractionColumns, InteractionFiles
from recsys.errors import DataError, TooManyBadRowsError

pytestmark = pytest.mark.integration

NOW = 1_700_000_000  # the runs' "now": later timestamps are in the future
LENIENT = PrepareConfig(filter=FilterConfig(min_item_interactions=1), max_bad_fraction=0.5)


def _csv_source(folder: Path, rating_range: tuple[float, float] | None = None) -> DatasetSource:
    return DatasetSource(
        name="toy",
        base_dir=str(folder),
        interactions=InteractionFiles(
            paths=["events.csv"],
            columns=InteractionColumns(user="user", item="item", rating="rating", timestamp="ts"),
            types={"user": "int", "item": "int"},
            rating_range=rating_range,
        ),
    )


def _clean_rows(users: int = 4, per_user: int = 5) -> list[str]:
    return [
        f"{u},{10 + i},{1 + (u + i) % 5}.0,{1_000_000 + 100 * u + i}"
        for u in range(1, users + 1)
        for i in range(per_user)
    ]


def _write(folder: Path, lines: list[str], raw_tail: bytes = b"") -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "events.csv").write_bytes(("user,item,rating,ts\n" + "\n".join(lines) + "\n").encode() + raw_tail)


def _dead_letters(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "dead_letter.jsonl").read_text().splitlines()]


def test_every_kind_of_bad_row_is_dead_lettered_with_line_and_reason_and_counts_balance(tmp_path):
    good = _clean_rows()
    bad = [
        "1,99,4.0",  # wrong column count
        "abc,10,4.0,1000100",  # non-numeric id
        "2,11,4.0,-5",  # timestamp before 1970
        f"2,12,4.0,{NOW + 10 * 86_400}",  # timestamp in the future
        good[0],  # exact duplicate of line 2
    ]
    _write(tmp_path / "src", good + bad, raw_tail=b"3,10,4.0,10001\xe9\n4,1")  # bad encoding, truncated end
    out = tmp_path / "out"
    result = run_prepare(_csv_source(tmp_path / "src"), out, LENIENT, now=NOW)

    rows = result.manifest["rows"]
    dead = sum(rows["dead_lettered"].values())
    assert rows["read"] == len(good) + len(bad) + 2
    assert rows["read"] == rows["out"] + dead + sum(rows["filtered"].values())
    assert rows["out"] == len(good) and dead == 7
    letters = {d["line"]: d for d in _dead_letters(out)}
    first_bad = len(good) + 2
    expected = {
        first_bad: "expected 4 fields",
        first_bad + 1: "user_id 'abc' is not an integer",
        first_bad + 2: "timestamp -5 is below the schema's minimum 0",
        first_bad + 3: "is in the future",
        first_bad + 4: "duplicate of",
        first_bad + 5: "not valid utf-8",
        first_bad + 6: "truncated line?",
    }
    assert sorted(letters) == sorted(expected)
    for line, reason in expected.items():
        assert reason in letters[line]["reason"], letters[line]
        assert letters[line]["file"].endswith("events.csv")
    anomalies = text_format.Parse((out / "anomalies.pbtxt").read_text(), anomalies_pb2.Anomalies())
    assert anomalies.anomaly_info["user_id"].reason[0].type == anomalies_pb2.AnomalyInfo.INT_TYPE_NOT_INT_STRING
    assert anomalies.anomaly_info["timestamp"].short_description.startswith("2 rows")


def test_too_many_bad_rows_fail_the_run_but_keep_the_dead_letters_and_the_previous_output(tmp_path):
    out = tmp_path / "out"
    _write(tmp_path / "good", _clean_rows())
    run_prepare(_csv_source(tmp_path / "good"), out, LENIENT, now=NOW)
    before = PreparedDataset.open(out).manifest

    _write(tmp_path / "bad", _clean_rows() + ["x,y,z,w"] * 10)
    strict = LENIENT.model_copy(update={"max_bad_fraction": 0.1})
    with pytest.raises(TooManyBadRowsError, match=r"10 of 30 rows \(33.33%\).*rejected/dead_letter.jsonl"):
        run_prepare(_csv_source(tmp_path / "bad"), out, strict, now=NOW)
    assert len(_dead_letters(out / "rejected")) == 10
    assert PreparedDataset.open(out).manifest == before  # still verifies: nothing half-published


def test_later_runs_validate_against_the_saved_schema(tmp_path):
    out = tmp_path / "out"
    _write(tmp_path / "v1", _clean_rows())  # ratings 1..5, no declared range: inferred from data
    run_prepare(_csv_source(tmp_path / "v1"), out, LENIENT, now=NOW)
    schema_text = (out / "schema.pbtxt").read_text()
    assert "max: 5.0" in schema_text

    _write(tmp_path / "v2", [*_clean_rows(), "1,30,5.5,1000500"])
    result = run_prepare(_csv_source(tmp_path / "v2"), out, LENIENT, now=NOW)
    assert result.manifest["rows"]["dead_lettered"]["schema"] == 1
    assert "rating 5.5 is above the schema's maximum 5" in _dead_letters(out)[0]["reason"]
    assert (out / "schema.pbtxt").read_text() == schema_text

    result = run_prepare(_csv_source(tmp_path / "v2"), out, LENIENT, infer_new_schema=True, now=NOW)
    assert result.manifest["rows"]["dead_lettered"]["schema"] == 0


def test_whole_file_problems_are_errors_before_any_work(tmp_path):
    folder = tmp_path / "src"
    folder.mkdir()
    with pytest.raises(DataError, match=r"events.csv: interaction file not found"):
        run_prepare(_csv_source(folder), tmp_path / "out")
    (folder / "events.csv").write_text("")
    with pytest.raises(DataError, match=r"events.csv: the file is empty"):
        run_prepare(_csv_source(folder), tmp_path / "out")
    (folder / "events.csv").write_text("user,item,rating,ts\n")
    with pytest.raises(DataError, match=r"has a header and no interaction rows"):
        run_prepare(_csv_source(folder), tmp_path / "out")
    (folder / "events.csv").write_text("customer,item,rating,ts\n1,2,3,4\n")
    with pytest.raises(DataError, match=r"line 1: the header has columns .*'user' is not among them"):
        run_prepare(_csv_source(folder), tmp_path / "out")


def test_same_input_gives_byte_identical_output_and_matches_the_pandas_reference(tmp_path, small_latest):
    source = layout_source("ml-latest-small", "grouplens", small_latest)
    first = run_prepare(source, tmp_path / "a").manifest
    second = run_prepare(source, tmp_path / "b").manifest
    assert first["outputs"] == second["outputs"]
    assert first["interactions"] == first["split"]["train"] + first["split"]["valid"] + first["split"]["test"]

    beam = PreparedDataset.open(tmp_path / "a").interactions
    reference = prepare_with_pandas(source).interactions
    columns = ["user_idx", "item_idx", "timestamp", "position", "split"]
    pd.testing.assert_frame_equal(
        beam[columns].astype({"split": str}).reset_index(drop=True),
        reference[columns].reset_index(drop=True),
        check_dtype=False,
    )


def test_random_split_is_per_user_near_8_1_1_and_equals_the_reference(tmp_path, small_latest):
    source = layout_source("ml-latest-small", "grouplens", small_latest)
    config = PrepareConfig(split=SplitConfig(method="random", seed=7))
    manifest = run_prepare(source, tmp_path / "out", config).manifest
    total = manifest["interactions"]
    assert abs(manifest["split"]["test"] / total - 0.1) < 0.02
    beam = PreparedDataset.open(tmp_path / "out").interactions
    reference = prepare_with_pandas(source, config).interactions
    assert beam["split"].astype(str).tolist() == reference["split"].tolist()
    assert (beam.groupby("user_idx")["split"].nunique() == 3).all()


def test_prepared_dataset_refuses_edited_outputs(tmp_path, small_latest):
    run_prepare(layout_source("ml-latest-small", "grouplens", small_latest), tmp_path / "out")
    items = tmp_path / "out" / "items.parquet"
    items.write_bytes(items.read_bytes()[:-10])
    with pytest.raises(DataError, match="checksum differs from the manifest"):
        PreparedDataset.open(tmp_path / "out")


def test_statistics_describe_the_validated_rows(tmp_path, small_latest):
    run_prepare(layout_source("ml-latest-small", "grouplens", small_latest), tmp_path / "out")
    stats = text_format.Parse(
        (tmp_path / "out" / "statistics.pbtxt").read_text(), statistics_pb2.DatasetFeatureStatisticsList()
    )
    dataset = stats.datasets[0]
    features = {f.path.step[0]: f for f in dataset.features}
    assert dataset.num_examples == 3219
    assert features["user_id"].string_stats.unique == 20
    assert 0.5 <= features["rating"].num_stats.min <= features["rating"].num_stats.max <= 5.0


def test_the_runner_is_chosen_by_name_and_gives_the_same_output(tmp_path, small_latest):
    source = layout_source("ml-latest-small", "grouplens", small_latest)
    fn_api = run_prepare(source, tmp_path / "fn_api").manifest
    direct = run_prepare(source, tmp_path / "direct", runner="DirectRunner").manifest
    assert direct["outputs"] == fn_api["outputs"]


def test_inferred_types_see_through_a_bom_and_dead_letter_control_characters_and_huge_fields(tmp_path):
    """No header, types inferred: the BOM is not part of user 1, a NUL makes no new item, and a
    10 MB field is dead-lettered with its first characters only (the limit is a setting)."""
    folder = tmp_path / "src"
    folder.mkdir()
    good = [f"{u},{10 + i},4,{1_000_000 + 100 * u + i}" for u in (1, 2, 3) for i in range(4)]
    bad = ["2,1\x001,4,1000999", "3," + "7" * 10_000_000 + ",4,1000998", "1,x\x1by,4,1000997"]
    (folder / "events.csv").write_bytes(b"\xef\xbb\xbf" + ("\n".join(good + bad) + "\n").encode())
    source = DatasetSource(
        name="toy",
        base_dir=str(folder),
        interactions=InteractionFiles(
            paths=["events.csv"], header=False, columns=InteractionColumns(user=0, item=1, rating=2, timestamp=3)
        ),
    )
    out = tmp_path / "out"
    result = run_prepare(source, out, LENIENT.model_copy(update={"max_field_chars": 100}), now=NOW)
    prepared = PreparedDataset.open(out)
    assert sorted(prepared.users["user_id"].astype(str)) == ["1", "2", "3"]  # no "\ufeff1"
    assert sorted(prepared.items["item_id"].astype(str)) == ["10", "11", "12", "13"]
    letters = {d["line"]: d for d in _dead_letters(out)}
    assert "control character U+0000" in letters[13]["reason"] and "U+001B" in letters[15]["reason"]
    assert "10,000,012 characters long, so a field is over the limit of 100" in letters[14]["reason"]
    assert len(letters[14]["text"]) <= 300
    assert (out / "dead_letter.jsonl").stat().st_size < 10_000 and (out / "anomalies.pbtxt").stat().st_size < 50_000
    assert result.manifest["rows"]["out"] == len(good)


def test_a_dataset_prepared_from_a_yaml_file_is_found_by_its_name_by_every_command(tmp_path):
    from recsys.data.catalog import resolve_source
    from recsys.data.lookup import prepared_dataset
    from recsys.settings import get_settings

    _write(tmp_path / "src", _clean_rows())
    (tmp_path / "src" / "my-shop.yaml").write_text(
        "name: my-shop\ninteractions:\n  paths: [events.csv]\n"
        "  columns: {user: user, item: item, rating: rating, timestamp: ts}\n"
    )
    settings = get_settings(tmp_path / "cache")
    source = resolve_source(str(tmp_path / "src" / "my-shop.yaml"), settings)  # what `data prepare X.yaml` does
    run_prepare(source, settings.prepared_dir / source.name, LENIENT, now=NOW)
    assert prepared_dataset("my-shop", settings).name == "my-shop"  # `train --dataset my-shop`, `serve`, ...
    with pytest.raises(DataError, match=r"evorec data prepare NAME\.yaml"):
        prepared_dataset("their-shop", settings)
