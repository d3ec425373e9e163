"""The prepare pipeline, unchanged, on a distributed runner: Beam's DaskRunner on a dask.distributed
cluster of worker processes started here, against the FnApiRunner's output."""

from __future__ import annotations

import pytest
from distributed import LocalCluster, Nanny

from recsys.data.beam_prepare import run_prepare
from recsys.data.catalog import layout_source
from recsys.data.prepared import PreparedDataset

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_dask_workers_prepare_the_same_dataset_as_the_fn_api_runner(tmp_path, small_latest):
    source = layout_source("ml-latest-small", "grouplens", small_latest)
    with LocalCluster(n_workers=2, threads_per_worker=2, processes=True, dashboard_address=None) as cluster:
        address = [f"--dask_client_address={cluster.scheduler_address}", "--dask_npartitions=1"]
        dask = run_prepare(source, tmp_path / "dask", runner="DaskRunner", beam_args=address).manifest
        workers = list(cluster.workers.values())
    fn_api = run_prepare(source, tmp_path / "fn_api").manifest

    assert len(workers) == 2 and all(isinstance(w, Nanny) for w in workers)  # each worker its own process
    assert dask["rows"] == fn_api["rows"] and dask["split"] == fn_api["split"]
    assert dask["outputs"] == fn_api["outputs"]  # every file byte for byte, statistics included
    first, second = (PreparedDataset.open(tmp_path / name).interactions for name in ("dask", "fn_api"))
    assert first.equals(second)


@pytest.mark.xfail(
    strict=True,
    reason="apache-beam 2.77's DaskRunner counts the rows twice in a side input computed from the consumer's own "
    "input (20 instead of 10), which inflates the prepare pipeline's item counts",
)
def test_dask_runner_side_input_of_a_sum_over_the_main_input(tmp_path):
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions

    seen = tmp_path / "seen.txt"  # the workers write what they read (they run on copies of the functions)
    with LocalCluster(n_workers=1, threads_per_worker=2, processes=False, dashboard_address=None) as cluster:
        flags = ["--runner=apache_beam.runners.dask.dask_runner.DaskRunner", "--dask_npartitions=1",
                 f"--dask_client_address={cluster.scheduler_address}"]  # fmt: skip
        pipeline = beam.Pipeline(options=PipelineOptions(flags))
        rows = pipeline | beam.Create([1, 2, 3, 4]) | "Same" >> beam.Map(lambda x: x)
        total = rows | beam.CombineGlobally(sum)
        _ = rows | "Read" >> beam.Map(lambda _, t: seen.open("a").write(f"{t}\n"), t=beam.pvalue.AsSingleton(total))
        pipeline.run().wait_until_finish()
    assert seen.read_text().split() == ["10"] * 4
