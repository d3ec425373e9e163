"""`evorec run` on the embedded default: prepares the shipped dataset, then reuses it while current."""

from __future__ import annotations

import pytest

from evorec.main_job import run_main_job
from recsys.data.prepared import PreparedDataset

pytestmark = [pytest.mark.slow, pytest.mark.integration]


def test_main_job_prepares_the_shipped_dataset_once(settings, caplog):
    out = run_main_job(settings)
    prepared = PreparedDataset.open(out)
    assert (prepared.num_users, prepared.manifest["rows"]["read"]) == (610, 100_836)
    stamp = (out / "manifest.json").stat().st_mtime_ns
    with caplog.at_level("INFO"):
        assert run_main_job(settings) == out
    assert "up to date" in caplog.text
    assert (out / "manifest.json").stat().st_mtime_ns == stamp
