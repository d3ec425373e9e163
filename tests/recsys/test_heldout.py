"""The judge of held-out data: lists are checked, metrics computed by it alone, in a fixed order."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from recsys.evaluation import IntegrityError, ItemCatalog, RankedLists, check_metrics, evaluated_users
from recsys.heldout import FINAL_USERS, Judge
from recsys.sequences import UserSequences

NUM_ITEMS = 40


def _sequences(users: int = 12) -> UserSequences:
    """Each user: 5 training items, then one validation and one test item, all distinct per user."""
    rng = np.random.default_rng(0)
    items = np.concatenate([rng.choice(np.arange(1, NUM_ITEMS + 1), 7, replace=False) for _ in range(users)])
    split = np.tile(np.array([0, 0, 0, 0, 0, 1, 2], dtype=np.int8), users)
    offsets = np.arange(0, 7 * users + 1, 7, dtype=np.int64)
    return UserSequences(users, NUM_ITEMS, items, split, np.full(len(items), np.nan, np.float32), offsets)


def _catalog() -> ItemCatalog:
    return ItemCatalog(torch.zeros(NUM_ITEMS + 1, 2), torch.ones(NUM_ITEMS + 1))


def _lists(sequences: UserSequences, stage, users=None, hit: bool = False) -> RankedLists:
    """Lists that avoid each user's history; with ``hit`` the target comes first."""
    users = evaluated_users(sequences, stage) if users is None else users
    top = []
    for user in users:
        seen = set(sequences.history(int(user), stage).tolist())
        target = int(sequences.targets(int(user), stage)[0]) if len(sequences.targets(int(user), stage)) else None
        rest = [i for i in range(1, NUM_ITEMS + 1) if i not in seen and i != target]
        first = [target] if hit and target is not None else []
        top.append((first + rest)[:20])
    return RankedLists(stage, np.asarray(users, np.int64), np.asarray(top, np.int64))


def test_the_judge_scores_in_order_and_keeps_its_own_record():
    sequences = _sequences()
    judge = Judge(sequences, _catalog())
    assert judge.score(_lists(sequences, "valid"))["ndcg@10"] == 0.0
    assert judge.score(_lists(sequences, "valid", hit=True))["ndcg@10"] == 1.0
    assert judge.best_epoch == 2
    with pytest.raises(IntegrityError, match="after the final"):
        judge.test_inputs()
    final = judge.final(_lists(sequences, "valid", judge.final_users(), hit=True))
    assert final == judge.history[1]
    inputs = judge.test_inputs()
    assert not (inputs.split == 2).any() and (inputs.split == 1).any()  # the test targets never leave
    assert judge.score(_lists(sequences, "test", hit=True))["hr@10"] == 1.0
    with pytest.raises(IntegrityError, match="scored once"):
        judge.score(_lists(sequences, "test"))


def test_final_lists_of_another_model_are_refused():
    sequences = _sequences()
    judge = Judge(sequences, _catalog())
    judge.score(_lists(sequences, "valid", hit=True))
    other = _lists(sequences, "valid", judge.final_users(), hit=True)
    other.top[:] = other.top[:, ::-1].copy()  # the same items, another order: another model
    with pytest.raises(IntegrityError, match="do not come from the model it kept"):
        judge.final(other)
    assert len(judge.final_users()) == min(FINAL_USERS, sequences.num_users)


@pytest.mark.parametrize(
    ("tamper", "reason"),
    [
        (lambda top: top.__setitem__((0, 1), top[0, 0]), "same item twice"),
        (lambda top: top.__setitem__((0, 0), NUM_ITEMS + 5), "outside the catalogue"),
        (lambda top: top.__setitem__((0, 0), 0), "outside the catalogue"),
    ],
)
def test_impossible_lists_are_refused_and_the_refusal_is_recorded(tamper, reason):
    sequences = _sequences()
    judge = Judge(sequences, _catalog())
    lists = _lists(sequences, "valid")
    tamper(lists.top)
    reply = judge.handle({"op": "score", **lists.to_json()})
    assert reason in reply["error"] and reason in (judge.violation or "")
    assert "error" in judge.handle({"op": "users", "stage": "valid"})  # a refusal ends the judging


def test_lists_holding_the_users_own_history_or_other_users_are_refused():
    sequences = _sequences()
    judge = Judge(sequences, _catalog())
    lists = _lists(sequences, "valid")
    lists.top[0, 0] = sequences.history(0, "valid")[0]
    with pytest.raises(IntegrityError, match="own input history"):
        judge.score(lists)
    with pytest.raises(IntegrityError, match="evaluated ones"):
        judge.score(_lists(sequences, "valid", np.arange(3)))


def test_a_resumed_trainer_must_match_the_judges_record():
    sequences = _sequences()
    judge = Judge(sequences, _catalog())
    judge.score(_lists(sequences, "valid"))
    judge.resumed(1, 1, {})
    with pytest.raises(IntegrityError, match="the judge recorded 1"):
        judge.resumed(6, 1, {})


def test_malformed_requests_are_refused_not_raised():
    judge = Judge(_sequences(), _catalog())
    assert "malformed" in judge.handle({"op": "score", "stage": "valid", "users": [0], "top": "x"})["error"]


@pytest.mark.parametrize("metrics", [{"ndcg@10": 4.54}, {"hr@10": -0.1}, {"coverage@10": math.nan}, {"x": math.inf}])
def test_impossible_metrics_are_refused(metrics):
    with pytest.raises(IntegrityError):
        check_metrics(metrics)


def test_final_lists_that_differ_only_in_near_ties_are_accepted():
    """A kept model ranked in batches of another shape (or in bfloat16) may swap items at a list's edge."""
    sequences = _sequences()
    judge = Judge(sequences, _catalog())
    judge.score(_lists(sequences, "valid", hit=True))
    again = _lists(sequences, "valid", judge.final_users(), hit=True)
    again.top[:, [9, 10]] = again.top[:, [10, 9]]  # the 10th and 11th swap places: 9 of 10 shared
    assert judge.final(again) == judge.history[0]
