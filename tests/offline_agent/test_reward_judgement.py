"""A reward edit is judged by its alignment with the north-star, and the proposer is told it."""

from __future__ import annotations

from offline_agent.evolve import reward_verdict
from offline_agent.program_db import Program
from offline_agent.proposers import feedback_text
from offline_agent.records import Feedback, RewardAlignment

BLOCKS = {"model": "m", "loss": "l", "optim": "o", "reward": 'REWARD_SPEC = "clicks@1"', "diagnosis": "d"}
MEASURED = {"reward": "clicks@1", "alignment": 0.55, "retention": 0.5, "satisfaction": 0.6, "arm_agreement": 1.0}


def program(reward: str, alignment: dict[str, object] | None, fitness: float) -> Program:
    measured = RewardAlignment.model_validate(alignment) if alignment is not None else None
    return Program("k", "h", 0, None, 1, 1, "proposed", {**BLOCKS, "reward": reward}, "evaluated", fitness,
                   feedback=Feedback(reward_alignment=measured))  # fmt: skip


def test_a_reward_edit_is_judged_by_the_change_of_alignment_not_the_fitness():
    parent = program(BLOCKS["reward"], MEASURED, fitness=0.10)
    child = program('REWARD_SPEC = "engagement@1"', {**MEASURED, "reward": "engagement@1", "alignment": 0.65}, 0.05)
    change, text = reward_verdict(child, parent)
    assert change == 0.65 - 0.55
    assert text == "reward alignment 0.6500 (+0.1000) (judged by alignment, not loss)"


def test_other_edits_and_unmeasured_rewards_keep_the_usual_judgement():
    parent = program(BLOCKS["reward"], MEASURED, fitness=0.10)
    assert reward_verdict(program(BLOCKS["reward"], MEASURED, 0.2), parent) is None  # the reward did not change
    assert reward_verdict(program("x = 1", None, 0.2), parent) is None  # no logs configured
    unmeasured = program("x = 1", {"error": "reward.py defines no REWARD_SPEC string"}, 0.2)
    assert reward_verdict(unmeasured, parent) == (-1.0, "reward alignment not measured: reward.py defines no "
                                                        "REWARD_SPEC string")  # fmt: skip


def test_the_proposer_sees_the_reward_alignment_in_the_feedback():
    text = feedback_text(program(BLOCKS["reward"], MEASURED, 0.1))
    assert (
        "Reward alignment of reward.py (clicks@1) with the north-star on simulated A/B logs: 0.5500 "
        "(per-user Spearman with later retention 0.5000 and satisfaction 0.6000; arm agreement 1.00)"
    ) in text
