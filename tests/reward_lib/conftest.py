"""Real simulated A/B logs on the small prepared dataset, shared by the reward tests."""

from __future__ import annotations

import pytest

from ab_testing.experiment import ArmPlan, ExperimentPlan
from ab_testing.ground_truth import GroundTruth
from ab_testing.reference_logs import simulate_reference_log
from reward_lib.alignment import AlignmentData
from reward_lib.logs import LogFile

ARMS = (ArmPlan(name="popularity"), ArmPlan(name="random"), ArmPlan(name="oracle"))


@pytest.fixture(scope="session")
def reference_logs(prepared_small, tmp_path_factory) -> list[LogFile]:
    """Two logs (seeds 1 and 2) of 600 simulated users over 8 days, arms popularity, random, oracle."""
    truth = GroundTruth.fit(prepared_small)
    folder = tmp_path_factory.mktemp("reward-logs")
    return [
        LogFile.find(simulate_reference_log(
            ExperimentPlan(name=f"ref-{seed}", dataset=str(prepared_small.path), arms=ARMS, users=600, days=8,
                           pre_period_days=0, seed=seed),
            prepared_small, folder / f"ref-{seed}", truth,
        ))
        for seed in (1, 2)
    ]  # fmt: skip


@pytest.fixture(scope="session")
def aligned(reference_logs, prepared_small) -> list[AlignmentData]:
    return [log.read(prepared_small.items) for log in reference_logs]
