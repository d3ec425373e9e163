"""Scoring every item for evaluation on the trainer's device and precision, with exact float32 ranking.

Under bfloat16 the candidate's ``score`` would return bfloat16 scores: 8 bits of mantissa, so many
of 3,400 items tie and the ranking (hence NDCG) depends on how ties fall. The model's body (its
``forward``) runs under autocast, and the final products of the last state with every item's
embedding run in float32. That rests on the usual form ``score = last state . item embedding``,
which is checked against the candidate's own ``score`` on the first batch; a candidate that scores
otherwise is scored by its own ``score`` in float32.
"""

from __future__ import annotations

import logging

import torch
from torch import nn

from recsys.candidate_api import Batch
from recsys.precision import Precision

log = logging.getLogger(__name__)

AGREEMENT = 0.05
"""Largest mean gap, relative to the scores' spread, between the two forms on the first batch."""


class Scorer:
    """``scorer(batch) -> B X (N+1)`` float32 scores on the CPU, for :func:`recsys.evaluation.evaluate`."""

    def __init__(self, model: nn.Module, precision: Precision, num_items: int) -> None:
        self.model = model
        self.precision = precision
        self.num_items = num_items
        self.items: torch.Tensor | None = None  # float32 item embeddings, computed once
        self.dot_product: bool | None = None  # does score() have the usual form (checked once)

    @torch.no_grad()
    def __call__(self, batch: Batch) -> torch.Tensor:
        batch = batch.to(self.precision.device)
        if not self.precision.is_mixed or self.dot_product is False:
            return self.model.score(batch).float()  # type: ignore[operator]
        if self.items is None:
            ids = torch.arange(self.num_items + 1, device=self.precision.device)
            self.items = self.model.embed_items(ids).float()  # type: ignore[operator]
        with self.precision.autocast():
            states = self.model(batch)
        last = states[torch.arange(states.shape[0], device=states.device), batch.lengths - 1].float()
        scores = last @ self.items.T
        if self.dot_product is None:
            exact = self.model.score(batch).float()  # type: ignore[operator]
            same_shape = exact.shape == scores.shape
            gap = float((scores - exact).abs().mean() / exact.std().clamp(min=1e-12)) if same_shape else torch.inf
            self.dot_product = gap <= AGREEMENT
            if not self.dot_product:
                log.info("score() is not last state . item embedding (gap %.3f): scoring in float32", gap)
                return exact
        return scores
