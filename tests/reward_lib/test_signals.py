"""Built-in signals against hand-worked values, and registering a new one."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from recsys.event_table import EVENT_TYPES, from_interactions
from reward_lib.errors import RewardError
from reward_lib.rewards import spec_reward
from reward_lib.signals import SIGNALS, signal
from reward_lib.spec import parse_spec

EVENTS = pd.DataFrame(
    {
        "user": [1, 1, 1, 2, 2, 1],
        "item": [10, 11, 12, 10, 13, 14],
        "day": [0, 0, 1, 0, 1, 2],
        "event": pd.Categorical(["click", "skip", "click", "click", "skip", "click"], categories=EVENT_TYPES),
        "watch_fraction": [0.5, 0.0, 1.0, 0.2, 0.0, 0.9],
        "genres": [["A"], ["B"], ["A", "B"], ["A"], [], ["B"]],
    }
)


def values(name: str) -> np.ndarray:
    return SIGNALS[name].compute(EVENTS)


def test_click_skip_and_completion_read_the_event_and_the_watched_share():
    assert values("click").tolist() == [1, 0, 1, 1, 0, 1]
    assert values("skip").tolist() == [0, 1, 0, 0, 1, 0]
    assert values("completion").tolist() == [0.5, 0.0, 1.0, 0.2, 0.0, 0.9]


def test_novelty_is_one_for_unclicked_items_and_zero_for_the_most_clicked():
    # clicks: item 10 twice, items 12 and 14 once, items 11 and 13 never
    once = 1 - np.log(2) / np.log(3)
    assert np.allclose(values("novelty"), [0, 1, once, 0, 1, once])


def test_return_next_day_is_unknown_on_the_last_day():
    assert np.array_equal(values("return_next_day"), [1, 1, 1, 1, 0, np.nan], equal_nan=True)


def test_diversity_compares_an_item_with_the_users_earlier_clicks_only():
    # user 1 clicks A, skips B, clicks AB, clicks B; user 2 clicks A, skips an item without genres
    expected = [1.0, 1.0, 1 - 1 / np.sqrt(2), 1.0, np.nan, 1 - 1 / np.sqrt(5)]
    assert np.allclose(values("diversity"), expected, equal_nan=True)


def test_training_interactions_are_clicks_with_sessions_split_by_pauses():
    frame = pd.DataFrame({"user_idx": [0, 0, 0, 1], "item_idx": [1, 2, 3, 1], "timestamp": [0, 60, 7200, 60],
                          "rating": [4.0, np.nan, 2.0, 5.0], "position": [0, 1, 2, 0]})  # fmt: skip
    events = from_interactions(frame)
    assert events["session"].tolist() == [0, 0, 1, 2] and set(events["event"]) == {"click"}
    assert np.array_equal(SIGNALS["rating"].compute(events), [4.0, np.nan, 2.0, 5.0], equal_nan=True)


def test_a_registered_signal_can_be_used_by_a_spec_and_not_registered_twice():
    @signal("test_long_watch", ["watch_fraction"], bounds=(0.0, 1.0))
    def long_watch(events: pd.DataFrame) -> np.ndarray:
        """1 when most of the item was watched."""
        return (events["watch_fraction"].to_numpy() > 0.8).astype(float)

    try:
        spec = parse_spec("name: long\nversion: 1\ncomponents: [{signal: test_long_watch, weight: 2}]\n", "inline")
        assert spec_reward(spec, "inline")(EVENTS).tolist() == [0, 0, 2, 0, 0, 2]
        assert SIGNALS["test_long_watch"].description == "1 when most of the item was watched."
        with pytest.raises(RewardError, match="signal 'test_long_watch' is already registered"):
            signal("test_long_watch", ["watch_fraction"])(long_watch)
    finally:
        del SIGNALS["test_long_watch"]
