"""The same training code under torchrun: DistributedModelParallel with gloo at world size 2 on CPU."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.integration]


def test_train_under_torchrun_shards_the_tables_and_learns(tmp_path, prepared_small, seeds_dir):
    torchrun = Path(sys.executable).parent / "torchrun"
    out = tmp_path / "run"
    command = [
        str(torchrun), "--standalone", "--nproc_per_node=2", "-m", "evorec", "train",
        "--candidate", str(seeds_dir / "sasrec_ce"), "--dataset", str(prepared_small.path),
        "--max-epochs", "3", "--out", str(out), "--json",
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads((out / "result.json").read_text())
    assert result["world_size"] == 2 and result["epochs"] == 3
    losses = [epoch["loss"] for epoch in result["history"]]
    assert losses[-1] < losses[0]
    assert 0.0 <= result["test"]["ndcg@10"] <= 1.0
    assert len((out / "epochs.jsonl").read_text().splitlines()) == 3  # rank 0 alone writes
