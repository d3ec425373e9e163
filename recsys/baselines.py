"""Non-neural baselines, fitted on the training events and scored like any candidate.

Each baseline is a :data:`~recsys.evaluation.Scorer`: given a batch of histories it scores every
item, so the same evaluator, masking and metrics apply.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch

from recsys.candidate_api import ITEM_FEATURE, Batch
from recsys.sequences import UserSequences


def train_matrix(sequences: UserSequences) -> sp.csr_matrix:
    """Binary users X (items + 1) matrix of the training events."""
    users = np.repeat(np.arange(sequences.num_users), np.diff(sequences.offsets))
    train = sequences.split == 0
    data = np.ones(int(train.sum()), dtype=np.float32)
    matrix = sp.csr_matrix(
        (data, (users[train], sequences.items[train])), shape=(sequences.num_users, sequences.num_items + 1)
    )
    matrix.data[:] = 1.0  # repeats of a user-item pair count once
    return matrix


def history_matrix(batch: Batch, width: int) -> torch.Tensor:
    """The batch's histories as a dense binary ``B X width`` matrix."""
    jagged = batch.history[ITEM_FEATURE]
    rows = torch.repeat_interleave(torch.arange(len(batch.users)), jagged.lengths())
    matrix = torch.zeros(len(batch.users), width)
    matrix[rows, jagged.values()] = 1.0
    return matrix


class MostPopular:
    """Every user gets the items most interacted with in training."""

    def __init__(self, sequences: UserSequences) -> None:
        self.counts = torch.from_numpy(sequences.train_counts()).float()

    def __call__(self, batch: Batch) -> torch.Tensor:
        return self.counts.expand(len(batch.users), -1)


class EASE:
    """Embarrassingly Shallow Autoencoder (Steck 2019): a closed-form item-item model.

    ``B = I - P / diag(P)`` with ``P = (XᵀX + λI)⁻¹`` and a zero diagonal; scores are ``x_u B``.
    """

    def __init__(self, sequences: UserSequences, l2: float = 500.0) -> None:
        x = train_matrix(sequences)
        gram = (x.T @ x).toarray().astype(np.float64)
        gram[np.diag_indices_from(gram)] += l2
        precision = np.linalg.inv(gram)
        weights = -precision / np.diag(precision)
        weights[np.diag_indices_from(weights)] = 0.0
        self.weights = torch.from_numpy(weights.astype(np.float32))

    def __call__(self, batch: Batch) -> torch.Tensor:
        return history_matrix(batch, self.weights.shape[0]) @ self.weights


class ItemKNN:
    """Item-based nearest neighbours: cosine similarity of item columns, ``k`` neighbours per item."""

    def __init__(self, sequences: UserSequences, neighbours: int = 100, shrink: float = 10.0) -> None:
        x = train_matrix(sequences)
        norms = np.sqrt(np.asarray(x.sum(0)).ravel())
        similarity = (x.T @ x).toarray().astype(np.float32)
        similarity /= np.outer(norms, norms) + shrink
        np.fill_diagonal(similarity, 0.0)
        if neighbours < similarity.shape[0]:
            cutoff = np.partition(similarity, -neighbours, axis=0)[-neighbours]
            similarity[similarity < cutoff] = 0.0
        self.similarity = torch.from_numpy(similarity)

    def __call__(self, batch: Batch) -> torch.Tensor:
        return history_matrix(batch, self.similarity.shape[0]) @ self.similarity


BASELINES = {"most_popular": MostPopular, "ease": EASE, "item_knn": ItemKNN}
