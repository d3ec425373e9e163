"""What a user picks next given what they just consumed: a closed-form next-item regression.

The simulated users' sequential memory. Every event of a user is a target, and its input is the
user's previous ``window`` items weighted by recency (``decay ** lag``, the last item weighs 1). A
ridge regression from inputs to targets, ``W = (XᵀX + l2 I)⁻¹ XᵀY``, is solved exactly over the
catalogue (the item-to-item transition part of SLIST, Choi et al. 2021): a linear model of item
transitions, a different family from the candidates' (transformers, matrix factorisation, EASE's
same-basket autoencoder), fitted in seconds on a CPU.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from recsys.sequences import UserSequences


@dataclass(frozen=True)
class Transitions:
    """A fitted next-item regression.

    Args:
        weights: ``(N+1) X (N+1)`` row i: how much having just consumed item i raises each item next.
        window: the last items an input looks at.
        decay: weight of an item one step further back (the newest weighs 1).
    """

    weights: np.ndarray
    window: int
    decay: float

    @classmethod
    def fit(
        cls, sequences: UserSequences, last_split: int = 2, window: int = 20, decay: float = 0.8, l2: float = 100.0
    ) -> Transitions:
        """Fit on every user's events of splits ``<= last_split`` (0: train only, 1: without test, 2: all)."""
        keep = sequences.split <= last_split
        owners = np.repeat(np.arange(sequences.num_users), np.diff(sequences.offsets))[keep]
        items = sequences.items[keep]
        width = sequences.num_items + 1
        rows, columns, values = [], [], []
        for lag in range(1, window + 1):
            targets = lag + np.flatnonzero(owners[lag:] == owners[:-lag])
            rows.append(targets)
            columns.append(items[targets - lag])
            values.append(np.full(len(targets), decay ** (lag - 1), dtype=np.float64))
        inputs = sp.csr_matrix(
            (np.concatenate(values), (np.concatenate(rows), np.concatenate(columns))), shape=(len(items), width)
        )
        has_input = np.diff(inputs.indptr) > 0
        inputs = inputs[has_input]
        outputs = sp.csr_matrix(
            (np.ones(int(has_input.sum())), (np.arange(int(has_input.sum())), items[has_input])), shape=inputs.shape
        )
        gram = (inputs.T @ inputs).toarray()
        gram[np.diag_indices_from(gram)] += l2
        weights = np.linalg.solve(gram, (inputs.T @ outputs).toarray())
        weights[0] = 0.0
        weights[:, 0] = 0.0
        return cls(weights.astype(np.float32), window, decay)

    def recency(self, recent: np.ndarray) -> np.ndarray:
        """``W`` weights of the columns of a ``A X W`` recent-items block (newest last)."""
        width = recent.shape[1]
        return (self.decay ** np.arange(width - 1, -1, -1)).astype(np.float32)

    def scores(self, recent: np.ndarray, items: np.ndarray | None = None) -> np.ndarray:
        """How strongly each user's recent items call for ``items`` next.

        Args:
            recent: ``A X W`` each user's last items, newest last (0 pads short histories; only the
                last ``window`` columns count).
            items: ``A X K`` items per user; none: the whole catalogue (``A X (N+1)``).
        """
        recent = recent[:, -self.window :]
        weight = self.recency(recent)
        if items is not None:
            return np.einsum("w,awk->ak", weight, self.weights[recent[:, :, None], items[:, None, :]])
        rows = np.repeat(np.arange(len(recent)), recent.shape[1])
        shape = (len(recent), len(self.weights))
        inputs = sp.csr_matrix((np.tile(weight, len(recent)), (rows, recent.ravel())), shape=shape)
        return np.asarray(inputs @ self.weights, dtype=np.float32)
