"""The prepare pipeline, unchanged, on a distributed runner: Beam's DaskRunner (with one defect fixed by
recsys.data.dask_runner) on a dask.distributed cluster of worker processes started here, against the
FnApiRunner's output."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.transforms.window import GlobalWindow
from apache_beam.utils.windowed_value import WindowedValue
from distributed import LocalCluster, Nanny

from recsys.data.beam_options import runner_flag
from recsys.data.beam_prepare import run_prepare
from recsys.data.catalog import layout_source
from recsys.data.prepared import PreparedDataset
from recsys.data.sources import DatasetSource

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _in_two_files(folder: Path) -> DatasetSource:
    """ml-latest-small's layout at ``folder`` with its ratings cut into two files: two input blocks, so that the
    Dask workers run each transform as two bundles."""
    header, *rows = (folder / "ratings.csv").read_text().splitlines()
    half = len(rows) // 2
    for name, part in (("ratings-1.csv", rows[:half]), ("ratings-2.csv", rows[half:])):
        (folder / name).write_text("\n".join([header, *part]) + "\n")
    source = layout_source("ml-latest-small", "grouplens", folder)
    files = source.interactions.model_copy(update={"paths": ["ratings-1.csv", "ratings-2.csv"]})
    return source.model_copy(update={"interactions": files})


def test_dask_workers_prepare_the_same_dataset_as_the_fn_api_runner(tmp_path, small_latest):
    source = _in_two_files(small_latest)
    with LocalCluster(n_workers=2, threads_per_worker=2, processes=True, dashboard_address=None) as cluster:
        address = [f"--dask_client_address={cluster.scheduler_address}", "--dask_npartitions=2"]
        dask = run_prepare(source, tmp_path / "dask", runner="DaskRunner", beam_args=address).manifest
        workers = list(cluster.workers.values())
    fn_api = run_prepare(source, tmp_path / "fn_api").manifest

    assert len(workers) == 2 and all(isinstance(w, Nanny) for w in workers)  # each worker its own process
    assert dask["rows"] == fn_api["rows"] and dask["split"] == fn_api["split"]
    assert dask["outputs"] == fn_api["outputs"]  # every file byte for byte, statistics included
    first, second = (PreparedDataset.open(tmp_path / name).interactions for name in ("dask", "fn_api"))
    assert first.equals(second)


def test_the_client_is_closed_once_the_pipeline_has_run():
    """Beam's runner leaves its client open: at the cluster's shutdown it retried and printed a traceback."""
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None) as cluster:
        flags = [f"--runner={runner_flag('DaskRunner')}", f"--dask_client_address={cluster.scheduler_address}"]
        pipeline = beam.Pipeline(options=PipelineOptions(flags))
        _ = pipeline | beam.Create([1, 2, 3]) | beam.Map(lambda x: x * 2)
        result = pipeline.run()
        assert result.wait_until_finish() == "DONE"
        assert result.client.status == "closed"


# Beam's own DaskRunner and the one the prepare pipeline runs on (recsys.data.dask_runner): the defect the latter
# works around is checked to be still there upstream, so that the workaround goes once an upgrade fixes it.
FIXED = pytest.param(runner_flag("DaskRunner"), id="recsys")
UPSTREAM = pytest.param(
    "apache_beam.runners.dask.dask_runner.DaskRunner",
    id="beam",
    marks=pytest.mark.xfail(
        strict=True,
        reason="apache-beam 2.77's DaskRunner returns a ParDo's earlier bundles' outputs again with each bundle "
        "run by the same copy of the graph, computes a side input again in each task that reads it, and "
        "drops what finish_bundle emits (see recsys/data/dask_runner.py)",
    ),
)


def _run_on_dask(runner: str, npartitions: int, build: Callable[[beam.Pipeline], object]) -> None:
    """``build``'s pipeline on one in-process Dask worker (its tasks share the graph's objects)."""
    with LocalCluster(n_workers=1, threads_per_worker=2, processes=False, dashboard_address=None) as cluster:
        flags = [f"--runner={runner}", f"--dask_npartitions={npartitions}",
                 f"--dask_client_address={cluster.scheduler_address}"]  # fmt: skip
        pipeline = beam.Pipeline(options=PipelineOptions(flags))
        build(pipeline)
        result = pipeline.run()
        try:
            result.wait_until_finish()
        finally:
            result.client.close()  # Beam's own runner leaves it open


@pytest.mark.parametrize("runner", [FIXED, UPSTREAM])
def test_a_side_input_summing_its_consumers_own_input_is_computed_once(tmp_path, runner):
    seen, ran = tmp_path / "seen.txt", tmp_path / "ran.txt"  # the workers write what they read and ran

    def build(pipeline: beam.Pipeline) -> None:
        rows = pipeline | beam.Create([1, 2, 3, 4]) | "Same" >> beam.Map(lambda x: ran.open("a").write("x") and x)
        total = rows | beam.CombineGlobally(sum)
        _ = rows | "Read" >> beam.Map(lambda _, t: seen.open("a").write(f"{t}\n"), t=beam.pvalue.AsSingleton(total))

    _run_on_dask(runner, 1, build)
    assert seen.read_text().split() == ["10"] * 4  # Beam's runner: 20, the rows counted twice
    assert ran.read_text() == "xxxx"  # each row made once: Beam's runner makes them again for the side input


@pytest.mark.parametrize("runner", [FIXED, UPSTREAM])
def test_a_global_sum_over_four_partitions_of_one_worker(tmp_path, runner):
    seen = tmp_path / "seen.txt"

    def build(pipeline: beam.Pipeline) -> None:
        rows = pipeline | beam.Create(list(range(1, 9))) | "Same" >> beam.Map(lambda x: x)
        _ = rows | beam.CombineGlobally(sum) | "Write" >> beam.Map(lambda t: seen.open("a").write(f"{t}\n"))

    _run_on_dask(runner, 4, build)  # Beam's runner: the global combine gets six partial sums and fails
    assert seen.read_text().split() == ["36"]


class _SumPerBundle(beam.DoFn):  # type: ignore[misc]
    """Emits only from finish_bundle, as batching DoFns do."""

    def start_bundle(self) -> None:
        self.total = 0

    def process(self, value: int) -> None:
        self.total += value

    def finish_bundle(self):  # type: ignore[no-untyped-def]
        yield WindowedValue(self.total, 0, [GlobalWindow()])


@pytest.mark.parametrize("runner", [FIXED, UPSTREAM])
def test_outputs_of_finish_bundle_are_kept(tmp_path, runner):
    seen = tmp_path / "seen.txt"

    def build(pipeline: beam.Pipeline) -> None:
        sums = pipeline | beam.Create([1, 2, 3, 4]) | beam.ParDo(_SumPerBundle())
        _ = sums | beam.CombineGlobally(sum) | "Write" >> beam.Map(lambda t: seen.open("a").write(f"{t}\n"))

    _run_on_dask(runner, 2, build)
    assert seen.read_text().split() == ["10"]  # Beam's runner: 7, one bundle's sum lost and another's repeated
