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

import io
import json
import logging
import shutil
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions
from tensorflow_metadata.proto.v0 import schema_pb2

from recsys import __version__
from recsys.data import columnar
from recsys.data.beam_options import runner_flag
from recsys.data.config import PrepareConfig
from recsys.data.fetch import file_digest
from recsys.data.metadata import ItemInfo, load_items, load_users
from recsys.data.rows import MAX_FIELD_CHARS, ParsePlan, Record, decode_line, make_plan
from recsys.data.schema import (
    anomalies_proto,
    empty_profile,
    fields_to_profile,
    infer_schema,
    load_schema,
    profile_merge,
    rules_from_schema,
    save_anomalies,
    save_schema,
)
from recsys.data.sources import DatasetSource, InteractionFiles
from recsys.data.splits import SPLITS, build_vocab
from recsys.data.statistics import NumericSummary, save_statistics, statistics_proto
from recsys.errors import DataError, TooManyBadRowsError

log = logging.getLogger(__name__)

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
COUNTS_FILE = ".counts.json"  # the run's row accounting, read by the driver and not published
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
# Elements are batches (pyarrow tables, pandas frames). Every stage has one output of tagged pairs:
# (ROWS, batch), and the notes (DEAD, letter) and (COUNT, (name, n)). Row stages pass the notes
# through, so the stream is split only where rows are shuffled (``_route``): runners without
# multi-output ParDos (Beam's DaskRunner merges them) then run it unchanged, and counts travel as
# data, so no runner metrics are needed either. Few transforms and stages keep Beam's fixed cost
# per transform (construction, translation, one bundle per stage) small next to the work.

BLOCK_BYTES = 4 << 20  # text parsed per element
PARTITIONS = 8  # per-user partitions: the unit of parallel work after the one shuffle of rows
ROWS, DEAD, COUNT = "rows", "dead", "count"
NOTES = "notes"  # dead letters and counts, as routed


@dataclass(frozen=True)
class Block:
    """A byte range of whole lines of one input file (a Parquet file is one block: ``size`` -1)."""

    item: InputFile
    start: int
    size: int
    first_line: int


@dataclass(frozen=True)
class Summary:
    """Rows per user and per item id over all partitions, and the statistics of numeric fields."""

    users: columnar.IdCounts
    items: columnar.IdCounts
    numeric: dict[str, NumericSummary]


def plan_blocks(inputs: list[InputFile]) -> list[Block]:
    """Cut each text file into blocks of whole lines (the header left out), numbering their first lines.

    The driver scans each file once for line ends, so that workers can parse blocks independently
    and still name every bad row's line.
    """
    blocks = []
    for item in inputs:
        if item.plan is None:
            blocks.append(Block(item, 0, -1, 1))
            continue
        with FileSystems.open(item.path) as handle:
            start, number = 0, 1
            if item.plan.has_header:
                start, number = len(handle.readline()), 2
            while data := handle.read(BLOCK_BYTES):
                if not data.endswith(b"\n"):
                    data += handle.readline()
                blocks.append(Block(item, start, len(data), number))
                start += len(data)
                number += data.count(b"\n")
    return blocks


def _route(tagged: beam.PCollection, label: str) -> dict[str, Any]:
    """A stage's tagged output as the rows' values (to shuffle) and the notes (tagged pairs still)."""
    return {
        ROWS: tagged | f"{label}Rows" >> beam.FlatMap(lambda pair: [pair[1]] if pair[0] == ROWS else []),
        NOTES: tagged | f"{label}Notes" >> beam.Filter(lambda pair: pair[0] != ROWS),
    }


class ParseBlock(beam.DoFn):  # type: ignore[misc]
    """A block of lines as a raw table; undecodable and malformed lines as dead letters."""

    def __init__(self, parquet_columns: dict[str, str], max_field_chars: int = MAX_FIELD_CHARS) -> None:
        self.parquet_columns = parquet_columns
        self.max_field_chars = max_field_chars

    def process(self, block: Block) -> Iterator[tuple[str, Any]]:
        item = block.item
        dead: list[Record] = []
        with FileSystems.open(item.path) as handle:
            if block.size < 0:
                parquet = pq.read_table(handle, columns=sorted(set(self.parquet_columns.values())))
                table, dead = columnar.parquet_table(
                    parquet, item.path, item.src, self.parquet_columns, self.max_field_chars
                )
            else:
                assert item.plan is not None
                handle.seek(block.start)
                data = handle.read(block.size)
                texts, numbers, dead = columnar.decode_block(data, block.first_line, item.path, item.encoding)
                table, bad_lines = columnar.parse_lines(texts, numbers, item.path, item.src, item.plan)
                dead = dead + bad_lines
        yield COUNT, ("rows_read", table.num_rows + len(dead))
        yield COUNT, ("dead_parse", len(dead))
        for letter in dead:
            yield DEAD, letter
        if table.num_rows:
            yield ROWS, table


class RowStage(beam.DoFn):  # type: ignore[misc]
    """A stage over tagged pairs: :meth:`rows` turns each batch of rows into tagged pairs; notes pass through."""

    def process(self, pair: tuple[str, Any], *side: Any) -> Iterator[tuple[str, Any]]:
        if pair[0] == ROWS:
            yield from self.rows(pair[1], *side)
        else:
            yield pair

    def rows(self, *batch_and_side: Any) -> Iterator[tuple[str, Any]]:
        raise NotImplementedError


class ProfileFn(beam.CombineFn):  # type: ignore[misc]
    """Profile of raw field values (of the tagged rows), from which the first run infers the schema."""

    def __init__(self, fields: tuple[str, ...]) -> None:
        self.fields = fields

    def create_accumulator(self) -> dict[str, list[float]]:
        return empty_profile()

    def add_input(self, accumulator: dict[str, list[float]], pair: tuple[str, Any]) -> dict[str, list[float]]:
        return columnar.profile_table(accumulator, pair[1], self.fields) if pair[0] == ROWS else accumulator

    def merge_accumulators(self, accumulators: Iterable[dict[str, list[float]]]) -> dict[str, list[float]]:
        return profile_merge(accumulators)

    def extract_output(self, accumulator: dict[str, list[float]]) -> dict[str, list[float]]:
        return accumulator


class Validate(RowStage):
    """Type and range-check a raw table against the schema (a side input); typed rows by user partition."""

    def __init__(self, paths: dict[int, str], latest_timestamp: int) -> None:
        self.paths = paths
        self.latest_timestamp = latest_timestamp
        self._rules: tuple[Any, ...] | None = None
        self._schema_bytes: bytes | None = None

    def rows(self, table: pa.Table, schema_bytes: bytes) -> Iterator[tuple[str, Any]]:
        if schema_bytes != self._schema_bytes:
            self._rules = rules_from_schema(schema_pb2.Schema.FromString(schema_bytes))
            self._schema_bytes = schema_bytes
        assert self._rules is not None
        typed, dead = columnar.validate_table(table, self._rules, self.paths, self.latest_timestamp)
        yield COUNT, ("dead_schema", len(dead))
        for letter in dead:
            yield DEAD, letter
        for part in columnar.user_partitions(typed, PARTITIONS):
            yield ROWS, part


class Deduplicate(beam.DoFn):  # type: ignore[misc]
    """A partition's rows in file order, exact repeats within a user dead-lettered when configured.

    From here on a partition's row order stands for the rows' file and line, which are dropped.
    """

    def __init__(self, paths: dict[int, str], drop: bool) -> None:
        self.paths = paths
        self.drop = drop

    def process(self, keyed: tuple[int, Iterable[pa.Table]]) -> Iterator[tuple[str, Any]]:
        rows = columnar.concat_rows(keyed[1])
        if self.drop:
            rows, dead = columnar.drop_duplicates(rows, self.paths)
            yield COUNT, ("dead_duplicate", len(dead))
            for letter in dead:
                yield DEAD, letter
        yield ROWS, (keyed[0], columnar.in_file_order(rows))


Accumulator = tuple[list[columnar.IdCounts], list[columnar.IdCounts], dict[int, dict[str, NumericSummary]]]


class Summarize(beam.CombineFn):  # type: ignore[misc]
    """A :class:`Summary` of the tagged partitions. Id counts are exact, so merge order does not matter;
    numeric partial sums are kept per partition and added in partition order, so the floating-point
    result does not depend on how work was bundled."""

    def __init__(self, numeric_fields: tuple[str, ...] = ()) -> None:
        self.numeric_fields = numeric_fields

    def create_accumulator(self) -> Accumulator:
        return [], [], {}

    def add_input(self, acc: Accumulator, pair: tuple[str, Any]) -> Accumulator:
        if pair[0] != ROWS:
            return acc
        slot, table = pair[1]
        acc[0].append(columnar.IdCounts.of(table.column("user")))
        acc[1].append(columnar.IdCounts.of(table.column("item")))
        numeric = {name: columnar.numeric_summary(columnar.numbers(table, name)) for name in self.numeric_fields}
        if numeric:
            acc[2][slot] = numeric
        return acc

    def merge_accumulators(self, accs: Iterable[Accumulator]) -> Accumulator:
        merged: Accumulator = [], [], {}
        for users, items, numeric in accs:
            merged[0].extend(users)
            merged[1].extend(items)
            merged[2].update(numeric)
        return merged

    def extract_output(self, acc: Accumulator) -> Summary:
        users, items, numeric = acc
        stats = {
            name: columnar.merge_numeric(numeric[slot][name] for slot in sorted(numeric))
            for name in self.numeric_fields
        }
        return Summary(columnar.IdCounts.merge(users), columnar.IdCounts.merge(items), stats)


class KeepFrequent(RowStage):
    """One k-core round on a partition, with the item counts of all partitions (a summary) as a side input."""

    def __init__(self, min_items: int, min_users: int) -> None:
        self.min_items = min_items
        self.min_users = min_users

    def rows(self, part: tuple[int, pa.Table], summary: Summary) -> Iterator[tuple[str, Any]]:
        rows, dropped_items, dropped_users = columnar.keep_frequent(
            part[1], summary.items, self.min_items, self.min_users
        )
        yield COUNT, ("filtered_item", dropped_items)
        yield COUNT, ("filtered_user", dropped_users)
        if rows.num_rows:
            yield ROWS, (part[0], rows)


def vocabularies(summary: Summary) -> tuple[columnar.Vocabulary, columnar.Vocabulary]:
    """Dense user ids from 0 and item ids from 1 (0 pads sequences)."""
    return (
        columnar.Vocabulary.build(summary.users.ids.to_pylist(), start=0),
        columnar.Vocabulary.build(summary.items.ids.to_pylist(), start=1),
    )


class BuildSequences(RowStage):
    """A partition's users as interaction rows (dense ids, time order, positions, split labels), by shard."""

    def __init__(self, config: PrepareConfig) -> None:
        self.config = config

    def rows(
        self, part: tuple[int, pa.Table], vocabs: tuple[columnar.Vocabulary, columnar.Vocabulary]
    ) -> Iterator[tuple[str, Any]]:
        rows = columnar.sequences(part[1], *vocabs, self.config.split)
        yield COUNT, ("rows_out", rows.num_rows)
        per_split = np.bincount(rows.column("split").to_numpy(), minlength=len(SPLITS))
        for label, count in zip(SPLITS, per_split, strict=True):
            yield COUNT, (f"split_{label}", int(count))
        shard_of = rows.column("user_idx").to_numpy() % self.config.shards
        for shard in np.unique(shard_of):
            yield ROWS, (int(shard), rows.filter(shard_of == shard))


def _write_parquet(table: pa.Table, path: str) -> None:
    buffer = io.BytesIO()
    pq.write_table(table, buffer, compression="zstd")
    with FileSystems.create(path) as handle:
        handle.write(buffer.getvalue())


def write_shard(shard: tuple[int, Iterable[pa.Table]], staging: str, shards: int) -> str:
    """All users of one shard, by user then position, in one Parquet file (deterministic bytes)."""
    index, pieces = shard
    path = f"{staging}/interactions-{index:05d}-of-{shards:05d}.parquet"
    _write_parquet(columnar.interactions_table(pieces), path)
    return path


def write_vocabularies(summary: Summary, source: DatasetSource, staging: str) -> list[str]:
    """The item and user vocabularies with their interaction counts and metadata.

    The metadata files are read here, again after the driver's check: thousands of entries pickled
    into the transform would cost more to serialize and load than the files take to read.
    """
    items, users = summary.items.as_dict(), summary.users.as_dict()
    return [write_items(items, load_items(source), staging), write_users(users, load_users(source), staging)]


def write_items(counts: dict[str, int], metadata: dict[str, ItemInfo], staging: str) -> str:
    """The item vocabulary with interaction counts and metadata; index 0 is reserved for padding."""
    vocab = build_vocab(counts, start=1)
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


def write_users(counts: dict[str, int], attributes: tuple[list[str], dict[str, dict[str, str]]], staging: str) -> str:
    """The user vocabulary with interaction counts and the user file's attributes."""
    vocab = build_vocab(counts, start=0)
    tokens = sorted(vocab, key=vocab.__getitem__)
    columns: dict[str, Any] = {
        "user_idx": pa.array([vocab[t] for t in tokens], pa.int32()),
        "user_id": pa.array(tokens, pa.string()),
        "interactions": pa.array([counts[t] for t in tokens], pa.int64()),
    }
    names, by_user = attributes
    for name in names:
        columns[name] = pa.array([by_user.get(t, {}).get(name) for t in tokens], pa.string())
    path = f"{staging}/users.parquet"
    _write_parquet(pa.table(columns), path)
    return path


def write_reports(
    valid: Summary,
    staging: str,
    dataset: str,
    schema_bytes: bytes,
    notes: list[tuple[str, Any]],
    written: list[str],
) -> str:
    """Schema, statistics of the validated rows, anomalies, the sorted dead letters, and last the run's
    row accounting (the notes' counts), once every other output is ``written``."""
    schema = schema_pb2.Schema.FromString(schema_bytes)
    save_schema(schema, Path(staging) / SCHEMA_FILE)
    users, items = valid.users.as_dict(), valid.items.as_dict()
    valid_rows = sum(users.values())
    ids = {"user_id": columnar.id_summary(users), "item_id": columnar.id_summary(items)}
    save_statistics(statistics_proto(dataset, valid_rows, valid.numeric, ids), Path(staging) / "statistics.pbtxt")
    dead = [value for tag, value in notes if tag == DEAD]
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
    totals = dict.fromkeys(COUNTERS, 0)
    for _, (name, count) in (note for note in notes if note[0] == COUNT):
        totals[name] += count
    path = Path(staging) / COUNTS_FILE
    reports = [SCHEMA_FILE, "statistics.pbtxt", ANOMALIES_FILE, DEAD_LETTER_FILE]
    path.write_text(json.dumps({"counts": totals, "written": sorted([*written, *reports])}))
    return str(path)


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
    """Wire the prepare transforms onto ``pipeline``; outputs land in ``staging``.

    One shuffle moves the validated rows into per-user partitions; everything after works on whole
    partitions, with combiners (id counts, statistics) as side inputs, and one more shuffle gathers
    each output shard. The last transform depends on every output, as runners that compute only
    the final node (Beam's DaskRunner) need.
    """
    spec = source.interactions
    paths = {i.src: i.path for i in inputs}
    parquet_columns = {k: str(v) for k, v in spec.columns.model_dump().items() if v is not None}
    blocks = pipeline | "Blocks" >> beam.Create(plan_blocks(inputs))
    parsed = blocks | "ParseBlocks" >> beam.ParDo(ParseBlock(parquet_columns, config.max_field_chars))
    if saved_schema is not None:
        schema = pipeline | "SavedSchema" >> beam.Create([saved_schema.SerializeToString()])
    elif not fields_to_profile(spec):
        declared = infer_schema(spec, empty_profile()).SerializeToString()
        schema = pipeline | "DeclaredSchema" >> beam.Create([declared])
    else:
        schema = (
            parsed
            | "Profile" >> beam.CombineGlobally(ProfileFn(fields_to_profile(spec)))
            | "InferSchema" >> beam.Map(lambda profile: infer_schema(spec, profile).SerializeToString())
        )
    validate = Validate(paths, latest_timestamp)
    validated = _route(parsed | "Validate" >> beam.ParDo(validate, beam.pvalue.AsSingleton(schema)), "Valid")
    grouped = validated[ROWS] | "GroupPartitions" >> beam.GroupByKey()
    parts = grouped | "Deduplicate" >> beam.ParDo(Deduplicate(paths, config.drop_duplicates))
    valid = parts | "Summarize" >> beam.CombineGlobally(Summarize(("rating", "timestamp")))

    flt = config.filter
    kept, counts = parts, valid
    for round_ in range(flt.rounds):
        if round_:
            counts = kept | f"Summarize{round_}" >> beam.CombineGlobally(Summarize())
        keep = KeepFrequent(flt.min_item_interactions, flt.min_user_interactions)
        kept = kept | f"KeepFrequent{round_}" >> beam.ParDo(keep, beam.pvalue.AsSingleton(counts))

    final = kept | "SummarizeKept" >> beam.CombineGlobally(Summarize())
    vocabs = final | "Vocabularies" >> beam.Map(vocabularies)
    sequences = kept | "BuildSequences" >> beam.ParDo(BuildSequences(config), beam.pvalue.AsSingleton(vocabs))
    built = _route(sequences, "Built")
    shards = (
        built[ROWS]
        | "GroupShards" >> beam.GroupByKey()
        | "WriteShards" >> beam.Map(write_shard, staging=staging, shards=config.shards)
    )
    vocab_files = final | "WriteVocabularies" >> beam.FlatMap(write_vocabularies, source=source, staging=staging)
    notes = (validated[NOTES], built[NOTES]) | "AllNotes" >> beam.Flatten()
    written = (shards, vocab_files) | "AllWritten" >> beam.Flatten()
    _ = valid | "WriteReports" >> beam.Map(
        write_reports,
        staging=staging,
        dataset=source.name,
        schema_bytes=beam.pvalue.AsSingleton(schema),
        notes=beam.pvalue.AsList(notes),
        written=beam.pvalue.AsList(written),
    )


def _counts(staging: Path) -> dict[str, int]:
    """The accounting the pipeline wrote last; its absence means the runner did not run every transform."""
    path = staging / COUNTS_FILE
    if not path.exists():
        raise DataError(f"the Beam run finished without writing {path}: the runner skipped transforms (a bug)")
    totals = dict.fromkeys(COUNTERS, 0)
    totals.update(json.loads(path.read_text())["counts"])
    path.unlink()
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
    load_items(source), load_users(source)  # a bad metadata file is an error before any work starts
    schema_path = out_dir / SCHEMA_FILE
    saved_schema = load_schema(schema_path) if schema_path.exists() and not infer_new_schema else None
    staging = out_dir / ".staging"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    latest = int((now if now is not None else time.time()) + 86_400)
    options = PipelineOptions([f"--runner={runner_flag(runner)}", *(beam_args or [])])
    log.info("preparing %s with %s (%s schema)", source.name, runner, "saved" if saved_schema else "inferring a")
    pipeline = beam.Pipeline(options=options)
    build_pipeline(pipeline, source, inputs, config, str(staging), saved_schema, latest)
    pipeline.run().wait_until_finish()
    counts = _counts(staging)

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
