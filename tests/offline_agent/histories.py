"""Training histories for tests: the trainer's epoch lines for a curve of validation scores."""

from __future__ import annotations

from collections.abc import Sequence

from offline_agent.records import Epoch


def history(scores: Sequence[float], seconds_per_epoch: float = 1.0) -> list[Epoch]:
    """One epoch per score, ``seconds_per_epoch`` apart, each naming the best epoch so far."""
    return [
        Epoch(epoch=i + 1, loss=1.0, steps=10, valid_ndcg10=score, valid_hr10=score,
              best_epoch=1 + max(range(i + 1), key=lambda j: scores[j]), seconds=seconds_per_epoch * (i + 1))
        for i, score in enumerate(scores)
    ]  # fmt: skip
