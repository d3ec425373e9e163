"""The bandit between edit kinds follows the improvement per CPU-second each kind's children brought."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from offline_agent.bandit import KINDS, Pull, choose, pulls
from offline_agent.program_db import Program
from offline_agent.records import Feedback


def _program(key: str, parent: str | None, fitness: float | None, kind: str | None = None, **extra) -> Program:
    status = extra.pop("status", "evaluated" if fitness is not None else "failed")
    feedback = Feedback(edit_kind=kind, seconds=extra.pop("seconds", 100.0))
    origin = extra.pop("origin", "proposed" if parent else "initial")
    return Program(key, key, 0, parent, 1, 1, origin, {}, status, fitness, {}, feedback)


def test_the_records_give_each_kind_its_gain_floored_at_zero_and_its_cpu_seconds():
    programs = [
        _program("seed", None, 0.10),
        _program("a", "seed", 0.13, "tune", seconds=10.0),  # +0.03
        _program("b", "seed", 0.05, "tune", seconds=20.0),  # worse: gains 0, costs 20 s
        _program("c", "seed", None, "structural", seconds=0.2),  # failed at once: costs at least 1 s
        _program("d", "seed", 0.20, None, seconds=50.0),  # recorded before edit kinds: structural
        _program("e", "seed", None, "tune", status="pending"),  # in evaluation: a child, no gain yet
        _program("m", "d", 0.20, None, origin="migrant"),  # a migrant is no edit
    ]
    found = pulls(programs, threads=2)
    assert sorted(found, key=lambda p: (p.kind, p.cpu_seconds)) == [
        Pull("structural", 0.0, 2.0),
        Pull("structural", pytest.approx(0.10), 100.0),
        Pull("tune", None, 0.0),
        Pull("tune", pytest.approx(0.03), 20.0),
        Pull("tune", 0.0, 40.0),
    ]
    arms = choose(found).arms
    assert arms["tune"].children == 3 and arms["tune"].cpu_seconds == 60.0
    assert arms["tune"].gain == pytest.approx(0.03) and arms["structural"].gain == pytest.approx(0.10)


def test_cold_start_tries_each_kind_before_ucb_chooses():
    first = choose([])
    assert first.kind == "structural" and first.reason.startswith("cold start")
    second = choose([Pull("structural", 0.5, 10.0)])
    assert second.kind == "tune" and second.reason.startswith("cold start")
    assert choose([Pull("structural", 0.5, 10.0), Pull("tune", None, 0.0)]).reason.startswith("UCB1")
    assert choose([Pull("structural", 0.5, 10.0)], cold_start=2).kind == "structural"


def test_the_kind_with_the_higher_gain_per_cpu_second_is_chosen_and_the_scores_are_recorded():
    # the same gain per child, but tune children cost a tenth of the time
    found = [Pull("structural", 0.01, 100.0)] * 4 + [Pull("tune", 0.01, 10.0)] * 4
    choice = choose(found)
    assert choice.kind == "tune"
    assert choice.arms["tune"].score > choice.arms["structural"].score  # type: ignore[operator]
    assert f"tune {choice.arms['tune'].score:.3f}" in choice.reason
    flipped = [Pull("structural", 0.01, 10.0)] * 4 + [Pull("tune", 0.01, 100.0)] * 4
    assert choose(flipped).kind == "structural"


def _simulate(seed: int, rounds: int = 200) -> list[str]:
    """Tune children improve their parent by 0.004 per 10 CPU-seconds on average, structural ones by 0.01 per
    100: the bandit only sees what its choices brought."""
    rng = random.Random(seed)
    found: list[Pull] = []
    chosen = []
    for _ in range(rounds):
        kind = choose(found).kind
        chosen.append(kind)
        if kind == "tune":
            found.append(Pull(kind, max(rng.gauss(0.004, 0.004), 0.0), rng.uniform(8, 12)))
        else:
            found.append(Pull(kind, max(rng.gauss(0.01, 0.01), 0.0), rng.uniform(80, 120)))
    return chosen


def test_over_a_run_the_better_kind_is_chosen_far_more_often_yet_the_other_is_still_tried():
    counts = Counter(_simulate(seed=3))
    assert counts["tune"] > 3 * counts["structural"] and counts["structural"] >= 2
    assert set(counts) == set(KINDS)


def test_the_choice_is_a_function_of_the_records():
    assert _simulate(seed=5) == _simulate(seed=5)
    found = [Pull("structural", 0.02, 30.0), Pull("tune", 0.0, 12.0), Pull("tune", None, 0.0)]
    assert choose(found) == choose(list(found))
