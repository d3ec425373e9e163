"""The simulator's fidelity: measured by a quick check on first use and cached, or read from the benchmark."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from ab_testing.fidelity import CACHE_NAME, SimulatorFidelity, simulator_fidelity
from recsys.data.prepared import PreparedDataset

CALIBRATED = SimulatorFidelity(dataset="d", source="test", policies=6,
                               spearman={"active_days": 0.94, "satisfaction": 0.89},
                               world_model_test_ndcg10=0.169, best_policy_test_ndcg10=0.168)  # fmt: skip


@pytest.fixture
def prepared_copy(prepared_small: PreparedDataset, tmp_path: Path) -> PreparedDataset:
    """The small prepared dataset in a folder of its own (a cached check lands beside the data)."""
    copy = Path(shutil.copytree(prepared_small.path, tmp_path / "prepared"))
    (copy / CACHE_NAME).unlink(missing_ok=True)  # measured by an earlier test's experiment
    return PreparedDataset.open(copy)


def test_a_quick_check_runs_on_first_use_and_is_cached_beside_the_data(prepared_copy, tmp_path) -> None:
    fidelity = simulator_fidelity(prepared_copy, benchmark=tmp_path / "no-benchmark.json")
    assert fidelity.policies == 4 and fidelity.dataset == prepared_copy.name
    assert set(fidelity.spearman) == {"active_days", "satisfaction", "retained_d7"}
    assert all(-1.0 <= value <= 1.0 for value in fidelity.spearman.values())
    assert 0 < fidelity.world_model_test_ndcg10 <= 1 and 0 < fidelity.best_policy_test_ndcg10 <= 1
    cached = prepared_copy.path / CACHE_NAME
    assert SimulatorFidelity.model_validate_json(cached.read_text()) == fidelity
    cached.write_text(CALIBRATED.model_dump_json())  # a later lookup reads the cache, it does not measure again
    assert simulator_fidelity(prepared_copy, benchmark=tmp_path / "no-benchmark.json") == CALIBRATED


def test_the_benchmark_result_for_the_dataset_comes_first(prepared_copy, tmp_path) -> None:
    policies = {name: {"offline_test_ndcg10": ndcg} for name, ndcg in (("random", 0.001), ("sasrec_ce", 0.17))}
    payload = {"dataset_name": prepared_copy.name, "policies": policies, "world_model_test_ndcg10": 0.16,
               "spearman": {"active_days": 0.9, "satisfaction": 0.7, "retained_d7": 0.8, "ctr": 0.1},
               "settings": {"users": 10, "days": 2}, "date": "2026-12-04"}  # fmt: skip
    benchmark = tmp_path / "simulator_fidelity.json"
    benchmark.write_text(json.dumps(payload))
    fidelity = simulator_fidelity(prepared_copy, benchmark=benchmark)
    assert fidelity.spearman == {"active_days": 0.9, "satisfaction": 0.7, "retained_d7": 0.8}
    assert fidelity.best_policy_test_ndcg10 == 0.17 and not fidelity.passed
    assert not (prepared_copy.path / CACHE_NAME).exists()
    payload["dataset_name"] = "another"  # another dataset's result is not this one's fidelity
    benchmark.write_text(json.dumps(payload))
    assert simulator_fidelity(prepared_copy, benchmark=benchmark).policies == 4


def test_the_gate_says_plainly_when_a_verdict_rests_on_a_simulator_below_the_bar() -> None:
    assert CALIBRATED.passed
    text = CALIBRATED.sentence()
    assert "meets the bar" in text and "Warning" not in text and "active_days +0.94" in text
    weak = CALIBRATED.model_copy(update={"spearman": {"active_days": 0.5, "satisfaction": 0.89}})
    assert weak.shortfalls == ["Spearman ρ of active_days 0.50 < 0.8"]
    assert "Warning: this verdict rests on a simulator below the fidelity bar" in weak.sentence()
    naive = CALIBRATED.model_copy(update={"world_model_test_ndcg10": 0.05})
    assert not naive.passed and "predict real next items worse" in naive.sentence()
