"""The incremental SASRec scorer against the exported program it stands in for (trained on ml-latest-small)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from serving.artifacts import load_artifact
from serving.batcher import masked_top_k
from serving.incremental import AGREEMENT, IncrementalScorer

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def sasrec(artifacts):
    return load_artifact(str(artifacts["sasrec_ce"]))


def test_only_a_model_that_scores_as_the_sasrec_layout_gets_an_incremental_scorer(sasrec, artifacts):
    assert IncrementalScorer.attach(sasrec) is not None
    assert IncrementalScorer.attach(load_artifact(str(artifacts["mf_bpr"]))) is None


def test_histories_grown_one_item_at_a_time_score_as_a_full_pass_of_the_program(sasrec, prepared_small):
    from recsys.sequences import UserSequences

    scorer = IncrementalScorer.attach(sasrec)
    assert scorer is not None
    sequences = UserSequences.from_prepared(prepared_small)
    users = np.arange(40)
    histories = [sequences.history(int(user), "test") for user in users]
    assert max(len(h) for h in histories) > sasrec.manifest.max_len  # some windows slide: those are scored in full
    rng = np.random.default_rng(0)
    scorer.scores(users, histories)
    for _ in range(3):  # three visits, each adding one consumed item
        histories = [np.append(h, rng.integers(1, sasrec.manifest.num_items + 1)) for h in histories]
        fitting = sum(len(h) <= sasrec.manifest.max_len for h in histories)
        steps = scorer.steps
        fast, exact = scorer.scores(users, histories), sasrec.scores(users, histories)
        assert scorer.steps - steps == fitting > 0  # every history that fits the window came from its cache
        assert float((fast - exact).abs().max()) <= AGREEMENT * float(exact.std())
        top, top_exact = masked_top_k(fast, histories, 10), masked_top_k(exact.clone(), histories, 10)
        assert torch.equal(top.indices, top_exact.indices)


def test_a_history_that_is_not_its_cached_one_plus_an_item_is_scored_in_full(sasrec):
    scorer = IncrementalScorer.attach(sasrec)
    assert scorer is not None
    history = np.array([5, 9, 2, 7])
    scorer.scores(np.array([1]), [history[:2]])
    skipped = scorer.scores(np.array([1]), [history])  # two items later: no step from the cache
    assert scorer.steps == 0 and scorer.full == 2
    assert float((skipped - sasrec.scores(np.array([1]), [history])).abs().max()) <= 1e-4
