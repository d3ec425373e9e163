"""The protocol's ML-1M counts, from a real fetch and a real pipeline run (about two minutes)."""

from __future__ import annotations

import pytest

from recsys.data.beam_prepare import run_prepare
from recsys.data.catalog import builtin_source
from recsys.data.fetch import fetch_dataset
from recsys.data.prepared import PreparedDataset
from recsys.settings import Settings

pytestmark = [pytest.mark.slow, pytest.mark.integration]


def test_ml1m_with_the_protocol_filter_has_the_published_counts(tmp_path_factory):
    settings = Settings(data_dir=tmp_path_factory.mktemp("evorec-data"))
    fetch_dataset("ml-1m", settings)
    out = settings.prepared_dir / "ml-1m"
    manifest = run_prepare(builtin_source("ml-1m", settings), out).manifest
    assert (manifest["users"], manifest["items"], manifest["interactions"]) == (6040, 3416, 999_611)
    rows = manifest["rows"]
    assert rows["read"] == 1_000_209
    assert rows["read"] == rows["out"] + sum(rows["dead_lettered"].values()) + sum(rows["filtered"].values())
    assert manifest["split"] == {"method": "leave_one_out", "train": 987_531, "valid": 6040, "test": 6040}
    interactions = PreparedDataset.open(out).interactions
    last = interactions.groupby("user_idx").tail(1)
    assert (last["split"] == "test").all()
    assert interactions.groupby("user_idx")["timestamp"].is_monotonic_increasing.all()
