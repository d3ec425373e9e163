"""The simulated users' true behaviour: what they pick next, from long-term taste and what they just consumed.

A world model that predicts real next choices at least as well as the candidates it judges, and
is none of them, so it cannot simply prefer its twin: a multinomial logit over the catalogue that
blends model families unlike the candidates' (SASRec transformers, MF-BPR, EASE, popularity):

- ``transition`` and ``log_transition``: a linear next-item regression on the last items
  (:class:`~ab_testing.transitions.Transitions`): sequential dynamics and interest drift;
- ``taste``: weighted ALS on all of a user's items plus item quality (shrunk mean rating): the
  long-term taste, which the simulated users' noise perturbs;
- ``log_popularity``: how many people consume the item.

The blend weights (their overall scale is the inverse choice temperature) are fitted by maximum
likelihood of the real validation events, with every part fitted on the training split only; then
the parts are refitted on the events the simulated users remember (``last_split``: every split by
default, so the users' taste includes the held-out events the candidates never saw, or all but
the test split to measure how well the users predict it).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import pandas as pd
import scipy.sparse as sp
from scipy.optimize import minimize, minimize_scalar
from scipy.special import logsumexp

from ab_testing.transitions import Transitions
from recsys.data.prepared import PreparedDataset
from recsys.sequences import SPLIT_CODES, UserSequences

ROWS_PER_BLOCK = 2048  # rows solved together: bounds memory to a block X F X F of normal equations
INIT_SCALE = 0.01  # standard deviation of the random initial factors
RATING_SHRINKAGE = 10.0  # pseudo-ratings at the global mean in an item's shrunk mean rating
MIN_SPREAD = 1e-8  # guards the standardisation of degenerate (all-zero) users
CHOICE_FEATURES = ("transition", "log_transition", "taste", "log_popularity")
TRANSITION_FLOOR = 1e-3  # transition scores below this count as this in log_transition
# Without enough validation events to fit them on: about what ml-latest-small (7.5, 1.64, 0.28, -0.37) and ML-1M
# (20.5, 1.63, 0.33, -0.35) calibrate to; a few dozen users' events overfit the blend (popularity's sign flips).
DEFAULT_CHOICE_WEIGHTS = (10.0, 1.6, 0.3, -0.35)
MIN_CALIBRATION_USERS = 200
CALIBRATION_CELLS = 20_000_000  # users X items of features held at once while fitting the blend
CHUNK = 1024  # users scored together over the catalogue
LIST_SIZE = 10  # the slate length whose ranking the blend is calibrated for (NDCG@10)


@dataclass(frozen=True)
class FitSettings:
    """How the world model is fitted: its taste, the events the users remember, and the blend.

    Args:
        factors: latent dimension F of the taste.
        regularization: L2 penalty of both factor matrices.
        iterations: alternating rounds (users then items).
        seed: seeds the initial factors; the fit is otherwise deterministic.
        alpha: confidence ``1 + alpha * rating / max rating`` (``1 + alpha`` without ratings).
        quality_weight: logits of one standard deviation of an item's shrunk mean rating.
        utility_scale: standard deviation of a user's factor utilities over the catalogue.
        last_split: the events the users remember: 2 every split, 1 all but test, 0 train only.
        choice_weights: blend weights calibrated before (none: calibrate them on the validation split).
    """

    factors: int = 32
    regularization: float = 0.1
    iterations: int = 15
    seed: int = 0
    alpha: float = 10.0
    quality_weight: float = 0.5
    utility_scale: float = 1.0
    last_split: int = 2
    choice_weights: np.ndarray | None = None


@dataclass(frozen=True)
class GroundTruth:
    """The simulated users' choice model and what the simulation needs to know of items.

    The static taste is ``user_factors[u] @ item_factors[i] + item_bias[i]`` (``affinity``). Its
    factors are scaled so that, for every real user, the factor part has mean 0 and standard
    deviation ``utility_scale`` over the catalogue. A choice blends it with the next-item
    regression on the user's recent items (``choice_logits``); ``utility`` turns those logits into
    log-odds against an item picked at random, so 0 is "as likely as a random item".

    Args:
        user_factors: ``U X F`` real users' taste vectors.
        item_factors: ``(N+1) X F`` item vectors, centred over the catalogue; row 0 (padding) is 0.
        item_bias: ``N+1`` item quality in logits (standardised shrunk mean rating), 0 at row 0.
        item_genres: ``(N+1) X G`` genre vectors with unit L2 norm (zeros for no genre), so a dot
            product is the cosine similarity of two items' genres.
        item_popularity: ``N+1`` interaction counts over the fitted events.
        transitions: the next-item regression.
        choice_weights: one weight per ``CHOICE_FEATURES``.
        user_log_normalisers: ``U`` each real user's ``log_normaliser`` after their last fitted
            event: the level of "a random item" for the simulated users drawn from them (kept
            while they simulate, so a visit costs no pass over the catalogue).
    """

    user_factors: np.ndarray
    item_factors: np.ndarray
    item_bias: np.ndarray
    item_genres: np.ndarray
    item_popularity: np.ndarray
    transitions: Transitions
    choice_weights: np.ndarray
    user_log_normalisers: np.ndarray

    @property
    def num_users(self) -> int:
        return int(self.user_factors.shape[0])

    @property
    def num_items(self) -> int:
        """Real items; indices run from 1 to ``num_items`` (0 pads)."""
        return int(self.item_factors.shape[0]) - 1

    @property
    def window(self) -> int:
        """Recent items a choice looks at."""
        return self.transitions.window

    @classmethod
    def fit(cls, prepared: PreparedDataset, settings: FitSettings | None = None) -> GroundTruth:
        """Fit the world model on ``prepared`` (see the module): calibrate on valid, refit on the events the users
        remember.

        Example::

            truth = GroundTruth.fit(prepared, FitSettings(factors=16, iterations=5))
            truth.true_utility(np.array([0, 1]), np.array([[3, 4], [5, 6]]))  # 2 X 2
        """
        sequences = UserSequences.from_prepared(prepared)
        return cls.from_sequences(sequences, _genre_matrix(prepared.items, prepared.num_items + 1), settings)

    @classmethod
    def from_sequences(
        cls, sequences: UserSequences, item_genres: np.ndarray, settings: FitSettings | None = None
    ) -> GroundTruth:
        """``fit`` on sequences and a ``(N+1) X G`` genre matrix (``fit`` reads both from a prepared dataset)."""
        settings = settings or FitSettings()
        weights = settings.choice_weights
        if weights is None:
            calibration = cls.fit_parts(sequences, item_genres, replace(settings, last_split=SPLIT_CODES["train"]))
            weights = fit_choice_weights(calibration, sequences)
        truth = replace(cls.fit_parts(sequences, item_genres, settings), choice_weights=weights)
        recent = recent_items(sequences, truth.window, settings.last_split)
        return replace(truth, user_log_normalisers=truth.log_normaliser(truth.user_factors, recent))

    @classmethod
    def fit_parts(cls, sequences: UserSequences, item_genres: np.ndarray, settings: FitSettings) -> GroundTruth:
        """Every part fitted on the events of splits ``<= settings.last_split``, blended with the default weights
        (``settings.choice_weights`` is not read)."""
        keep = sequences.split <= settings.last_split
        owners = np.repeat(np.arange(sequences.num_users), np.diff(sequences.offsets))[keep]
        items, ratings = sequences.items[keep], sequences.ratings[keep]
        width = sequences.num_items + 1
        confidence = _confidence_matrix(owners, items, ratings, sequences.num_users, width, settings.alpha)
        users, item_vectors = weighted_als(
            confidence, settings.factors, settings.regularization, settings.iterations, settings.seed
        )
        user_factors, item_factors = _standardise(users, item_vectors, settings.utility_scale)
        return cls(
            user_factors=user_factors.astype(np.float32),
            item_factors=item_factors.astype(np.float32),
            item_bias=(settings.quality_weight * _item_quality(items, ratings, width)).astype(np.float32),
            item_genres=item_genres,
            item_popularity=np.bincount(items, minlength=width),
            transitions=Transitions.fit(sequences, settings.last_split),
            choice_weights=np.array(DEFAULT_CHOICE_WEIGHTS),
            user_log_normalisers=np.zeros(sequences.num_users),
        )

    def affinity(self, users_latent: np.ndarray, items: np.ndarray) -> np.ndarray:
        """Static taste of items for users given by their latent vectors (simulated users' tastes).

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
        """Static taste for real users (indices into ``user_factors``); shapes as in ``affinity``."""
        return self.affinity(self.user_factors[users], items)

    def features(self, users_latent: np.ndarray, recent: np.ndarray, items: np.ndarray | None = None) -> np.ndarray:
        """``B X K X len(CHOICE_FEATURES)`` (``B X (N+1) X ...`` for the whole catalogue when ``items`` is None).

        ``recent`` is ``B X W``: each user's last items, newest last, 0 padding short histories.
        """
        transition = self.transitions.scores(recent, items)
        shared = np.arange(self.num_items + 1) if items is None else items
        popularity = np.log1p(self.item_popularity[shared]).astype(np.float32)
        return np.stack(
            [
                transition,
                np.log(np.maximum(transition, TRANSITION_FLOOR)),
                self.affinity(users_latent, shared),
                np.broadcast_to(popularity, transition.shape),
            ],
            axis=-1,
        )

    def choice_logits(
        self, users_latent: np.ndarray, recent: np.ndarray, items: np.ndarray | None = None
    ) -> np.ndarray:
        """Unnormalised log-probabilities of choosing ``items`` (``features`` times the blend weights)."""
        weights = self.choice_weights.astype(np.float32)
        if items is not None:
            return self.features(users_latent, recent, items) @ weights
        out = np.empty((len(recent), self.num_items + 1), dtype=np.float32)
        for start in range(0, len(recent), CHUNK):
            block = slice(start, start + CHUNK)
            out[block] = self.features(users_latent[block], recent[block]) @ weights
        return out

    def log_normaliser(self, users_latent: np.ndarray, recent: np.ndarray) -> np.ndarray:
        """``B`` log-sum-exp of the choice logits over the real items, minus log N (the random item's level)."""
        out = np.empty(len(recent))
        for start in range(0, len(recent), CHUNK):
            block = slice(start, start + CHUNK)
            logits = self.choice_logits(users_latent[block], recent[block])[:, 1:]
            out[block] = logsumexp(logits, axis=1) - np.log(self.num_items)
        return out

    def utility(
        self, users_latent: np.ndarray, recent: np.ndarray, items: np.ndarray, log_normaliser: np.ndarray
    ) -> np.ndarray:
        """``B X K`` log-odds of choosing each item against an item picked at random from the catalogue."""
        return self.choice_logits(users_latent, recent, items) - log_normaliser[:, None]


def recent_items(sequences: UserSequences, window: int, last_split: int = 2) -> np.ndarray:
    """``U X window`` each real user's last items among the splits ``<= last_split``, newest last (0 pads)."""
    keep = sequences.split <= last_split
    counts = np.bincount(np.repeat(np.arange(sequences.num_users), np.diff(sequences.offsets))[keep],
                         minlength=sequences.num_users)  # fmt: skip
    items = sequences.items[keep]
    ends = np.cumsum(counts)
    positions = ends[:, None] - window + np.arange(window)
    valid = positions >= (ends - counts)[:, None]
    return (
        np.where(valid, items[np.clip(positions, 0, max(len(items) - 1, 0))], 0)
        if len(items)
        else np.zeros((sequences.num_users, window), dtype=np.int64)
    )


def next_item_problem(
    sequences: UserSequences, stage: str, window: int, limit: int | None = None
) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    """Real users with a ``stage`` event, their first such item, and what they had consumed before it.

    Returns ``(users, targets, histories)``: the users (at most ``limit``, evenly spread), each
    user's first ``stage`` item, and each user's items of the earlier splits (the ones a model may
    see, as in the offline evaluation).
    """
    code = SPLIT_CODES[stage]
    users, targets, histories = [], [], []
    for user in range(sequences.num_users):
        items, split = sequences.events(user)
        target = np.flatnonzero(split == code)
        history = items[split < code]
        if len(target) and len(history):
            users.append(user)
            targets.append(int(items[target[0]]))
            histories.append(history)
    chosen = np.arange(len(users))
    if limit is not None and len(users) > limit:
        chosen = np.linspace(0, len(users) - 1, limit).astype(np.int64)
    return (
        np.array(users, dtype=np.int64)[chosen],
        np.array(targets, dtype=np.int64)[chosen],
        [histories[i] for i in chosen.tolist()],
    )


def _recent_of(histories: list[np.ndarray], window: int) -> np.ndarray:
    recent = np.zeros((len(histories), window), dtype=np.int64)
    for row, history in enumerate(histories):
        tail = history[-window:]
        recent[row, window - len(tail) :] = tail
    return recent


def fit_choice_weights(parts: GroundTruth, sequences: UserSequences) -> np.ndarray:
    """Blend weights fitted on the real validation events, each user choosing among the items they had not consumed.

    ``parts`` is fitted on the training split. Two steps: the direction of the weights (the
    log-transition weight held at 1) maximises the validation NDCG@10 of the blend, by Powell's
    derivative-free search from equal weights, so the users rank next items as well as possible;
    then their scale (the inverse choice temperature) maximises the likelihood of the validation
    choices, so the users are as sure of their choices as real ones are. With fewer than
    ``MIN_CALIBRATION_USERS`` validation events the default weights stay.
    """
    limit = max(CALIBRATION_CELLS // (parts.num_items + 1), 1)
    users, targets, histories = next_item_problem(sequences, "valid", parts.window, limit)
    if len(users) < MIN_CALIBRATION_USERS:
        return parts.choice_weights
    features = parts.features(parts.user_factors[users], _recent_of(histories, parts.window))
    features[:, 0] = np.nan
    features[np.repeat(np.arange(len(users)), [len(h) for h in histories]), np.concatenate(histories)] = np.nan
    rows = np.arange(len(users))
    chosen = features[rows, targets]
    log_transition = CHOICE_FEATURES.index("log_transition")

    def direction(free: np.ndarray) -> np.ndarray:
        return np.insert(free, log_transition, 1.0).astype(np.float32)

    def negative_ndcg(free: np.ndarray) -> float:
        logits = np.nan_to_num(features @ direction(free), nan=-np.inf)
        rank = (logits > logits[rows, targets][:, None]).sum(axis=1)
        return -float(np.mean(np.where(rank < LIST_SIZE, 1.0 / np.log2(rank + 2.0), 0.0)))

    start = np.delete(np.ones(len(CHOICE_FEATURES)), log_transition) * 0.1
    best = direction(minimize(negative_ndcg, start, method="Powell", options={"xtol": 1e-2, "ftol": 1e-5}).x)

    def negative_likelihood(scale: float) -> float:
        logits = np.nan_to_num(features @ (scale * best), nan=-np.inf)
        return float(np.mean(logsumexp(logits, axis=1) - chosen @ (scale * best)))

    scale = minimize_scalar(negative_likelihood, bounds=(1e-3, 100.0), method="bounded").x
    return np.asarray(float(scale) * best, dtype=np.float64)


def next_item_ndcg(truth: GroundTruth, sequences: UserSequences, stage: str = "test", k: int = 10) -> float:
    """NDCG@k of the users' own choice probabilities on the real ``stage`` events (the offline protocol:
    one target per user, every earlier item masked), i.e. how well the simulated users predict real ones."""
    users, targets, histories = next_item_problem(sequences, stage, truth.window)
    total = 0.0
    for start in range(0, len(users), CHUNK):
        block = slice(start, start + CHUNK)
        part = histories[block]
        logits = truth.choice_logits(truth.user_factors[users[block]], _recent_of(part, truth.window))
        logits[:, 0] = -np.inf
        logits[np.repeat(np.arange(len(part)), [len(h) for h in part]), np.concatenate(part)] = -np.inf
        target = logits[np.arange(len(part)), targets[block]]
        rank = (logits > target[:, None]).sum(axis=1)
        total += float(np.where(rank < k, 1.0 / np.log2(rank + 2.0), 0.0).sum())
    return total / max(len(users), 1)


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


def _confidence_matrix(
    owners: np.ndarray, items: np.ndarray, ratings: np.ndarray, num_users: int, width: int, alpha: float
) -> sp.csr_matrix:
    """``users X (N+1)`` confidences; repeated (user, item) pairs add up, as repeated plays do."""
    ratings = ratings.astype(np.float64)
    top = np.nanmax(ratings) if np.isfinite(ratings).any() else 1.0
    strength = np.where(np.isfinite(ratings), ratings / top, 1.0)
    matrix = sp.csr_matrix((alpha * strength, (owners, items)), shape=(num_users, width))
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


def _item_quality(items: np.ndarray, ratings: np.ndarray, width: int) -> np.ndarray:
    """Standardised shrunk mean rating per item (0 for every item when the data has no ratings)."""
    rated = np.isfinite(ratings)
    quality = np.zeros(width)
    if not rated.any():
        return quality
    items, ratings = items[rated], ratings[rated].astype(np.float64)
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
