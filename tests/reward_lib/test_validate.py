"""Validation: each problem is found and reported with the column, the row or the component to fix."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from recsys.event_table import from_interactions
from reward_lib.errors import RewardError
from reward_lib.rewards import Reward, spec_reward
from reward_lib.spec import parse_spec
from reward_lib.store import resolve_reward
from reward_lib.validate import evaluate, validate

TRAINING = from_interactions(
    pd.DataFrame({"user_idx": [0, 0, 0, 1], "item_idx": [1, 2, 3, 1], "timestamp": [0, 86_400, 172_800, 0],
                  "rating": [4.0, 1.0, np.nan, 5.0], "position": [0, 1, 2, 0]})
)  # fmt: skip


def spec(components: str, extra: str = "") -> Reward:
    return spec_reward(parse_spec(f"name: t\nversion: 1\ncomponents: {components}\n{extra}", "t.yaml"), "t.yaml")


def python(function, bounds=(0.0, 10.0)) -> Reward:
    return Reward("p", 1, function, frozenset(), bounds, {}, "python:test")


def problems(reward: Reward, events: pd.DataFrame = TRAINING) -> list[tuple[str, str]]:
    return [(issue.check, issue.message) for issue in validate(reward, events).issues if issue.severity == "error"]


def test_a_column_the_reward_needs_and_the_events_lack_is_named():
    reward = spec("[{signal: completion, weight: 1}]")
    message = "needs column 'watch_fraction', which the events lack (they have user, item, timestamp, day, session, "
    assert problems(reward) == [("missing_column", message + "position, event, rating)")]
    with pytest.raises(RewardError, match=r"reward t@1 \(t.yaml\) on the events \(4 events\): INVALID\n.*watch_f"):
        evaluate(reward, TRAINING)
    assert problems(spec("[{signal: completion, weight: 1, fill: 1}]")) == []  # a declared fill stands in


def test_a_column_of_the_wrong_kind_is_named_with_what_was_expected():
    events = TRAINING.assign(rating=TRAINING["rating"].astype(str))
    assert problems(spec("[{signal: rating, weight: 1, transforms: [{clip: [0, 5]}]}]"), events) == [
        ("wrong_type", "column 'rating' holds object values; expected numbers")
    ]


def test_nan_and_infinite_rewards_are_reported_with_their_row():
    assert problems(spec("[{signal: rating, weight: 1, transforms: [{clip: [0, 5]}]}]")) == [
        ("non_finite", "1 events get a NaN or infinite reward: row 2 (user 0, item 3, day 2): nan")
    ]
    infinite = python(lambda events: np.where(events["item"] == 1, np.inf, 1.0))
    assert problems(infinite) == [
        ("non_finite", "2 events get a NaN or infinite reward: row 0 (user 0, item 1, day 0): inf; "
                       "row 3 (user 1, item 1, day 0): inf")
    ]  # fmt: skip


def test_values_outside_the_bounds_are_reported_with_their_row():
    reward = python(lambda events: np.where(events["item"] == 2, 2.0, 0.5), bounds=(0.0, 1.0))
    assert problems(reward) == [
        ("out_of_bounds", "1 events fall outside the bounds [0, 1]: row 1 (user 0, item 2, day 1): 2")
    ]


def test_unbounded_rewards_are_refused_before_they_run():
    assert problems(spec("[{signal: position, weight: 0.1}]")) == [
        ("unbounded", "component position ranges over [0, inf]: add a clip or normalise transform")
    ]
    assert problems(spec("[{signal: rating, weight: 1, transforms: [{clip: [-5, 5]}, log], fill: 3}]")) == [
        ("log_domain", "component rating: log of values that may be <= -1 gives NaN; clip or normalise before it")
    ]
    assert problems(python(lambda events: np.ones(len(events)), bounds=None)) == [
        ("unbounded", "python:test declares no bounds: give @reward(..., bounds=(low, high))")
    ]
    assert problems(spec("[{signal: click, weight: 2}]", "bounds: [0, 1]\n")) == [
        ("unbounded", "the components can reach [0, 2], outside the declared bounds [0, 1]"),
        ("out_of_bounds", "4 events fall outside the bounds [0, 1]: row 0 (user 0, item 1, day 0): 2; "
                          "row 1 (user 0, item 2, day 1): 2; row 2 (user 0, item 3, day 2): 2 and 1 more"),
    ]  # fmt: skip


def test_a_reward_returning_one_value_too_few_is_refused():
    with pytest.raises(RewardError, match=r"reward p@1 \(python:test\) returned shape \(3,\); expected one value per "
                                          r"event, \(4,\)"):  # fmt: skip
        evaluate(python(lambda events: np.ones(3)), TRAINING)


@pytest.mark.parametrize(
    "components",
    ["[{signal: rating, weight: -1, transforms: [{clip: [0, 5]}], fill: 3}]",
     "[{signal: click, weight: 1, when: ['rating < 3']}]"],
)  # fmt: skip
def test_a_declared_monotonicity_the_reward_breaks_is_found_with_the_row(components):
    reward = spec(components, "monotone: {rating: increasing}\n")
    [(check, message)] = problems(reward)
    assert check == "monotonicity"
    assert message.startswith("declared increasing in rating, but at row 0 (user 0, item 1, day 0) raising rating ")
    assert " lowers the reward from " in message


def test_the_default_reward_is_valid_on_real_training_events(prepared_small):
    events = from_interactions(prepared_small.interactions, prepared_small.items)
    report = validate(resolve_reward("clicks"), events, "training events")
    assert report.ok, report.to_text()
    assert [issue.message for issue in report.issues] == [
        "increasing in watch_fraction not checked: the events have no watch_fraction column"
    ]
    assert np.array_equal(evaluate(resolve_reward("clicks"), events), np.ones(len(events)))
