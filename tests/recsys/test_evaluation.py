"""Metrics pinned to hand-computed values, and the protocol's masking."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from recsys.evaluation import ItemCatalog, accuracy_at_k, calibration_kl, evaluate, gini, list_diversity
from recsys.sequences import UserSequences


def _hits(*ranks, width=20):
    rows = torch.zeros(len(ranks), width, dtype=torch.bool)
    for row, rank in enumerate(ranks):
        if rank is not None:
            rows[row, rank] = True
    return rows


def test_single_target_metrics_match_the_protocol_formulas():
    values = accuracy_at_k(_hits(0, 3, 12, None), torch.ones(4, dtype=torch.long))
    assert values["ndcg@10"].tolist() == pytest.approx([1.0, 1 / math.log2(5), 0.0, 0.0])
    assert values["hr@10"].tolist() == [1.0, 1.0, 0.0, 0.0]
    assert values["hr@20"].tolist() == [1.0, 1.0, 1.0, 0.0]
    assert values["mrr@5"].tolist() == pytest.approx([1.0, 0.25, 0.0, 0.0])
    assert values["recall@10"].tolist() == values["hr@10"].tolist()


def test_several_targets_use_the_ideal_dcg():
    hits = _hits(None)
    hits[0, 1] = True  # two targets, one found at rank 1
    values = accuracy_at_k(hits, torch.tensor([2]))
    assert values["ndcg@10"].item() == pytest.approx((1 / math.log2(3)) / (1 + 1 / math.log2(3)))
    assert values["recall@10"].item() == pytest.approx(0.5)


def test_gini_of_exposure():
    assert gini(np.array([5, 5, 5, 5])) == pytest.approx(0.0)
    assert gini(np.array([0, 0, 0, 8])) == pytest.approx(0.75)


def _catalog(genres: list[list[int]], num_genres: int = 3) -> ItemCatalog:
    matrix = torch.zeros(len(genres), num_genres)
    for item, row in enumerate(genres):
        matrix[item, row] = 1.0
    return ItemCatalog(matrix, torch.arange(len(genres)).float())


def test_list_diversity_is_the_mean_pairwise_jaccard_distance():
    catalog = _catalog([[], [0], [0], [1], [0, 1]])
    same, disjoint, mixed = list_diversity(torch.tensor([[1, 2], [1, 3], [1, 4]]), catalog).tolist()
    assert (same, disjoint, mixed) == pytest.approx([0.0, 1.0, 0.5])


def test_calibration_is_zero_when_the_list_has_the_history_mix_and_grows_when_not():
    catalog = _catalog([[], [0], [1], [0], [1]])
    rows = torch.tensor([0, 0, 1, 1])
    history = torch.tensor([1, 2, 1, 3])  # user 0: half genre 0, half genre 1; user 1: all genre 0
    kl = calibration_kl(rows, history, torch.tensor([[3, 4], [2, 4]]), catalog)
    assert kl[0].item() == pytest.approx(0.0, abs=1e-9)
    assert kl[1].item() > 3.0


def _toy_sequences() -> UserSequences:
    # user 0: items 1, 2, 3 (train), 4 (valid), 5 (test); user 1: items 2, 3 (train), 1 (valid), 4 (test)
    items = np.array([1, 2, 3, 4, 5, 2, 3, 1, 4])
    split = np.array([0, 0, 0, 1, 2, 0, 0, 1, 2], dtype=np.int8)
    return UserSequences(2, 30, items, split, np.full(9, np.nan, np.float32), np.array([0, 5, 9]))


def test_history_items_and_padding_are_never_recommended_and_targets_are_found():
    sequences = _toy_sequences()
    catalog = _catalog([[]] * 31)
    favour_low_ids = lambda batch: -torch.arange(31.0).expand(len(batch.users), -1)  # noqa: E731
    result = evaluate(favour_low_ids, sequences, "test", catalog)
    top = result.top_items
    assert top[0].tolist() == list(range(5, 15))  # user 0's test history 1, 2, 3 (+ valid 4) and 0 masked
    assert result.per_user["ndcg@10"][0] == pytest.approx(1.0)
    assert top[1, 0] == 4  # user 1 may not see 1, 2, 3; the best remaining item is its test target
    assert result.metrics["hr@10"] == pytest.approx(1.0)


def test_a_scorer_of_the_wrong_shape_is_refused():
    with pytest.raises(ValueError, match=r"returned shape \(2, 3\), expected \(2, 31\)"):
        evaluate(lambda b: torch.zeros(2, 3), _toy_sequences(), "valid", _catalog([[]] * 31))
