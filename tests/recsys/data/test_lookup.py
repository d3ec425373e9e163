"""The dataset lookup every command shares: the shipped dataset is prepared once, then reused while
current. (The main job itself, the two-loop pipeline, runs in tests/pipelines.)"""

from __future__ import annotations

import pytest

from recsys.data.lookup import prepared_dataset

pytestmark = [pytest.mark.slow, pytest.mark.integration]


def test_the_shipped_dataset_is_prepared_once_and_then_reused(settings, caplog):
    prepared = prepared_dataset("ml-latest-small", settings)
    assert (prepared.num_users, prepared.manifest["rows"]["read"]) == (610, 100_836)
    stamp = (prepared.path / "manifest.json").stat().st_mtime_ns
    with caplog.at_level("INFO"):
        assert prepared_dataset("ml-latest-small", settings).path == prepared.path
    assert "up to date" in caplog.text
    assert (prepared.path / "manifest.json").stat().st_mtime_ns == stamp
    assert prepared_dataset(str(prepared.path), settings).path == prepared.path  # a prepared folder by path
