"""Alignment with the north-star: hand-checked on a tiny log, and on real simulated logs."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from reward_lib.alignment import measure, per_user_mean, prepare_log
from reward_lib.errors import RewardError
from reward_lib.store import resolve_reward

# user: (arm, {day: (clicked, satisfaction)}) over days 0..3; a user absent on a day has an absence row
VISITS = {
    0: ("a", {0: (True, 3.0), 1: (True, 3.0), 2: (True, 3.0), 3: (True, 3.0)}),
    1: ("a", {0: (True, 2.0), 1: (False, -0.5), 2: (False, 1.0)}),
    2: ("b", {0: (False, -0.5), 2: (False, -0.5)}),
    3: ("b", {0: (False, -0.5)}),
}


def tiny_log() -> pd.DataFrame:
    rows = []
    for day in range(4):
        for user, (arm, visits) in VISITS.items():
            if day not in visits:
                rows.append((day, user, arm, 0, -1, False, np.nan, np.nan, False, False))
                continue
            clicked, satisfaction = visits[day]
            for position in (0, 1):
                chosen = clicked and position == 0
                rows.append((day, user, arm, 10 + position, position, chosen, satisfaction, 0.8 * chosen, True, False))
    columns = ["day", "user", "arm", "item", "position", "chosen", "satisfaction", "consumption", "returned", "left"]
    frame = pd.DataFrame(rows, columns=columns)
    frame["arm"] = pd.Categorical(frame["arm"], categories=["a", "b"])
    return frame


def test_alignment_of_clicks_on_a_tiny_log_matches_the_hand_computation():
    data = prepare_log(tiny_log(), "tiny")
    assert (data.split_day, data.days, data.users) == (2, 4, 4)
    assert data.future_retention.tolist() == [1.0, 0.5, 0.5, 0.0]
    assert np.array_equal(data.future_satisfaction, [3.0, 1.0, -0.5, np.nan], equal_nan=True)
    clicks = resolve_reward("clicks")
    per_user = per_user_mean(clicks(data.events), data)
    assert per_user.tolist() == [0.5, 0.25, 0.0, 0.0]  # clicks per early impression
    [log] = measure(clicks, [data]).logs
    # Spearman of ranks (4, 3, 1.5, 1.5) and (4, 2.5, 2.5, 1): 3.75 / 4.5; satisfaction: a perfect order
    assert log.retention == pytest.approx(3.75 / 4.5) and log.satisfaction == pytest.approx(1.0)
    assert (log.arm_agreement, log.arm_pairs, log.reward_winner, log.north_star_winner) == (1.0, 1, "a", "a")
    assert measure(clicks, [data]).score == pytest.approx((3.75 / 4.5 + 1.0) / 2)


def test_a_reward_that_prefers_the_losing_arm_disagrees_with_the_north_star():
    data = prepare_log(tiny_log(), "tiny")
    skips = resolve_reward("name: skips\nversion: 1\ncomponents: [{signal: skip, weight: 1}]\n")
    alignment = measure(skips, [data])
    assert alignment.arm_agreement == 0.0 and alignment.retention < 0 and alignment.score < 0


def test_a_log_too_short_to_split_is_refused():
    with pytest.raises(RewardError, match=r"short: the log has 4 experiment days; .* \(split day 4 must be in 1..3\)"):
        prepare_log(tiny_log(), "short", split_day=4)


def test_on_real_logs_clicks_predict_the_north_star_and_pick_the_oracle(aligned):
    alignment = measure(resolve_reward("clicks"), aligned)
    assert 0.05 < alignment.retention < 1 and 0.05 < alignment.satisfaction < 1
    assert alignment.arm_agreement == 1.0  # random < popularity < oracle, by clicks as by retention
    assert {(log.reward_winner, log.north_star_winner) for log in alignment.logs} == {("oracle", "oracle")}
    assert [log.users for log in alignment.logs] == [len(set(d.event_user)) for d in aligned]
