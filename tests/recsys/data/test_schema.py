from tensorflow_metadata.proto.v0 import anomalies_pb2, schema_pb2

from recsys.data.schema import (
    anomalies_proto,
    empty_profile,
    infer_schema,
    load_schema,
    profile_add,
    profile_merge,
    rules_from_schema,
    save_schema,
    validate_record,
)
from recsys.data.sources import InteractionColumns, InteractionFiles

SPEC = InteractionFiles(
    paths=["r.csv"],
    columns=InteractionColumns(user="u", item="i", rating="r", timestamp="t"),
    types={"user": "int"},
    rating_range=(0.5, 5.0),
)
NOW = 1_800_000_000


def _record(user="1", item="a", rating="4", timestamp="964982703"):
    return {"user": user, "item": item, "rating": rating, "timestamp": timestamp, "src": 0, "line": 5}


def _schema(*records):
    profile = empty_profile()
    for record in records:
        profile_add(profile, record)
    return infer_schema(SPEC, profile)


def test_inference_uses_declared_types_and_ranges_and_profiles_the_rest():
    schema = _schema(_record(item="10"), _record(item="11"))
    features = {f.name: f for f in schema.feature}
    assert features["user_id"].type == schema_pb2.INT  # declared
    assert features["item_id"].type == schema_pb2.INT  # every value an integer
    assert features["rating"].type == schema_pb2.FLOAT
    assert (features["rating"].float_domain.min, features["rating"].float_domain.max) == (0.5, 5.0)
    assert features["timestamp"].int_domain.min == 0
    assert _schema(_record(item="10"), _record(item="Heat (1995)")).feature[1].type == schema_pb2.BYTES


def test_profiles_merge_like_a_single_pass():
    a, b = empty_profile(), empty_profile()
    profile_add(a, _record(rating="1"))
    profile_add(b, _record(rating="5"))
    merged = profile_merge([a, b])
    assert merged["rating"] == [2, 2, 2, 1.0, 5.0]


def test_schema_round_trips_through_text_proto(tmp_path):
    schema = _schema(_record())
    save_schema(schema, tmp_path / "schema.pbtxt")
    assert load_schema(tmp_path / "schema.pbtxt") == schema


def test_valid_record_is_typed_and_ids_canonicalised():
    rules = rules_from_schema(_schema(_record()))
    typed, problem = validate_record(_record(user="007", rating="4.5"), rules, "r.csv", NOW)
    assert problem is None
    assert typed == {"src": 0, "line": 5, "user": "7", "item": "a", "rating": 4.5, "timestamp": 964982703}


def test_each_violation_names_feature_value_and_tfdv_anomaly_type():
    rules = rules_from_schema(_schema(_record()))
    cases = {
        "INT_TYPE_NOT_INT_STRING": _record(user="u17"),
        "FLOAT_TYPE_STRING_NOT_FLOAT": _record(rating="four"),
        "FLOAT_TYPE_BIG_FLOAT": _record(rating="7"),
        "FLOAT_TYPE_HAS_NAN": _record(rating="nan"),
        "INT_TYPE_SMALL_INT": _record(timestamp="-5"),
        "INT_TYPE_BIG_INT": _record(timestamp=str(NOW + 10)),
        "FEATURE_TYPE_LOW_FRACTION_PRESENT": _record(item=""),
    }
    for anomaly, record in cases.items():
        typed, problem = validate_record(record, rules, "r.csv", NOW)
        assert typed is None, anomaly
        assert problem["anomaly"] == anomaly
        assert problem["file"] == "r.csv" and problem["line"] == 5


def test_anomalies_tally_rows_per_feature_with_an_example():
    schema = _schema(_record())
    counts = {("rating", "FLOAT_TYPE_BIG_FLOAT"): 3, ("", "SCHEMA_MISSING_COLUMN"): 1}
    examples = {("rating", "FLOAT_TYPE_BIG_FLOAT"): "r.csv, line 9: rating 7 is above"}
    result = anomalies_proto(schema, counts, examples, rows_read=100)
    info = result.anomaly_info["rating"]
    assert info.reason[0].type == anomalies_pb2.AnomalyInfo.FLOAT_TYPE_BIG_FLOAT
    assert info.short_description == "3 rows (3.0000%)" and "line 9" in info.description
    assert result.dataset_anomaly_info.reason[0].type == anomalies_pb2.AnomalyInfo.SCHEMA_MISSING_COLUMN
