"""What a probe sees: the trained model, the data, a seeded sample of users, and cached rankings.

Scores are computed once per context and shared by the probes. Consumed items are masked with
the user's real history even when a probe scores a perturbed history, so "what changed in the
list" never mixes with "what the mask let through".
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Protocol

import numpy as np
import torch

from recsys.batches import make_batch
from recsys.candidate_api import Batch
from recsys.data.prepared import PreparedDataset
from recsys.evaluation import EvaluationResult, ItemCatalog, evaluate
from recsys.sequences import Stage, UserSequences

SCORE_CHUNK = 256


class RankingModel(Protocol):
    """What the probes use of a candidate's model (the contract of ``model.py``)."""

    def score(self, batch: Batch) -> torch.Tensor: ...

    def embed_items(self, ids: torch.Tensor) -> torch.Tensor: ...


def item_years(prepared: PreparedDataset) -> np.ndarray:
    """Release year per item index (``N+1``; NaN where unknown and for the padding id)."""
    years = np.full(prepared.num_items + 1, np.nan)
    items = prepared.items
    if "year" in items:
        known = items["year"].notna()
        years[items.loc[known, "item_idx"].to_numpy(np.int64)] = items.loc[known, "year"].to_numpy(np.float64)
    return years


def sample_users(sequences: UserSequences, stage: Stage, size: int, seed: int) -> np.ndarray:
    """A seeded sample of users that have a history and a target at ``stage`` (sorted)."""
    eligible = np.array(
        [u for u in range(sequences.num_users) if len(sequences.targets(u, stage)) and len(sequences.history(u, stage))]
    )
    rng = np.random.default_rng(seed)
    chosen = rng.choice(eligible, size=min(size, len(eligible)), replace=False) if len(eligible) else eligible
    return np.sort(chosen).astype(np.int64)


@dataclass
class DiagnosisContext:
    """Args:
    model: the trained candidate (``score(batch)``, ``embed_items(ids)``), in eval mode.
    users: the sampled users the per-user probes look at.
    years: release year per item index (NaN unknown).
    """

    model: RankingModel
    sequences: UserSequences
    catalog: ItemCatalog
    years: np.ndarray
    users: np.ndarray
    max_len: int = 200
    stage: Stage = "valid"
    seed: int = 0

    @property
    def num_items(self) -> int:
        return self.sequences.num_items

    def rng(self, salt: int = 0) -> np.random.Generator:
        """A fresh generator: a probe that draws from it gives the same numbers on every run."""
        return np.random.default_rng([self.seed, salt])

    @cached_property
    def histories(self) -> list[np.ndarray]:
        """The sampled users' inputs at ``stage`` (most recent ``max_len`` items, oldest first)."""
        return [self.sequences.history(int(u), self.stage)[-self.max_len :] for u in self.users]

    @cached_property
    def consumed(self) -> torch.Tensor:
        """``B X (N+1)``: True where the user already consumed the item (whole history)."""
        mask = torch.zeros(len(self.users), self.num_items + 1, dtype=torch.bool)
        for row, user in enumerate(self.users):
            mask[row, torch.from_numpy(self.sequences.history(int(user), self.stage))] = True
        return mask

    @cached_property
    def targets(self) -> np.ndarray:
        """Each sampled user's first held-out item at ``stage``."""
        return np.array([self.sequences.targets(int(u), self.stage)[0] for u in self.users], dtype=np.int64)

    @cached_property
    def scores(self) -> torch.Tensor:
        """``B X (N+1)`` scores of the sampled users' real histories (see :meth:`score_histories`)."""
        return self.score_histories(self.histories)

    @torch.no_grad()
    def score_histories(self, histories: list[np.ndarray]) -> torch.Tensor:
        """``B X (N+1)`` scores of the sampled users given ``histories``; padding at -inf, nothing else masked."""
        parts = []
        for start in range(0, len(self.users), SCORE_CHUNK):
            chunk = slice(start, start + SCORE_CHUNK)
            parts.append(self.model.score(make_batch(self.users[chunk], histories[chunk])).detach().float())
        scores = torch.cat(parts).clone()
        scores[:, 0] = -torch.inf
        return scores

    def top(self, k: int = 10, histories: list[np.ndarray] | None = None) -> torch.Tensor:
        """``B X k`` recommendations with consumed items masked by the real history, whatever was scored."""
        raw = self.scores if histories is None else self.score_histories(histories)
        scores = raw.masked_fill(self.consumed, -torch.inf)
        return torch.topk(scores, k, dim=1).indices

    @cached_property
    def evaluation(self) -> EvaluationResult:
        """The full-ranking evaluation of every user at ``stage`` (top-10 lists and per-user metrics)."""
        return evaluate(self.model.score, self.sequences, self.stage, self.catalog, max_len=self.max_len)
