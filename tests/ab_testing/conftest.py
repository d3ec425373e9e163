"""A small ground truth and the user sequences of the shipped dataset, shared by the population tests."""

from __future__ import annotations

import pytest

from ab_testing.ground_truth import FitSettings, GroundTruth
from recsys.data.prepared import PreparedDataset
from recsys.sequences import UserSequences


@pytest.fixture(scope="module")
def truth(prepared_small: PreparedDataset) -> GroundTruth:
    return GroundTruth.fit(prepared_small, FitSettings(factors=16, iterations=8))


@pytest.fixture(scope="module")
def sequences(prepared_small: PreparedDataset) -> UserSequences:
    return UserSequences.from_prepared(prepared_small)
