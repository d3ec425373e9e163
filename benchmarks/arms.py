"""What the search benchmarks ask of an arm (evorec, or an Optuna study), and what an arm's result is."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from recsys.evaluation import SELECTION_METRIC


@dataclass(frozen=True)
class TopRung:
    """An arm's best at the highest rung it reached: its validation metrics (what selected it) and its test
    metrics (computed with them, never used to select)."""

    rung: int
    epochs: int
    valid: dict[str, float]
    test: dict[str, float]

    def to_json(self) -> dict[str, Any]:
        return {"rung": self.rung, "epochs": self.epochs, "valid_ndcg10": round(self.valid[SELECTION_METRIC], 4),
                "test_ndcg10": round(self.test[SELECTION_METRIC], 4)}  # fmt: skip


class Arm(Protocol):
    """One searcher, advanced one step (a generation or a rung evaluation) at a time, resumable from its folder."""

    def cpu_seconds(self) -> float: ...

    def evaluations(self) -> int: ...

    def step(self) -> None: ...

    def best(self) -> TopRung | None: ...

    def finalists(self) -> list[dict[str, str]]: ...

    def proxy_fidelity(self) -> list[dict[str, Any]]: ...
