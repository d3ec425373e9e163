"""The held-out targets and who may judge with them.

A model is judged on ranked lists (:class:`recsys.evaluation.RankedLists`). Trusted code holds the
validation and test targets in a :class:`Judge` and computes every metric; candidate code only
ranks. Where the candidate is trusted (a user's own ``evorec train``, the baselines) the judge sits
in the same process (:class:`LocalHeldOut`); for generated code it sits in the evaluator's process
and the sandboxed trainer talks to it over a pipe (:class:`HeldOutClient`), with a view of the data
in which the held-out targets are absent.

The order of a run is fixed, so lists cannot be fitted to targets they were shown:

1. ``score`` of validation lists, once per epoch (early stopping uses the replies);
2. ``final``: the kept model's validation lists of a sample of users, which must be those of its
   best epoch (whose metrics become the run's validation metrics);
3. ``test_inputs``: only now the test histories (train and validation items) are handed out;
4. ``score`` of the test lists, once.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from recsys.channel import CHANNEL_ENV, read_message, write_message
from recsys.evaluation import (
    LIST_AGREEMENT,
    SELECTION_METRIC,
    IntegrityError,
    ItemCatalog,
    RankedLists,
    check_lists,
    evaluated_users,
    list_agreement,
    score_lists,
)
from recsys.sequences import Stage, UserSequences

FINAL_USERS = 256


class HeldOut(Protocol):
    """What the trainer asks of whoever holds the targets."""

    def users(self, stage: Stage) -> np.ndarray: ...

    def score(self, lists: RankedLists) -> dict[str, float]: ...

    def final_users(self) -> np.ndarray: ...

    def final(self, lists: RankedLists) -> dict[str, float]: ...

    def test_inputs(self) -> UserSequences: ...

    def resumed(self, epochs: int, best_epoch: int, best_valid: dict[str, float]) -> None: ...


SAVED_EPOCH = "saved_epoch.json"
"""Beside a training checkpoint, written last: the epoch and best epoch that ``last.pt`` and ``best.pt`` hold
once both are whole. A run killed at its wall limit keeps its checkpoint only where this matches the epochs
the judge recorded (see ``offline_agent.evaluator``)."""


@dataclass
class Judge:
    """Trusted: holds the full sequences, scores lists in the fixed order, and keeps its own record.

    ``history`` are the validation metrics of each epoch (those of earlier invocations of a resumed
    training first); ``best_epoch`` is chosen from them, never from what the trainer claims.
    ``best_sample`` are the best epoch's lists of the first :data:`FINAL_USERS` evaluated users: the
    kept model must rank them again the same way. ``trusted`` (an in-process judge of trusted code)
    takes a resumed trainer's record as its own.
    """

    sequences: UserSequences
    catalog: ItemCatalog
    history: list[dict[str, float]] = field(default_factory=list)
    final_valid: dict[str, float] | None = None
    test: dict[str, float] | None = None
    test_lists: RankedLists | None = None
    best_sample: np.ndarray | None = None
    trusted: bool = False
    violation: str | None = None
    _revealed: bool = False

    @property
    def best_epoch(self) -> int | None:
        """The first epoch (from 1) with the highest validation ``ndcg@10``; None before any."""
        if not self.history:
            return None
        scores = [h[SELECTION_METRIC] for h in self.history]
        return scores.index(max(scores)) + 1

    def users(self, stage: Stage) -> np.ndarray:
        if stage == "test" and not self._revealed:
            raise IntegrityError("the test users are handed out after the final validation lists")
        return evaluated_users(self.sequences, stage)

    def score(self, lists: RankedLists) -> dict[str, float]:
        if lists.stage == "valid":
            if self.final_valid is not None:
                raise IntegrityError("validation lists after the final ones are not scored")
            metrics = score_lists(lists, self.sequences, self.catalog).metrics
            best = self.best_epoch
            if best is None or metrics[SELECTION_METRIC] > self.history[best - 1][SELECTION_METRIC]:
                self.best_sample = lists.top[:FINAL_USERS].copy()
            self.history.append(metrics)
            return metrics
        if not self._revealed:
            raise IntegrityError("test lists before the test inputs were handed out")
        if self.test is not None:
            raise IntegrityError("the test lists are scored once")
        self.test = score_lists(lists, self.sequences, self.catalog).metrics
        self.test_lists = lists
        return self.test

    def final_users(self) -> np.ndarray:
        """The users whose validation lists the kept model hands in again (a sample: one more full
        ranking per evaluation would cost as much as an epoch's validation)."""
        return evaluated_users(self.sequences, "valid")[:FINAL_USERS]

    def final(self, lists: RankedLists) -> dict[str, float]:
        """The kept model's lists for :meth:`final_users`: they must be its best epoch's (up to near-ties,
        :data:`~recsys.evaluation.LIST_AGREEMENT`). The run's validation metrics are those the judge
        recorded for that epoch."""
        if lists.stage != "valid" or self.final_valid is not None:
            raise IntegrityError("the final lists are the validation lists of the kept model, sent once")
        best = self.best_epoch
        if best is None:
            raise IntegrityError("final lists before any epoch was scored")
        check_lists(lists, self.sequences, self.final_users())
        if self.best_sample is None and not self.trusted:
            raise IntegrityError("the judge holds no lists of the best epoch to check the kept model against")
        if self.best_sample is not None and list_agreement(lists.top, self.best_sample) < LIST_AGREEMENT:
            raise IntegrityError(
                f"the kept model ranks otherwise than its best epoch ({best}) did: the lists do not come from the "
                "model it kept"
            )
        self.final_valid = self.history[best - 1]
        return self.final_valid

    def test_inputs(self) -> UserSequences:
        """The histories that predict the test targets, with the targets themselves removed."""
        if self.final_valid is None:
            raise IntegrityError("the test inputs are handed out after the final validation lists")
        self._revealed = True
        return self.sequences.without_stage("test")

    def resumed(self, epochs: int, best_epoch: int, best_valid: dict[str, float]) -> None:
        """A trainer resumed from a checkpoint after ``epochs``: the judge's own record must hold exactly
        those epochs (a checkpoint of an unjudged training is refused), and the same best epoch."""
        if len(self.history) != epochs or self.best_epoch != (best_epoch or None):
            raise IntegrityError(
                f"the checkpoint claims {epochs} epochs (best {best_epoch}); the judge recorded {len(self.history)} "
                f"(best {self.best_epoch})"
            )

    def handle(self, message: dict[str, Any]) -> dict[str, Any]:
        """One request of the sandboxed trainer; a refusal is recorded and ends the judging."""
        if self.violation is not None:
            return {"error": self.violation}
        try:
            operation = message.get("op")
            if operation == "users":
                return {"users": self.users(_stage(message.get("stage"))).tolist()}
            if operation == "final_users":
                return {"users": self.final_users().tolist()}
            if operation in ("score", "final"):
                lists = RankedLists.from_json(message)
                return {"metrics": self.score(lists) if operation == "score" else self.final(lists)}
            if operation == "test_inputs":
                return _sequences_json(self.test_inputs())
            if operation == "resumed":
                self.resumed(int(message["epochs"]), int(message["best_epoch"]), {})
                return {}
            raise IntegrityError(f"unknown request {operation!r}")
        except (IntegrityError, KeyError, TypeError, ValueError) as exc:
            self.violation = str(exc) if isinstance(exc, IntegrityError) else f"malformed request: {exc!r}"
            return {"error": self.violation}


def _stage(value: Any) -> Stage:
    if value not in ("valid", "test"):
        raise IntegrityError(f"unknown evaluation stage {value!r}")
    return value


def _sequences_json(sequences: UserSequences) -> dict[str, Any]:
    return {
        "num_users": sequences.num_users,
        "num_items": sequences.num_items,
        "items": sequences.items.tolist(),
        "split": sequences.split.tolist(),
        "offsets": sequences.offsets.tolist(),
    }


def _sequences_from_json(data: dict[str, Any]) -> UserSequences:
    items = np.asarray(data["items"], dtype=np.int64)
    return UserSequences(
        int(data["num_users"]),
        int(data["num_items"]),
        items,
        np.asarray(data["split"], dtype=np.int8),
        np.full(len(items), np.nan, dtype=np.float32),
        np.asarray(data["offsets"], dtype=np.int64),
    )


class LocalHeldOut:
    """A judge in this process: for trusted code only (it holds the targets in reach of the model)."""

    def __init__(self, sequences: UserSequences, catalog: ItemCatalog) -> None:
        self.judge = Judge(sequences, catalog, trusted=True)

    def users(self, stage: Stage) -> np.ndarray:
        return self.judge.users(stage)

    def score(self, lists: RankedLists) -> dict[str, float]:
        return self.judge.score(lists)

    def final_users(self) -> np.ndarray:
        return self.judge.final_users()

    def final(self, lists: RankedLists) -> dict[str, float]:
        return self.judge.final(lists)

    def test_inputs(self) -> UserSequences:
        return self.judge.test_inputs()

    def resumed(self, epochs: int, best_epoch: int, best_valid: dict[str, float]) -> None:
        """In this process the trainer's checkpoint is trusted: its record becomes the judge's."""
        self.judge.history = [
            best_valid if epoch == best_epoch else {SELECTION_METRIC: -math.inf} for epoch in range(1, epochs + 1)
        ]


class HeldOutClient:
    """The sandboxed trainer's end: every question about held-out data goes to the judge outside."""

    def __init__(self, read_fd: int, write_fd: int) -> None:
        self.read_fd, self.write_fd = read_fd, write_fd

    @classmethod
    def from_environment(cls) -> HeldOutClient:
        read_fd, write_fd = (int(fd) for fd in os.environ[CHANNEL_ENV].split(","))
        return cls(read_fd, write_fd)

    def _ask(self, message: dict[str, Any]) -> dict[str, Any]:
        write_message(self.write_fd, message)
        reply = read_message(self.read_fd)
        if reply is None:
            raise IntegrityError("the judge closed the channel")
        if "error" in reply:
            raise IntegrityError(f"the judge refused: {reply['error']}")
        return reply

    def users(self, stage: Stage) -> np.ndarray:
        return np.asarray(self._ask({"op": "users", "stage": stage})["users"], dtype=np.int64)

    def score(self, lists: RankedLists) -> dict[str, float]:
        return dict(self._ask({"op": "score", **lists.to_json()})["metrics"])

    def final_users(self) -> np.ndarray:
        return np.asarray(self._ask({"op": "final_users"})["users"], dtype=np.int64)

    def final(self, lists: RankedLists) -> dict[str, float]:
        return dict(self._ask({"op": "final", **lists.to_json()})["metrics"])

    def test_inputs(self) -> UserSequences:
        return _sequences_from_json(self._ask({"op": "test_inputs"}))

    def resumed(self, epochs: int, best_epoch: int, best_valid: dict[str, float]) -> None:
        self._ask({"op": "resumed", "epochs": epochs, "best_epoch": best_epoch})
