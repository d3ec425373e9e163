"""`evorec data prepare` as an Apache Beam pipeline.

read + parse → validate against the schema → drop exact duplicates → statistics → k-core filter
→ id vocabularies → per-user time-ordered sequences → split → Parquet shards, vocabularies,
schema, statistics, anomalies and dead letters.

Every rejected row goes to ``dead_letter.jsonl`` with its file, line and reason; every filtered
row is counted. The driver checks that ``rows read = rows out + dead-lettered + filtered``, then
publishes the staged outputs and a manifest with checksums. A run above the bad-row threshold
publishes only its dead letters and anomalies, so the previous prepared dataset stays usable.
"""

from __future__ import annotations

import heapq
import io
import json
import logging
import math
import shutil
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.options.pipeline_options import PipelineOptions
from tensorflow_metadata.proto.v0 import schema_pb2

from recsys import __version__
from recsys.data.config import PrepareConfig
from recsys.data.fetch import file_digest
from recsys.data.metadata import ItemInfo, load_items, load_users
from recsys.data.rows import (
    MAX_FIELD_CHARS,
    ParsePlan,
    Record,
    dead_letter,
    decode_line,
    field_problem,
    make_plan,
    parse_line,
)
from recsys.data.schema import (
    anomalies_proto,
    empty_profile,
    fields_to_profile,
    infer_schema,
    load_schema,
    profile_add,
    profile_merge,
    rules_from_schema,
    save_anomalies,
    save_schema,
    validate_record,
)
from recsys.data.sources import DatasetSource, InteractionFiles
from recsys.data.splits import assign_splits, build_vocab, time_order
from recsys.data.statistics import IdSummary, NumericSummary, save_statistics, statistics_proto
from recsys.errors import DataError, TooManyBadRowsError

log = logging.getLogger(__name__)

NAMESPACE = "evorec.prepare"
COUNTERS = (
    "rows_read",
    "dead_parse",
    "dead_schema",
    "dead_duplicate",
    "filtered_item",
    "filtered_user",
    "rows_out",
    "split_train",
    "split_valid",
    "split_test",
)
SCHEMA_FILE = "schema.pbtxt"
DEAD_LETTER_FILE = "dead_letter.jsonl"
ANOMALIES_FILE = "anomalies.pbtxt"
MANIFEST_FILE = "manifest.json"
REJECTED_DIR = "rejected"  # dead letters of a run that failed the bad-row threshold


@dataclass(frozen=True)
class InputFile:
    src: int
    path: str
    plan: ParsePlan | None  # None for Parquet, whose columns are named
    encoding: str


@dataclass(frozen=True)
class PrepareResult:
    out_dir: Path
    manifest: dict[str, Any]
    seconds: float


# --- pre-flight: whole-file problems are errors before any work starts ---------------------------


def _first_line(path: str, spec: InteractionFiles) -> str:
    with FileSystems.open(path) as handle:
        for raw in handle:
            text, problem = decode_line(raw, spec.encoding, path, 1)
            if problem is not None:
                raise DataError(f"{path}, line 1: {problem['reason']}")
            if text and text.strip():
                return text
            break
    raise DataError(f"{path}: the file is empty; expected {'a header and ' if spec.header else ''}interaction rows")


def plan_inputs(source: DatasetSource, max_field_chars: int = MAX_FIELD_CHARS) -> list[InputFile]:
    """Check each interaction file exists, is non-empty and fits the column mapping."""
    spec = source.interactions
    inputs = []
    for src, path in enumerate(source.interaction_paths()):
        if not FileSystems.exists(path):
            raise DataError(f"{path}: interaction file not found (dataset {source.name!r})")
        if spec.format == "parquet":
            names = pq.ParquetFile(FileSystems.open(path)).schema_arrow.names
            columns = [c for c in spec.columns.model_dump().values() if c is not None]
            missing = [c for c in columns if c not in names]
            if missing:
                raise DataError(f"{path}: Parquet columns are {names}; the mapping names missing {missing}")
            inputs.append(InputFile(src, path, None, spec.encoding))
            continue
        plan = make_plan(path, _first_line(path, spec), spec, max_field_chars)
        if spec.header:
            with FileSystems.open(path) as handle:
                handle.readline()
                if not any(line.strip() for line in handle):
                    raise DataError(f"{path}: the file has a header and no interaction rows")
        inputs.append(InputFile(src, path, plan, spec.encoding))
    return inputs


# --- transforms -----------------------------------------------------------------------------------


class ReadAndParse(beam.DoFn):  # type: ignore[misc]
    """Stream one input file; emit parsed records, and dead letters on the ``dead`` output."""

    def __init__(self, parquet_columns: dict[str, str], max_field_chars: int = MAX_FIELD_CHARS) -> None:
        self.parquet_columns = parquet_columns
        self.max_field_chars = max_field_chars
        self.rows_read = Metrics.counter(NAMESPACE, "rows_read")
        self.dead = Metrics.counter(NAMESPACE, "dead_parse")

    def process(self, item: InputFile) -> Iterator[Any]:
        if item.plan is None:
            for record in parquet_records(item.path, item.src, self.parquet_columns):
                self.rows_read.inc()
                problem = field_problem(record, item.path, record["line"], self.max_field_chars)
                if problem is not None:
                    self.dead.inc()
                    yield beam.pvalue.TaggedOutput("dead", problem)
                else:
                    yield record
            return
        with FileSystems.open(item.path) as handle:
            for number, raw in enumerate(handle, start=1):
                if number == 1 and item.plan.has_header:
                    continue
                self.rows_read.inc()
                text, problem = decode_line(raw, item.encoding, item.path, number)
                parsed: Record | None = None
                if text is not None:
                    parsed, problem = parse_line(text, item.path, item.src, number, item.plan)
                if problem is not None:
                    self.dead.inc()
                    yield beam.pvalue.TaggedOutput("dead", problem)
                else:
                    yield parsed


def parquet_records(path: str, src: int, columns: dict[str, str]) -> Iterator[Record]:
    """Rows of a Parquet file as string-valued records; the row number stands for the line."""
    table = pq.read_table(FileSystems.open(path), columns=sorted(set(columns.values())))
    values = {name: table.column(column).to_pylist() for name, column in columns.items()}
    for row in range(table.num_rows):
        record: Record = {name: None for name in ("user", "item", "rating", "timestamp")}
        for name, column_values in values.items():
            value = column_values[row]
            record[name] = None if value is None else str(value)
        record["src"], record["line"] = src, row + 1
        yield record


class ProfileFn(beam.CombineFn):  # type: ignore[misc]
    """Profile of raw field values, from which the first run infers the schema."""

    def __init__(self, fields: tuple[str, ...]) -> None:
        self.fields = fields

    def create_accumulator(self) -> dict[str, list[float]]:
        return empty_profile()

    def add_input(self, accumulator: dict[str, list[float]], record: Record) -> dict[str, list[float]]:
        return profile_add(accumulator, record, self.fields)

    def merge_accumulators(self, accumulators: Iterable[dict[str, list[float]]]) -> dict[str, list[float]]:
        return profile_merge(accumulators)

    def extract_output(self, accumulator: dict[str, list[float]]) -> dict[str, list[float]]:
        return accumulator


class Validate(beam.DoFn):  # type: ignore[misc]
    """Type and range-check each record against the schema (a side input)."""

    def __init__(self, paths: dict[int, str], latest_timestamp: int) -> None:
        self.paths = paths
        self.latest_timestamp = latest_timestamp
        self.dead = Metrics.counter(NAMESPACE, "dead_schema")
        self._rules: tuple[Any, ...] | None = None
        self._schema_bytes: bytes | None = None

    def process(self, record: Record, schema_bytes: bytes) -> Iterator[Any]:
        if schema_bytes != self._schema_bytes:
            self._rules = rules_from_schema(schema_pb2.Schema.FromString(schema_bytes))
            self._schema_bytes = schema_bytes
        assert self._rules is not None
        typed, problem = validate_record(record, self._rules, self.paths[record["src"]], self.latest_timestamp)
        if problem is not None:
            self.dead.inc()
            yield beam.pvalue.TaggedOutput("dead", problem)
        else:
            yield typed


class DropDuplicates(beam.DoFn):  # type: ignore[misc]
    """Within one user's rows, keep the first occurrence of an exact repeat (item, time, rating).

    Repeats can only occur within a user, so grouping by user (thousands of keys) replaces a
    shuffle over every distinct row.
    """

    def __init__(self, paths: dict[int, str]) -> None:
        self.paths = paths
        self.dead = Metrics.counter(NAMESPACE, "dead_duplicate")

    def process(self, keyed: tuple[str, Iterable[Record]]) -> Iterator[Any]:
        first_seen: dict[tuple[Any, ...], Record] = {}
        for row in sorted(keyed[1], key=lambda r: (r["src"], r["line"])):
            key = (row["item"], row["timestamp"], row["rating"])
            first = first_seen.setdefault(key, row)
            if first is row:
                yield row
                continue
            self.dead.inc()
            yield beam.pvalue.TaggedOutput(
                "dead",
                dead_letter(
                    self.paths[row["src"]],
                    row["line"],
                    f"duplicate of {self.paths[first['src']]}, line {first['line']}",
                    f"user_id={row['user']!r} item_id={row['item']!r} timestamp={row['timestamp']}",
                    anomaly="SCHEMA_TRAINING_SERVING_SKEW",
                ),
            )


class KeepFrequent(beam.DoFn):  # type: ignore[misc]
    """One side of a k-core round: keep the rows of keys with at least ``minimum`` rows."""

    def __init__(self, minimum: int, counter: str, emit_groups: bool) -> None:
        self.minimum = minimum
        self.emit_groups = emit_groups
        self.filtered = Metrics.counter(NAMESPACE, counter)

    def process(self, keyed: tuple[str, Iterable[Record]]) -> Iterator[Any]:
        rows = list(keyed[1])
        if len(rows) < self.minimum:
            self.filtered.inc(len(rows))
            return
        if self.emit_groups:
            yield keyed[0], rows
        else:
            yield from rows


class BuildSequence(beam.DoFn):  # type: ignore[misc]
    """A user's events in time order with dense ids, positions and split labels, as columns."""

    def __init__(self, config: PrepareConfig) -> None:
        self.config = config
        self.rows_out = Metrics.counter(NAMESPACE, "rows_out")
        self.split_counters = {s: Metrics.counter(NAMESPACE, f"split_{s}") for s in ("train", "valid", "test")}

    def process(
        self, keyed: tuple[str, list[Record]], users: dict[str, int], items: dict[str, int]
    ) -> Iterator[tuple[int, dict[str, Any]]]:
        user, events = keyed
        ordered = time_order(events)
        split = self.config.split
        labels = assign_splits(len(ordered), split.method, user, split.ratios, split.seed)
        self.rows_out.inc(len(ordered))
        for label in ("train", "valid", "test"):
            self.split_counters[label].inc(labels.count(label))
        user_idx = users[user]
        yield (
            user_idx % self.config.shards,
            {
                "user_idx": user_idx,
                "item_idx": [items[e["item"]] for e in ordered],
                "timestamp": [e["timestamp"] for e in ordered],
                "rating": [e["rating"] for e in ordered],
                "split": labels,
            },
        )


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


def _write_parquet(table: pa.Table, path: str) -> None:
    buffer = io.BytesIO()
    pq.write_table(table, buffer, compression="zstd")
    with FileSystems.create(path) as handle:
        handle.write(buffer.getvalue())


def write_shard(shard: tuple[int, Iterable[dict[str, Any]]], staging: str, shards: int) -> str:
    """All users of one shard, by user then position, in one Parquet file (deterministic bytes)."""
    index, users = shard
    columns: dict[str, list[Any]] = {name: [] for name in INTERACTION_SCHEMA.names}
    for user in sorted(users, key=lambda u: u["user_idx"]):
        n = len(user["item_idx"])
        columns["user_idx"].extend([user["user_idx"]] * n)
        columns["item_idx"].extend(user["item_idx"])
        columns["timestamp"].extend(user["timestamp"])
        columns["rating"].extend(user["rating"])
        columns["position"].extend(range(n))
        columns["split"].extend(user["split"])
    path = f"{staging}/interactions-{index:05d}-of-{shards:05d}.parquet"
    _write_parquet(pa.table(columns, schema=INTERACTION_SCHEMA), path)
    return path


class NumericStatsFn(beam.CombineFn):  # type: ignore[misc]
    """Per numeric field, running (count, sum, sum of squares, zeros, min, max) of the rows."""

    def __init__(self, fields: tuple[str, ...]) -> None:
        self.fields = fields

    def create_accumulator(self) -> dict[str, list[float]]:
        return {f: [0, 0.0, 0.0, 0, math.inf, -math.inf] for f in self.fields}

    def add_input(self, acc: dict[str, list[float]], record: Record) -> dict[str, list[float]]:
        for name in self.fields:
            value = record[name]
            if value is None:
                continue
            stats = acc[name]
            stats[0] += 1
            stats[1] += value
            stats[2] += value * value
            stats[3] += value == 0
            stats[4] = min(stats[4], value)
            stats[5] = max(stats[5], value)
        return acc

    def merge_accumulators(self, accs: Iterable[dict[str, list[float]]]) -> dict[str, list[float]]:
        merged = self.create_accumulator()
        for acc in accs:
            for name, stats in acc.items():
                target = merged[name]
                for i in range(4):
                    target[i] += stats[i]
                target[4], target[5] = min(target[4], stats[4]), max(target[5], stats[5])
        return merged

    def extract_output(self, acc: dict[str, list[float]]) -> dict[str, NumericSummary]:
        return {name: NumericSummary(int(s[0]), s[1], s[2], int(s[3]), s[4], s[5]) for name, s in acc.items()}


class IdSummaryFn(beam.CombineFn):  # type: ignore[misc]
    """(id, count) pairs → unique ids, the ten most frequent, mean id length."""

    def create_accumulator(self) -> tuple[int, list[tuple[int, str]], int]:
        return 0, [], 0

    def add_input(
        self, acc: tuple[int, list[tuple[int, str]], int], pair: tuple[str, int]
    ) -> tuple[int, list[tuple[int, str]], int]:
        unique, top, length = acc
        heapq.heappush(top, (pair[1], pair[0]))
        if len(top) > 10:
            heapq.heappop(top)
        return unique + 1, top, length + len(pair[0])

    def merge_accumulators(
        self, accs: Iterable[tuple[int, list[tuple[int, str]], int]]
    ) -> tuple[int, list[tuple[int, str]], int]:
        unique, merged, length = 0, [], 0
        for acc in accs:
            unique += acc[0]
            length += acc[2]
            merged.extend(acc[1])
        return unique, heapq.nlargest(10, merged), length

    def extract_output(self, acc: tuple[int, list[tuple[int, str]], int]) -> IdSummary:
        unique, top, length = acc
        ranked = sorted(top, key=lambda pair: (-pair[0], pair[1]))
        return IdSummary(unique, tuple((token, count) for count, token in ranked), length / max(unique, 1))


def write_items(vocab: dict[str, int], counts: dict[str, int], metadata: dict[str, ItemInfo], staging: str) -> str:
    """The item vocabulary with interaction counts and metadata; index 0 is reserved for padding."""
    tokens = sorted(vocab, key=vocab.__getitem__)
    missing = ItemInfo(None, None, ())
    info = [metadata.get(t, missing) for t in tokens]
    table = pa.table(
        {
            "item_idx": pa.array([vocab[t] for t in tokens], pa.int32()),
            "item_id": pa.array(tokens, pa.string()),
            "interactions": pa.array([counts[t] for t in tokens], pa.int64()),
            "title": pa.array([i.title for i in info], pa.string()),
            "year": pa.array([i.year for i in info], pa.int32()),
            "genres": pa.array([list(i.genres) for i in info], pa.list_(pa.string())),
        }
    )
    path = f"{staging}/items.parquet"
    _write_parquet(table, path)
    return path


def write_users(
    vocab: dict[str, int],
    counts: dict[str, int],
    attributes: tuple[list[str], dict[str, dict[str, str]]],
    staging: str,
) -> str:
    """The user vocabulary with interaction counts and the user file's attributes."""
    tokens = sorted(vocab, key=vocab.__getitem__)
    names, by_user = attributes
    columns: dict[str, Any] = {
        "user_idx": pa.array([vocab[t] for t in tokens], pa.int32()),
        "user_id": pa.array(tokens, pa.string()),
        "interactions": pa.array([counts[t] for t in tokens], pa.int64()),
    }
    for name in names:
        columns[name] = pa.array([by_user.get(t, {}).get(name) for t in tokens], pa.string())
    path = f"{staging}/users.parquet"
    _write_parquet(pa.table(columns), path)
    return path


def write_reports(
    _: object,
    staging: str,
    dataset: str,
    schema_bytes: bytes,
    numeric: dict[str, NumericSummary],
    users: IdSummary,
    items: IdSummary,
    valid_rows: int,
    dead: list[Record],
) -> None:
    """Schema, statistics of the validated rows, anomalies and the sorted dead letters."""
    schema = schema_pb2.Schema.FromString(schema_bytes)
    save_schema(schema, Path(staging) / SCHEMA_FILE)
    stats = statistics_proto(dataset, valid_rows, numeric, {"user_id": users, "item_id": items})
    save_statistics(stats, Path(staging) / "statistics.pbtxt")
    ordered = sorted(dead, key=lambda d: (d["file"], d["line"], d["reason"]))
    counts: dict[tuple[str, str], int] = {}
    examples: dict[tuple[str, str], str] = {}
    for letter in ordered:
        key = (letter["feature"], letter["anomaly"])
        counts[key] = counts.get(key, 0) + 1
        examples.setdefault(key, f"{letter['file']}, line {letter['line']}: {letter['reason']}")
    rows_read = valid_rows + len(ordered)
    save_anomalies(anomalies_proto(schema, counts, examples, rows_read), Path(staging) / ANOMALIES_FILE)
    with open(Path(staging) / DEAD_LETTER_FILE, "w", encoding="utf-8") as handle:
        for letter in ordered:
            handle.write(json.dumps(letter, ensure_ascii=False) + "\n")


# --- the pipeline ---------------------------------------------------------------------------------


def build_pipeline(
    pipeline: beam.Pipeline,
    source: DatasetSource,
    inputs: list[InputFile],
    config: PrepareConfig,
    staging: str,
    saved_schema: schema_pb2.Schema | None,
    latest_timestamp: int,
) -> None:
    """Wire the prepare transforms onto ``pipeline``; outputs land in ``staging``."""
    spec = source.interactions
    paths = {i.src: i.path for i in inputs}
    parquet_columns = {k: str(v) for k, v in spec.columns.model_dump().items() if v is not None}
    parsed = (
        pipeline
        | "InputFiles" >> beam.Create(inputs)
        | "ReadAndParse"
        >> beam.ParDo(ReadAndParse(parquet_columns, config.max_field_chars)).with_outputs("dead", main="rows")
    )
    if saved_schema is not None:
        schema = pipeline | "SavedSchema" >> beam.Create([saved_schema.SerializeToString()])
    elif not fields_to_profile(spec):
        declared = infer_schema(spec, empty_profile()).SerializeToString()
        schema = pipeline | "DeclaredSchema" >> beam.Create([declared])
    else:
        schema = (
            parsed.rows
            | "Profile" >> beam.CombineGlobally(ProfileFn(fields_to_profile(spec)))
            | "InferSchema" >> beam.Map(lambda profile: infer_schema(spec, profile).SerializeToString())
        )
    validated = parsed.rows | "Validate" >> beam.ParDo(
        Validate(paths, latest_timestamp), beam.pvalue.AsSingleton(schema)
    ).with_outputs("dead", main="rows")
    dead_sets = [parsed.dead, validated.dead]
    rows = validated.rows
    if config.drop_duplicates:
        deduped = (
            rows
            | "KeyByUserForRepeats" >> beam.Map(lambda r: (r["user"], r))
            | "GroupRepeats" >> beam.GroupByKey()
            | "DropDuplicates" >> beam.ParDo(DropDuplicates(paths)).with_outputs("dead", main="rows")
        )
        dead_sets.append(deduped.dead)
        rows = deduped.rows

    numeric = rows | "NumericStats" >> beam.CombineGlobally(NumericStatsFn(("rating", "timestamp")))
    id_summaries = {
        field: (
            rows
            | f"{field}Ids" >> beam.Map(lambda r, f=field: r[f])
            | f"Count{field}" >> beam.combiners.Count.PerElement()
            | f"Summarise{field}" >> beam.CombineGlobally(IdSummaryFn())
        )
        for field in ("user", "item")
    }
    valid_count = rows | "CountValid" >> beam.combiners.Count.Globally()
    dead = dead_sets | "AllDead" >> beam.Flatten() | "CollectDead" >> beam.combiners.ToList()
    _ = (
        pipeline
        | "ReportTrigger" >> beam.Create([None])
        | "WriteReports"
        >> beam.Map(
            write_reports,
            staging=staging,
            dataset=source.name,
            schema_bytes=beam.pvalue.AsSingleton(schema),
            numeric=beam.pvalue.AsSingleton(numeric),
            users=beam.pvalue.AsSingleton(id_summaries["user"]),
            items=beam.pvalue.AsSingleton(id_summaries["item"]),
            valid_rows=beam.pvalue.AsSingleton(valid_count),
            dead=beam.pvalue.AsSingleton(dead),
        )
    )

    flt = config.filter
    user_groups = None
    for round_ in range(flt.rounds):
        last = round_ == flt.rounds - 1
        rows = (
            rows
            | f"KeyByItem{round_}" >> beam.Map(lambda r: (r["item"], r))
            | f"GroupByItem{round_}" >> beam.GroupByKey()
            | f"KeepItems{round_}" >> beam.ParDo(KeepFrequent(flt.min_item_interactions, "filtered_item", False))
        )
        grouped = (
            rows
            | f"KeyByUser{round_}" >> beam.Map(lambda r: (r["user"], r))
            | f"GroupByUser{round_}" >> beam.GroupByKey()
            | f"KeepUsers{round_}" >> beam.ParDo(KeepFrequent(flt.min_user_interactions, "filtered_user", last))
        )
        if last:
            user_groups = grouped
        else:
            rows = grouped
    assert user_groups is not None

    user_counts = user_groups | "UserCounts" >> beam.Map(lambda kv: (kv[0], len(kv[1])))
    item_counts = (
        user_groups
        | "ItemsOfUsers" >> beam.FlatMap(lambda kv: [r["item"] for r in kv[1]])
        | "CountItems" >> beam.combiners.Count.PerElement()
    )
    user_vocab = (
        user_counts
        | "UserTokens" >> beam.Keys()
        | "AllUsers" >> beam.combiners.ToList()
        | "UserVocab" >> beam.Map(build_vocab, start=0)
    )
    item_vocab = (
        item_counts
        | "ItemTokens" >> beam.Keys()
        | "AllItems" >> beam.combiners.ToList()
        | "ItemVocab" >> beam.Map(build_vocab, start=1)
    )
    _ = (
        user_groups
        | "BuildSequences"
        >> beam.ParDo(BuildSequence(config), beam.pvalue.AsSingleton(user_vocab), beam.pvalue.AsSingleton(item_vocab))
        | "GroupShards" >> beam.GroupByKey()
        | "WriteShards" >> beam.Map(write_shard, staging=staging, shards=config.shards)
    )
    _ = item_vocab | "WriteItems" >> beam.Map(
        write_items, counts=beam.pvalue.AsDict(item_counts), metadata=load_items(source), staging=staging
    )
    _ = user_vocab | "WriteUsers" >> beam.Map(
        write_users, counts=beam.pvalue.AsDict(user_counts), attributes=load_users(source), staging=staging
    )


def _counters(result: beam.runners.runner.PipelineResult) -> dict[str, int]:
    totals = dict.fromkeys(COUNTERS, 0)
    for counter in result.metrics().query(MetricsFilter().with_namespace(NAMESPACE))["counters"]:
        name = counter.key.metric.name
        if name in totals:
            totals[name] += counter.committed or 0
    return totals


def _publish(staging: Path, out_dir: Path, names: Iterable[str]) -> None:
    for name in names:
        target = out_dir / name
        if target.exists():
            target.unlink()
        (staging / name).rename(target)


def run_prepare(
    source: DatasetSource,
    out_dir: Path,
    config: PrepareConfig | None = None,
    runner: str = "FnApiRunner",
    beam_args: list[str] | None = None,
    infer_new_schema: bool = False,
    now: float | None = None,
) -> PrepareResult:
    """Prepare ``source`` into ``out_dir`` with the Beam runner named by ``runner``.

    The schema saved in ``out_dir`` by an earlier run is used for validation unless
    ``infer_new_schema``. Raises :class:`TooManyBadRowsError` (after writing the dead letters and
    anomalies) when the share of rejected rows is above ``config.max_bad_fraction``.
    """
    config = config or PrepareConfig()
    started = time.monotonic()
    out_dir.mkdir(parents=True, exist_ok=True)
    inputs = plan_inputs(source, config.max_field_chars)
    schema_path = out_dir / SCHEMA_FILE
    saved_schema = load_schema(schema_path) if schema_path.exists() and not infer_new_schema else None
    staging = out_dir / ".staging"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    latest = int((now if now is not None else time.time()) + 86_400)
    options = PipelineOptions([f"--runner={runner}", *(beam_args or [])])
    log.info("preparing %s with %s (%s schema)", source.name, runner, "saved" if saved_schema else "inferring a")
    pipeline = beam.Pipeline(options=options)
    build_pipeline(pipeline, source, inputs, config, str(staging), saved_schema, latest)
    result = pipeline.run()
    result.wait_until_finish()
    counts = _counters(result)

    dead = counts["dead_parse"] + counts["dead_schema"] + counts["dead_duplicate"]
    filtered = counts["filtered_item"] + counts["filtered_user"]
    if counts["rows_read"] != counts["rows_out"] + dead + filtered:
        raise DataError(f"row counts do not balance: {counts}; this is a bug, please report it")
    bad_fraction = dead / max(counts["rows_read"], 1)
    if bad_fraction > config.max_bad_fraction:
        rejected = out_dir / REJECTED_DIR
        rejected.mkdir(exist_ok=True)
        _publish(staging, rejected, (DEAD_LETTER_FILE, ANOMALIES_FILE))
        shutil.rmtree(staging)
        raise TooManyBadRowsError(
            f"{dead} of {counts['rows_read']} rows ({bad_fraction:.2%}) were rejected, above the allowed "
            f"{config.max_bad_fraction:.2%}; see {rejected / DEAD_LETTER_FILE} and {rejected / ANOMALIES_FILE}. "
            "The previously prepared data in this folder, if any, is untouched."
        )
    if counts["rows_out"] == 0:
        raise DataError(f"no interactions survive filtering ({counts}); lower the k-core thresholds")

    for stale in out_dir.glob("interactions-*.parquet"):
        stale.unlink()
    outputs = sorted(p.name for p in staging.iterdir())
    _publish(staging, out_dir, outputs)
    shutil.rmtree(staging)
    manifest = _manifest(source, config, counts, out_dir, outputs)
    (out_dir / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2) + "\n")
    seconds = time.monotonic() - started
    log.info(
        "%s: %d users, %d items, %d interactions in %.1f s",
        source.name,
        manifest["users"],
        manifest["items"],
        manifest["interactions"],
        seconds,
    )
    return PrepareResult(out_dir, manifest, seconds)


def _manifest(
    source: DatasetSource, config: PrepareConfig, counts: dict[str, int], out_dir: Path, outputs: list[str]
) -> dict[str, Any]:
    """What was prepared, from what, and how the rows were accounted for; no times, so that the
    same input gives the same manifest."""
    users = pq.read_metadata(out_dir / "users.parquet").num_rows
    items = pq.read_metadata(out_dir / "items.parquet").num_rows
    return {
        "format_version": 1,
        "created_by": f"evorec {__version__}",
        "dataset": source.name,
        "users": users,
        "items": items,
        "interactions": counts["rows_out"],
        "split": {
            "method": config.split.method,
            "train": counts["split_train"],
            "valid": counts["split_valid"],
            "test": counts["split_test"],
        },
        "rows": {
            "read": counts["rows_read"],
            "out": counts["rows_out"],
            "dead_lettered": {
                "parse": counts["dead_parse"],
                "schema": counts["dead_schema"],
                "duplicate": counts["dead_duplicate"],
            },
            "filtered": {"item_kcore": counts["filtered_item"], "user_kcore": counts["filtered_user"]},
        },
        "config": config.model_dump(mode="json"),
        "inputs": [{"path": p, "sha256": file_digest(Path(p))} for p in source.interaction_paths()],
        "outputs": {name: file_digest(out_dir / name) for name in outputs},
        "item_index_base": 1,
        "user_index_base": 0,
    }
