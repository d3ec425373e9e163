"""The simulated users' true taste: a weighted-ALS model fitted on all of a prepared dataset.

The ground truth plays the part of the users' real preferences in online A/B experiments, so it is
fitted on ALL interactions of every split (train, valid and test). Candidates are trained on the
train split only and never see it: what they learn about the held-out events is then something the
simulated users really prefer, not an echo of the candidate's own training data.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp

from recsys.data.prepared import PreparedDataset

ROWS_PER_BLOCK = 2048  # rows solved together: bounds memory to a block X F X F of normal equations
INIT_SCALE = 0.01  # standard deviation of the random initial factors
RATING_SHRINKAGE = 10.0  # pseudo-ratings at the global mean in an item's shrunk mean rating
MIN_SPREAD = 1e-8  # guards the standardisation of degenerate (all-zero) users


@dataclass(frozen=True)
class GroundTruth:
    """Latent taste of the real users and what the simulation needs to know of items.

    Utilities are ``user_factors[u] @ item_factors[i] + item_bias[i]``. The factors are scaled so
    that, for every real user, the factor part has mean 0 and standard deviation ``utility_scale``
    over the catalogue (a z-score of the ALS score): a typical 10-item slate then spans a few logits,
    whatever the dataset or the factor count, and utility 0 is "an average item for this user".

    Args:
        user_factors: ``U X F`` real users' taste vectors.
        item_factors: ``(N+1) X F`` item vectors, centred over the catalogue; row 0 (padding) is 0.
        item_bias: ``N+1`` item quality in logits (standardised shrunk mean rating), 0 at row 0.
        item_genres: ``(N+1) X G`` genre vectors with unit L2 norm (zeros for no genre), so a dot
            product is the cosine similarity of two items' genres.
        item_popularity: ``N+1`` interaction counts over all the data.
    """

    user_factors: np.ndarray
    item_factors: np.ndarray
    item_bias: np.ndarray
    item_genres: np.ndarray
    item_popularity: np.ndarray

    @property
    def num_users(self) -> int:
        return int(self.user_factors.shape[0])

    @property
    def num_items(self) -> int:
        """Real items; indices run from 1 to ``num_items`` (0 pads)."""
        return int(self.item_factors.shape[0]) - 1

    @classmethod
    def fit(
        cls,
        prepared: PreparedDataset,
        factors: int = 32,
        regularization: float = 0.1,
        iterations: int = 15,
        seed: int = 0,
        alpha: float = 10.0,
        quality_weight: float = 0.5,
        utility_scale: float = 1.0,
    ) -> GroundTruth:
        """Fit implicit-feedback weighted ALS on every interaction of ``prepared`` (all splits).

        Seeing the valid and test events is the point: this is the users' true taste, which the
        candidates (trained on the train split only) have to discover.

        Args:
            factors: latent dimension F.
            regularization: L2 penalty of both factor matrices.
            iterations: alternating rounds (users then items).
            seed: seeds the initial factors; the fit is otherwise deterministic.
            alpha: confidence ``1 + alpha * rating / max rating`` (``1 + alpha`` without ratings).
            quality_weight: logits of one standard deviation of an item's shrunk mean rating.
            utility_scale: standard deviation of a user's factor utilities over the catalogue.

        Example::

            truth = GroundTruth.fit(prepared, factors=16, iterations=5)
            truth.true_utility(np.array([0, 1]), np.array([[3, 4], [5, 6]]))  # 2 X 2
        """
        frame = prepared.interactions
        width = prepared.num_items + 1
        confidence = _confidence_matrix(frame, prepared.num_users, width, alpha)
        users, items = weighted_als(confidence, factors, regularization, iterations, seed)
        user_factors, item_factors = _standardise(users, items, utility_scale)
        counts = np.bincount(frame["item_idx"].to_numpy(np.int64), minlength=width)
        return cls(
            user_factors=user_factors.astype(np.float32),
            item_factors=item_factors.astype(np.float32),
            item_bias=(quality_weight * _item_quality(frame, width)).astype(np.float32),
            item_genres=_genre_matrix(prepared.items, width),
            item_popularity=counts,
        )

    def affinity(self, users_latent: np.ndarray, items: np.ndarray) -> np.ndarray:
        """Utilities of items for users given by their latent vectors (simulated users' tastes).

        Args:
            users_latent: ``B X F`` taste vectors.
            items: ``B X K`` item indices per user, or ``K`` indices shared by all users.

        Returns:
            ``B X K`` utilities in logits.
        """
        if items.ndim == 1:
            return users_latent @ self.item_factors[items].T + self.item_bias[items]
        return np.einsum("bf,bkf->bk", users_latent, self.item_factors[items]) + self.item_bias[items]

    def true_utility(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """Utilities for real users (indices into ``user_factors``); shapes as in ``affinity``."""
        return self.affinity(self.user_factors[users], items)


def weighted_als(
    confidence: sp.csr_matrix, factors: int, regularization: float, iterations: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Hu, Koren & Volinsky (2008): minimise ``sum c_ui (p_ui - x_u.y_i)^2 + reg (|X|^2 + |Y|^2)``.

    ``p_ui`` is 1 where ``confidence`` holds an entry (its value ``c_ui``) and 0 elsewhere with
    confidence 1. Each half-step solves every row's F X F normal equations exactly, batched.

    Returns:
        ``rows X F`` and ``columns X F`` factor matrices.
    """
    rng = np.random.default_rng(seed)
    rows, columns = confidence.shape
    x = INIT_SCALE * rng.standard_normal((rows, factors))
    y = INIT_SCALE * rng.standard_normal((columns, factors))
    transposed = confidence.T.tocsr()
    for _ in range(iterations):
        x = _solve_side(confidence, y, regularization)
        y = _solve_side(transposed, x, regularization)
    return x, y


def _solve_side(confidence: sp.csr_matrix, fixed: np.ndarray, regularization: float) -> np.ndarray:
    """Exact least squares of every row of ``confidence`` given the other side's factors.

    Row u solves ``(YtY + Yt (C_u - I) Y + reg I) x_u = Yt C_u p_u``. The middle term is a sparse
    product with each item's outer product ``y_i y_i^T`` (upper triangle only, it is symmetric), so
    no Python loop runs over rows.
    """
    factors = fixed.shape[1]
    upper_i, upper_j = np.triu_indices(factors)
    # float32 for the one heavy product: three times faster, and the systems are solved in float64
    outer = (fixed[:, upper_i] * fixed[:, upper_j]).astype(np.float32)  # columns X F(F+1)/2
    base = fixed.T @ fixed + regularization * np.eye(factors)
    extra = confidence.astype(np.float32)
    extra.data -= 1.0
    targets = confidence @ fixed
    lower = (upper_j * factors + upper_i)[upper_i != upper_j]  # mirrors of the strict upper triangle
    mirror = (upper_i * factors + upper_j)[upper_i != upper_j]
    solved = np.empty((confidence.shape[0], factors))
    for start in range(0, confidence.shape[0], ROWS_PER_BLOCK):
        block = slice(start, start + ROWS_PER_BLOCK)
        flat = np.zeros((min(ROWS_PER_BLOCK, confidence.shape[0] - start), factors * factors))
        flat[:, upper_i * factors + upper_j] = extra[block] @ outer
        flat[:, lower] = flat[:, mirror]
        systems = flat.reshape(-1, factors, factors) + base
        solved[block] = np.linalg.solve(systems, targets[block][:, :, None])[:, :, 0]
    return solved


def _confidence_matrix(frame: pd.DataFrame, num_users: int, width: int, alpha: float) -> sp.csr_matrix:
    """``users X (N+1)`` confidences; repeated (user, item) pairs add up, as repeated plays do."""
    ratings = frame["rating"].to_numpy(np.float64, na_value=np.nan)
    top = np.nanmax(ratings) if np.isfinite(ratings).any() else 1.0
    strength = np.where(np.isfinite(ratings), ratings / top, 1.0)
    matrix = sp.csr_matrix(
        (alpha * strength, (frame["user_idx"].to_numpy(np.int64), frame["item_idx"].to_numpy(np.int64))),
        shape=(num_users, width),
    )
    matrix.sum_duplicates()
    matrix.data += 1.0
    return matrix


def _standardise(users: np.ndarray, items: np.ndarray, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """Centre items over the catalogue and rescale each user to ``scale`` spread, exactly.

    Over real items, user u's scores ``x_u . y_i`` have mean ``x_u . mean(y)`` and variance
    ``x_u^T Cov(y) x_u``, so no ``U X N`` score matrix is ever built.
    """
    real = items[1:]
    mean = real.mean(axis=0)
    covariance = np.cov(real, rowvar=False, bias=True).reshape(items.shape[1], items.shape[1])
    spread = np.sqrt(np.maximum(np.einsum("uf,fg,ug->u", users, covariance, users), 0.0))
    centred = items - mean
    centred[0] = 0.0
    return scale * users / np.maximum(spread, MIN_SPREAD)[:, None], centred


def _item_quality(frame: pd.DataFrame, width: int) -> np.ndarray:
    """Standardised shrunk mean rating per item (0 for every item when the data has no ratings)."""
    rated = frame.dropna(subset=["rating"])
    quality = np.zeros(width)
    if rated.empty:
        return quality
    items = rated["item_idx"].to_numpy(np.int64)
    ratings = rated["rating"].to_numpy(np.float64)
    total = np.bincount(items, weights=ratings, minlength=width)
    count = np.bincount(items, minlength=width)
    shrunk = (total + RATING_SHRINKAGE * ratings.mean()) / (count + RATING_SHRINKAGE)
    spread = shrunk[1:].std()
    quality[1:] = (shrunk[1:] - shrunk[1:].mean()) / max(float(spread), MIN_SPREAD)
    return quality


def _genre_matrix(items: pd.DataFrame, width: int) -> np.ndarray:
    """``(N+1) X G`` unit-norm genre vectors (G >= 1 even when no item has a genre)."""
    names = sorted({g for genres in items["genres"] for g in genres})
    column = {g: i for i, g in enumerate(names)}
    matrix = np.zeros((width, max(len(names), 1)), dtype=np.float32)
    for idx, genres in zip(items["item_idx"], items["genres"], strict=True):
        matrix[idx, [column[g] for g in genres]] = 1.0
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return matrix / np.maximum(norms, 1.0)
