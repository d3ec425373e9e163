from __future__ import annotations

import torch

from recsys.baselines import EASE, ItemKNN, MostPopular
from recsys.evaluation import ItemCatalog, evaluate
from recsys.sequences import UserSequences


def test_ease_weights_have_a_zero_diagonal_and_knn_is_symmetric_before_pruning(prepared_small):
    sequences = UserSequences.from_prepared(prepared_small)
    assert torch.count_nonzero(torch.diagonal(EASE(sequences).weights)) == 0
    knn = ItemKNN(sequences, neighbours=10_000)
    torch.testing.assert_close(knn.similarity, knn.similarity.T)


def test_personalised_baselines_beat_popularity_on_validation(prepared_small):
    sequences = UserSequences.from_prepared(prepared_small)
    catalog = ItemCatalog.build(prepared_small, sequences)
    scores = {
        name: evaluate(scorer(sequences), sequences, "valid", catalog).metrics
        for name, scorer in (("pop", MostPopular), ("ease", EASE), ("knn", ItemKNN))
    }
    assert scores["pop"]["coverage@10"] < scores["ease"]["coverage@10"]
    assert scores["ease"]["hr@20"] >= scores["pop"]["hr@20"]
