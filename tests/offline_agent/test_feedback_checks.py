"""Feedback that is checked: targeted edits are scored by whether the flagged signal fell in the child, the
precision is counted per rule and proposer, and a rule whose fixes do not fix loses its feedback priority."""

from __future__ import annotations

import random

from offline_agent.feedback_checks import MIN_MOVE, check_feedback, claimed, overall, precision_by, rule_checks
from offline_agent.program_db import Program
from offline_agent.proposers import ProposalRequest, RulebookProposer
from offline_agent.records import Feedback
from offline_agent.report import feedback_check_section
from recsys.candidate import load_candidate
from tests.offline_agent.histories import history

FLAGGED_PARENT = Feedback(signals={"popularity_bias": 0.7, "low_coverage": 0.1}, complaints={"popularity_bias": 0.5})


def _child(rule: str | None = None, rationale: str = "", **measured: dict[str, float]) -> Feedback:
    return Feedback(rule=rule, rationale=rationale, proposer="rulebook" if rule else "gemini", **measured)


def test_a_rule_is_checked_on_the_flagged_signals_it_addresses_and_fixes_only_when_they_fall():
    fell = check_feedback(FLAGGED_PARENT, _child("logq_correction", signals={"popularity_bias": 0.4}))
    assert [(c.signal, c.parent, c.child, c.fixed) for c in fell] == [("popularity_bias", 0.7, 0.4, True)]
    rose = check_feedback(FLAGGED_PARENT, _child("logq_correction", signals={"popularity_bias": 0.8}))
    assert [c.fixed for c in rose] == [False]
    within_noise = _child("logq_correction", signals={"popularity_bias": 0.7 - MIN_MOVE / 2})
    assert [c.fixed for c in check_feedback(FLAGGED_PARENT, within_noise)] == [False]
    # the complaint share counts as the rule reads it: the larger of probe signal and complaint share
    complaint_kept = _child("logq_correction", signals={"popularity_bias": 0.1}, complaints={"popularity_bias": 0.75})
    assert [(c.child, c.fixed) for c in check_feedback(FLAGGED_PARENT, complaint_kept)] == [(0.75, False)]


def test_unflagged_signals_unmeasured_children_and_probes_that_only_measure_are_not_scored_as_fixes():
    # popularity_penalty addresses popularity_bias (flagged) and low_coverage (0.1: not flagged)
    both = check_feedback(FLAGGED_PARENT, _child("popularity_penalty", signals={"popularity_bias": 0.2}))
    assert [c.signal for c in both] == ["popularity_bias"]
    failed = check_feedback(FLAGGED_PARENT, _child("popularity_penalty"))
    assert [(c.child, c.fixed) for c in failed] == [(None, None)]
    complained = Feedback(complaints={"era_mismatch": 0.6})
    assert check_feedback(complained, _child("probe_for_complaint", complaints={"era_mismatch": 0.6})) == []
    assert check_feedback(FLAGGED_PARENT, _child("deeper", signals={"popularity_bias": 0.1})) == []


def test_a_language_model_names_its_targets_and_is_checked_on_them():
    rationale = "Penalise popular items in the score.\nTargets: popularity_bias, `low coverage`, era mismatch."
    assert claimed(_child(rationale=rationale)) == ("popularity_bias", "low_coverage", "era_mismatch")
    checks = check_feedback(FLAGGED_PARENT, _child(rationale=rationale, signals={"popularity_bias": 0.3}))
    assert [(c.signal, c.fixed) for c in checks] == [("popularity_bias", True)]
    assert claimed(_child(rationale="A deeper model.")) == ()


def test_undertrained_is_checked_on_the_training_curve():
    cut_short = Feedback(history=history([0.01, 0.02, 0.04, 0.08]), stopped="budget")
    levelled = _child("higher_learning_rate", history=history([0.05, 0.08, 0.08, 0.08]))
    assert claimed(levelled) == ("undertrained",)
    assert [c.fixed for c in check_feedback(cut_short, levelled)] == [True]


def _program(key: str, feedback: Feedback) -> Program:
    return Program(key, key, 0, "parent@0", 1, 1, "proposed", {}, "evaluated", 0.05, {}, feedback)


def test_precision_is_counted_per_rule_and_overall_and_shown_in_the_report():
    children = [
        _program("a@0", _child("logq_correction", signals={"popularity_bias": 0.3})),
        _program("b@0", _child("logq_correction", signals={"popularity_bias": 0.9})),
        _program("c@0", _child("popularity_penalty")),  # failed: targeted, not measured
        _program("d@0", _child(rationale="Targets: popularity_bias", signals={"popularity_bias": 0.2})),
    ]
    checked = [_program(p.key, p.feedback.merged(feedback_checks=check_feedback(FLAGGED_PARENT, p.feedback)))
               for p in children]  # fmt: skip
    groups = {name: found.to_json() for name, found in precision_by(checked).items()}
    assert groups == {
        "logq_correction": {"targeted": 2, "checked": 2, "fixed": 1, "precision": 0.5},
        "popularity_penalty": {"targeted": 1, "checked": 0, "fixed": 0, "precision": None},
        "gemini": {"targeted": 1, "checked": 1, "fixed": 1, "precision": 1.0},
    }
    assert overall(checked).to_json() == {"targeted": 4, "checked": 3, "fixed": 2, "precision": 0.6667}
    assert rule_checks(checked) == {"logq_correction": (1, 2), "popularity_penalty": (0, 0)}
    section = "\n".join(feedback_check_section(checked))
    assert "Of 4 flagged problems an edit answered, 3 were measured in the child and 2 fixed" in section
    assert "| logq_correction | 2 | 2 | 1 | 0.5000 |" in section


def test_a_rule_whose_fixes_do_not_fix_loses_the_priority_its_evidence_gave_it(seeds_dir):
    blocks = dict(load_candidate(seeds_dir / "sasrec_ce").sources)
    feedback = Feedback(signals={"low_diversity": 0.9}, history=history([0.05]))
    parent = Program("p@0", "p", 0, None, 0, 0, "initial", blocks, "evaluated", 0.05, {"ndcg@10": 0.05}, feedback)
    proposer = RulebookProposer(explore=0.0)
    trusted = proposer.propose(ProposalRequest(parent, [], [], []), random.Random(0)).rule
    assert trusted == "mmr_reranking"  # the flagged low diversity leads
    unproven = ProposalRequest(parent, [], [], [], rule_checks={"mmr_reranking": (3, 3)})
    assert proposer.propose(unproven, random.Random(0)).rule == "mmr_reranking"
    failing = ProposalRequest(parent, [], [], [], rule_checks={"mmr_reranking": (0, 4)})
    assert proposer.propose(failing, random.Random(0)).rule != "mmr_reranking"
