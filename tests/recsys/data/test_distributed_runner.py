"""The prepare pipeline, unchanged, on a distributed runner: Beam's DaskRunner on a dask.distributed
cluster of worker processes started here, against the FnApiRunner's output."""

from __future__ import annotations

import pytest
from distributed import LocalCluster, Nanny

from recsys.data.beam_prepare import run_prepare
from recsys.data.catalog import layout_source
from recsys.data.prepared import PreparedDataset

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.mark.xfail(
    strict=True,
    reason="apache-beam 2.77's DaskRunner gives wrong k-core counts for this pipeline (549 rows out on "
    "FnApiRunner, 1309 on Dask); cause not found yet (see infra/README.md, Beam on Dask)",
)
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
