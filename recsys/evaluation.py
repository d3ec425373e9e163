"""Full-ranking evaluation per ../shared/PROTOCOL.md, and the metrics beyond accuracy.

Every item is ranked for every user; items in the user's input history (the whole of it, not only
the part the model saw) and the padding id 0 are masked out. HR@k is Recall@k with one positive;
NDCG@k = 1/log2(rank+2) for a hit at 0-based rank < k. With several targets (the random split),
recall and NDCG use the ideal DCG of min(k, #targets) hits.

Beyond accuracy, on the top-10 lists: catalogue coverage, novelty (mean self-information of the
recommended items), average recommended popularity against the users' own histories, Gini of
exposure, genre intra-list diversity, genre calibration KL (Steck 2018), NDCG@10 per segment.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from recsys.batches import make_batch
from recsys.candidate_api import Batch
from recsys.data.prepared import PreparedDataset
from recsys.sequences import Stage, UserSequences

Scorer = Callable[[Batch], torch.Tensor]
"""Scores ``B X (num_items + 1)`` for a batch of histories (column 0 is padding)."""

KS = (5, 10, 20)
LIST_SIZE = 10
CALIBRATION_ALPHA = 0.01
SEGMENTS = ("light", "medium", "heavy")
SCORING_CHUNK = 1024
SELECTION_METRIC = "ndcg@10"  # early stopping and the best epoch are chosen on validation by it


@dataclass(frozen=True)
class ItemCatalog:
    """What the beyond-accuracy metrics need to know of items: genres and training popularity.

    Args:
        genres: ``(N+1) X G`` multi-hot genre matrix (row 0 padding, all zeros).
        popularity: ``N+1`` training interaction counts.
    """

    genres: torch.Tensor
    popularity: torch.Tensor
    genre_names: tuple[str, ...] = ()

    @classmethod
    def build(cls, prepared: PreparedDataset, sequences: UserSequences) -> ItemCatalog:
        items = prepared.items.sort_values("item_idx")
        names = sorted({g for genres in items["genres"] for g in genres})
        column = {g: i for i, g in enumerate(names)}
        matrix = torch.zeros(prepared.num_items + 1, max(len(names), 1))
        for idx, genres in zip(items["item_idx"], items["genres"], strict=True):
            for genre in genres:
                matrix[idx, column[genre]] = 1.0
        popularity = torch.from_numpy(sequences.train_counts()).float()
        return cls(matrix, popularity, tuple(names))


@dataclass
class EvaluationResult:
    """Mean metrics, and the per-user values behind them (for segments and significance tests)."""

    metrics: dict[str, float]
    per_user: dict[str, np.ndarray] = field(repr=False)
    top_items: np.ndarray = field(repr=False)  # users X LIST_SIZE


def _history_pairs(sequences: UserSequences, users: np.ndarray, stage: Stage) -> tuple[torch.Tensor, torch.Tensor]:
    rows, items = [], []
    for row, user in enumerate(users):
        history = sequences.history(int(user), stage)
        rows.append(np.full(len(history), row))
        items.append(history)
    return torch.from_numpy(np.concatenate(rows)), torch.from_numpy(np.concatenate(items))


def _target_matrix(sequences: UserSequences, users: np.ndarray, stage: Stage, width: int) -> torch.Tensor:
    matrix = torch.zeros(len(users), width, dtype=torch.bool)
    for row, user in enumerate(users):
        matrix[row, torch.from_numpy(sequences.targets(int(user), stage))] = True
    return matrix


def _discounts(k: int) -> torch.Tensor:
    return 1.0 / torch.log2(torch.arange(k, dtype=torch.float64) + 2.0)


def accuracy_at_k(hits: torch.Tensor, n_targets: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-user HR, recall, NDCG and MRR at each k of ``KS``.

    Args:
        hits: ``B X max(KS)`` booleans: is the item at each rank a target.
        n_targets: ``B`` number of targets per user.
    """
    discounts = _discounts(hits.shape[1])
    out: dict[str, torch.Tensor] = {}
    hits_f = hits.double()
    first_hit = torch.where(hits.any(1), hits.double().argmax(1), torch.full_like(n_targets, hits.shape[1]))
    for k in KS:
        top = hits_f[:, :k]
        dcg = (top * discounts[:k]).sum(1)
        ideal = torch.cumsum(discounts[:k], 0)[(n_targets.clamp(1, k) - 1)]
        out[f"hr@{k}"] = (top.sum(1) > 0).double()
        out[f"recall@{k}"] = top.sum(1) / n_targets.clamp(min=1).clamp(max=k).double()
        out[f"ndcg@{k}"] = dcg / ideal
        out[f"mrr@{k}"] = torch.where(first_hit < k, 1.0 / (first_hit.double() + 1.0), torch.zeros_like(dcg))
    return out


def _genre_distribution(genres: torch.Tensor) -> torch.Tensor:
    """Each item's genres as a distribution (1/|genres| each); items without genres give zeros."""
    return genres / genres.sum(-1, keepdim=True).clamp(min=1.0)


def list_diversity(top: torch.Tensor, catalog: ItemCatalog) -> torch.Tensor:
    """Per-user intra-list diversity: mean pairwise genre Jaccard distance of the list. ``top``: B X K."""
    multi_hot = catalog.genres[top]  # B X K X G
    inter = multi_hot @ multi_hot.transpose(1, 2)
    sizes = multi_hot.sum(-1)
    union = sizes.unsqueeze(2) + sizes.unsqueeze(1) - inter
    distance = 1.0 - torch.where(union > 0, inter / union.clamp(min=1.0), torch.ones_like(inter))
    k = top.shape[1]
    off_diagonal = ~torch.eye(k, dtype=torch.bool)
    return (distance[:, off_diagonal].sum(1) / (k * (k - 1))).double()


def calibration_kl(
    history_rows: torch.Tensor, history_items: torch.Tensor, top: torch.Tensor, catalog: ItemCatalog
) -> torch.Tensor:
    """Per-user KL(p || q~) between the genre mix of the history and of the list (Steck 2018)."""
    per_item = _genre_distribution(catalog.genres)
    p = torch.zeros(top.shape[0], per_item.shape[1]).index_add_(0, history_rows, per_item[history_items])
    p = p / p.sum(1, keepdim=True).clamp(min=1e-12)
    q = per_item[top].sum(1)
    q = q / q.sum(1, keepdim=True).clamp(min=1e-12)
    q_smoothed = (1 - CALIBRATION_ALPHA) * q + CALIBRATION_ALPHA * p
    terms = torch.where(p > 0, p * torch.log(p / q_smoothed.clamp(min=1e-12)), torch.zeros_like(p))
    return terms.sum(1).double()


def gini(exposure: np.ndarray) -> float:
    """Gini coefficient of item exposure counts (0: every item shown equally; 1: one item only)."""
    values = np.sort(exposure.astype(np.float64))
    n = len(values)
    if n == 0 or values.sum() == 0:
        return 0.0
    ranks = np.arange(1, n + 1)
    return float(((2 * ranks - n - 1) * values).sum() / (n * values.sum()))


class IntegrityError(ValueError):
    """Ranked lists or metrics that no honest model and harness could have produced."""


@dataclass(frozen=True)
class RankedLists:
    """Each evaluated user's top-``k`` items for ``stage``, best first: all a model hands to the judge.

    Ranking (:func:`rank_lists`) needs only the users' input histories; scoring the lists
    (:func:`score_lists`) needs the held-out targets. The two can run in different processes, so
    candidate code never computes, sees or touches its own metrics.
    """

    stage: Stage
    users: np.ndarray  # int64, the evaluated users in increasing order
    top: np.ndarray  # int64, users X k item ids

    def to_json(self) -> dict[str, object]:
        return {"stage": self.stage, "users": self.users.tolist(), "top": self.top.tolist()}

    @classmethod
    def from_json(cls, data: dict[str, object]) -> RankedLists:
        """Lists received from another process, shape-checked (their content is checked by :func:`check_lists`)."""
        stage = data.get("stage")
        if stage not in ("valid", "test"):
            raise IntegrityError(f"unknown evaluation stage {stage!r}")
        try:
            users = np.asarray(data["users"], dtype=np.int64).reshape(-1)
            top = np.asarray(data["top"], dtype=np.int64)
        except (KeyError, TypeError, ValueError, OverflowError) as exc:
            raise IntegrityError(f"malformed ranked lists: {exc}") from exc
        if top.ndim != 2 or top.shape[0] != len(users):
            raise IntegrityError(f"ranked lists of shape {top.shape} for {len(users)} users")
        return cls(stage, users, top)


def evaluated_users(sequences: UserSequences, stage: Stage) -> np.ndarray:
    """The users a stage is judged on: those with a target in it and an input history."""
    users = range(sequences.num_users)
    return np.array(
        [u for u in users if len(sequences.targets(u, stage)) and len(sequences.history(u, stage))], np.int64
    )


def list_length(num_items: int) -> int:
    """How many items each ranked list holds: enough for every k of ``KS`` (fewer in tiny catalogues)."""
    return min(max(KS), num_items)


@torch.no_grad()
def rank_lists(
    scorer: Scorer,
    sequences: UserSequences,
    stage: Stage,
    users: np.ndarray,
    batch_size: int = 512,
    max_len: int = 200,
    by_length: bool = False,
) -> RankedLists:
    """Rank all items for ``users`` from their ``stage`` input histories; consumed items and the
    padding id are masked out. No target is read: this runs where the targets are absent.

    ``by_length`` scores users in batches of similar history length (less padding); the lists come
    back in the order of ``users`` either way."""
    width = sequences.num_items + 1
    k = list_length(sequences.num_items)
    users = np.asarray(users, dtype=np.int64)
    order = np.argsort(np.diff(sequences.offsets)[users], kind="stable") if by_length else np.arange(len(users))
    tops: list[torch.Tensor] = [torch.zeros(0, k, dtype=torch.int64)]
    for start in range(0, len(users), batch_size):
        chunk = users[order[start : start + batch_size]]
        histories = [sequences.history(int(u), stage)[-max_len:] for u in chunk]
        scores = scorer(make_batch(chunk, histories)).detach().float().clone()
        if scores.shape != (len(chunk), width):
            raise ValueError(f"the scorer returned shape {tuple(scores.shape)}, expected {(len(chunk), width)}")
        scores[:, 0] = -torch.inf
        rows, items = _history_pairs(sequences, chunk, stage)
        scores[rows, items] = -torch.inf
        tops.append(torch.topk(scores, k, dim=1).indices)
    top = np.empty((len(users), k), dtype=np.int64)
    top[order] = torch.cat(tops).numpy()
    return RankedLists(stage, users, top)


def check_lists(lists: RankedLists, sequences: UserSequences, expected_users: np.ndarray) -> None:
    """Refuse lists no honest ranking produces: other users, other lengths, ids outside the catalogue,
    an item twice in one list, or an item of the user's own input history (the ranking masks those)."""
    if not np.array_equal(lists.users, expected_users):
        raise IntegrityError(f"lists for {len(lists.users)} users, expected the {len(expected_users)} evaluated ones")
    k = list_length(sequences.num_items)
    if lists.top.shape != (len(expected_users), k):
        raise IntegrityError(f"lists of shape {lists.top.shape}, expected {(len(expected_users), k)}")
    if lists.top.size and (lists.top.min() < 1 or lists.top.max() > sequences.num_items):
        raise IntegrityError(f"lists hold item ids outside the catalogue 1..{sequences.num_items}")
    ordered = np.sort(lists.top, axis=1)
    if (ordered[:, 1:] == ordered[:, :-1]).any():
        raise IntegrityError("a list holds the same item twice")
    for row, user in enumerate(lists.users):
        if np.isin(lists.top[row], sequences.history(int(user), lists.stage)).any():
            raise IntegrityError(f"the list of user {int(user)} holds an item of their own input history")


LIST_AGREEMENT = 0.9
"""Least mean top-10 overlap between two rankings of the same model: batches of other shapes and
bfloat16 arithmetic can swap near-ties at the edge of a list, never a list's bulk."""


def list_agreement(first: np.ndarray, second: np.ndarray, k: int = LIST_SIZE) -> float:
    """Mean share of each row's top ``k`` items that both rankings hold (1: the same items)."""
    if len(first) == 0:
        return 1.0
    shared = [len(set(a[:k].tolist()) & set(b[:k].tolist())) / k for a, b in zip(first, second, strict=True)]
    return float(np.mean(shared))


UNIT_INTERVAL = ("hr@", "recall@", "ndcg@", "mrr@", "coverage@", "gini@", "ild@")


def check_metrics(metrics: dict[str, float]) -> None:
    """Every metric finite, and those defined on [0, 1] inside it (NaN allowed only for an empty segment)."""
    for name, value in metrics.items():
        if name.startswith("ndcg@10_") and np.isnan(value):
            continue
        if not np.isfinite(value):
            raise IntegrityError(f"metric {name} is {value}")
        if name.startswith(UNIT_INTERVAL) and not 0.0 <= value <= 1.0:
            raise IntegrityError(f"metric {name} = {value} is outside [0, 1]")


def score_lists(lists: RankedLists, sequences: UserSequences, catalog: ItemCatalog) -> EvaluationResult:
    """The full metric set of ``lists`` against the held-out targets of their stage; trusted code only.

    ``sequences`` hold the targets. The lists are checked first (:func:`check_lists`), the metrics after.
    """
    stage = lists.stage
    check_lists(lists, sequences, evaluated_users(sequences, stage))
    width = sequences.num_items + 1
    per_user: dict[str, list[torch.Tensor]] = {}
    tops = torch.from_numpy(lists.top)
    for start in range(0, len(lists.users), SCORING_CHUNK):
        users = lists.users[start : start + SCORING_CHUNK]
        top = tops[start : start + SCORING_CHUNK]
        rows, items = _history_pairs(sequences, users, stage)
        targets = _target_matrix(sequences, users, stage, width)
        hits = torch.nn.functional.pad(targets.gather(1, top), (0, max(KS) - top.shape[1]))  # tiny catalogues
        values = accuracy_at_k(hits, targets.sum(1))
        top_list = top[:, :LIST_SIZE]
        values["ild@10"] = list_diversity(top_list, catalog)
        values["calibration_kl@10"] = calibration_kl(rows, items, top_list, catalog)
        history_popularity = torch.zeros(len(users)).index_add_(0, rows, catalog.popularity[items])
        history_popularity /= torch.bincount(rows, minlength=len(users)).clamp(min=1)
        values["popularity@10"] = catalog.popularity[top_list].mean(1).double()
        values["history_popularity"] = history_popularity.double()
        for name, value in values.items():
            per_user.setdefault(name, []).append(value)
    arrays = {name: torch.cat(parts).numpy() for name, parts in per_user.items()}
    top_items = lists.top[:, :LIST_SIZE]
    metrics = _summarise(arrays, top_items, lists.users, sequences, catalog)
    check_metrics(metrics)
    return EvaluationResult(metrics, arrays, top_items)


def evaluate(
    scorer: Scorer,
    sequences: UserSequences,
    stage: Stage,
    catalog: ItemCatalog,
    batch_size: int = 512,
    max_len: int = 200,
) -> EvaluationResult:
    """Rank and score in one process: for trusted scorers (baselines, a user's own ``evorec train``)."""
    lists = rank_lists(scorer, sequences, stage, evaluated_users(sequences, stage), batch_size, max_len)
    return score_lists(lists, sequences, catalog)


def _summarise(
    arrays: dict[str, np.ndarray],
    top_items: np.ndarray,
    users: np.ndarray,
    sequences: UserSequences,
    catalog: ItemCatalog,
) -> dict[str, float]:
    metrics = {name: float(values.mean()) for name, values in arrays.items()}
    popularity = catalog.popularity.numpy()
    exposure = np.bincount(top_items.ravel(), minlength=sequences.num_items + 1)[1:]
    share = np.clip(popularity[top_items] / max(sequences.num_users, 1), 1e-12, None)
    metrics["coverage@10"] = float((exposure > 0).mean())
    metrics["gini@10"] = gini(exposure)
    metrics["novelty@10"] = float((-np.log2(share)).mean())
    metrics["popularity_lift@10"] = metrics["popularity@10"] / max(metrics["history_popularity"], 1e-12)
    lengths = sequences.train_lengths()
    edges = np.quantile(lengths, [1 / 3, 2 / 3])
    segment = np.digitize(lengths[users], edges, right=True)
    for code, name in enumerate(SEGMENTS):
        chosen = segment == code
        metrics[f"ndcg@10_{name}"] = float(arrays["ndcg@10"][chosen].mean()) if chosen.any() else float("nan")
    return metrics
