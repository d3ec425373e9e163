"""The outcome of an evaluation reports the epoch its metrics come from."""

from __future__ import annotations

from offline_agent.evaluator import EvaluationOutcome


def test_best_epoch_is_the_epoch_of_the_best_validation_ndcg_counted_from_one():
    history = [{"epoch": e, "valid_ndcg@10": v} for e, v in enumerate([0.05, 0.09, 0.12, 0.11, 0.12], start=1)]
    outcome = EvaluationOutcome(status="evaluated", stage="train", reason=None, history=history)
    assert outcome.best_epoch == 3  # the first of two equal bests: early stopping keeps the earlier checkpoint


def test_an_outcome_without_a_trained_epoch_has_no_best_epoch():
    assert EvaluationOutcome(status="failed", stage="static", reason="syntax error").best_epoch is None
