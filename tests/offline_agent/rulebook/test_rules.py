"""Rule selection: evidence triggers rules, tried rules are skipped, rules chain, probes accumulate, and a rule
that does not apply says why."""

from __future__ import annotations

import pytest

from offline_agent.edits import apply_change, parse_reply
from offline_agent.records import Feedback
from offline_agent.rulebook.catalogue import PROBE_TEMPLATES, RULES, TEMPLATES, unmeasured_complaint
from offline_agent.rulebook.engine import RuleContext, RuleDoesNotApply, applicable, reply_for
from recsys.candidate import load_candidate
from tests.offline_agent.histories import history
from tests.offline_agent.rulebook.conftest import IMPROVING, OVERFIT, trains

BY_NAME = {rule.name: rule for rule in RULES}


def _sources(seeds_dir, seed):
    return dict(load_candidate(seeds_dir / seed).sources)


def _apply(name, ctx):
    rule = BY_NAME[name]
    assert rule.applies(ctx), f"{name} should apply: {rule.why_not(ctx)}"
    return apply_change(ctx.sources, parse_reply(reply_for(rule, ctx)))


def test_rules_chain_sampled_softmax_then_more_negatives_then_logq(tmp_path, seeds_dir):
    sources = _apply("sampled_softmax", RuleContext(_sources(seeds_dir, "sasrec_bce")))
    assert not BY_NAME["logq_correction"].applies(RuleContext(sources, {"popularity_lift@10": 1.0}))
    sources = _apply("more_negatives", RuleContext(sources))
    sources = _apply("logq_correction", RuleContext(sources, {"popularity_lift@10": 2.4}))
    loss = trains(tmp_path, sources).modules["loss"]
    assert (loss.NEGATIVES, loss.SAMPLER, loss.LOGQ) == (512, "popularity", True)


def test_preconditions_follow_the_evidence_and_tried_rules_are_skipped(seeds_dir):
    calm = RuleContext(_sources(seeds_dir, "sasrec_ce"), {"coverage@10": 0.6, "ild@10": 0.8}, IMPROVING[:1])
    names = {rule.name for rule in applicable(RULES, calm, set())}
    assert {"deeper", "wider", "rating_weighted_positives"} <= names
    assert not names & {
        "more_dropout",
        "adamw_weight_decay",
        "mmr_reranking",
        "uniformity_regularizer",
        "full_cross_entropy",
    }
    collapsed = RuleContext(calm.sources, calm.metrics, calm.history, Feedback(signals={"embedding_collapse": 0.9}))
    assert "uniformity_regularizer" in {rule.name for rule in applicable(RULES, collapsed, set())}
    assert "deeper" not in {rule.name for rule in applicable(RULES, calm, {"deeper"})}


def test_a_run_cut_short_by_its_time_budget_gets_convergence_rules_but_no_schedule_longer_than_the_budget(
    seeds_dir,
):
    def names(history, stopped):
        ctx = RuleContext(_sources(seeds_dir, "sasrec_bce"), {}, history, Feedback(stopped=stopped))
        return {rule.name for rule in applicable(RULES, ctx, set())}

    noisy_end = history([0.002, 0.008, 0.016, 0.019, 0.0188], seconds_per_epoch=4.0)
    assert {"higher_learning_rate", "smaller_batches"} <= names(noisy_end, "budget")  # the trend, not the last epoch
    assert "warmup_cosine" not in names(noisy_end, "budget")  # its schedule would end inside the warm-up
    assert "warmup_cosine" in names(noisy_end, "epochs")
    plateau = history([0.01, 0.02, 0.03, 0.0301, 0.0302, 0.0302])
    assert not {"higher_learning_rate", "smaller_batches", "warmup_cosine"} & names(plateau, "epochs")


def test_the_catalogue_holds_at_least_fifteen_distinct_improvements():
    assert len({rule.name for rule in RULES}) >= 15


def test_a_sequence_blind_model_gets_self_attention_and_stilltrains(tmp_path, seeds_dir):
    sources = _sources(seeds_dir, "mf_bpr")
    assert not BY_NAME["sequential_model"].applies(RuleContext(sources, {}, [], Feedback()))
    blind = RuleContext(sources, {}, [], Feedback(signals={"sequence_insensitivity": 0.9}))
    updated = _apply("sequential_model", blind)
    assert "class SASRec(" in updated["model"] and updated["loss"] == sources["loss"]
    trains(tmp_path, updated)


def test_a_complaint_no_probe_measures_gets_a_probe_once(tmp_path, seeds_dir):
    from offline_agent.diagnosis.probes import Probe

    sources = _sources(seeds_dir, "sasrec_ce")
    complaint = Feedback(complaints={"era_mismatch": 0.5}, signals={"popularity_bias": 0.1})
    assert not BY_NAME["probe_for_complaint"].applies(
        RuleContext(sources, {}, [], Feedback(complaints={"era_mismatch": 0.1}))
    )
    updated = _apply("probe_for_complaint", RuleContext(sources, {}, [], complaint))
    assert 'measures="era_mismatch"' in updated["diagnosis"]
    probes = trains(tmp_path, updated).function("diagnosis", "PROBES")
    assert [type(p) for p in probes] == [Probe]
    assert not BY_NAME["probe_for_complaint"].applies(RuleContext(updated, {}, [], complaint))
    measured = complaint.merged(signals={"era_mismatch": 0.2})
    assert not BY_NAME["probe_for_complaint"].applies(RuleContext(sources, {}, [], measured))


@pytest.mark.parametrize(
    ("complaint", "template", "probe_name"),
    [("obscure_lists", "obscurity_probe.py", "popularity_shortfall"),
     ("scattered_lists", "genre_focus_probe.py", "off_taste_share")],
)  # fmt: skip
def test_obscure_or_scattered_lists_that_no_probe_measures_get_their_probe(
    tmp_path, seeds_dir, complaint, template, probe_name
):
    assert PROBE_TEMPLATES[complaint] == template
    sources = _sources(seeds_dir, "sasrec_ce")
    rule = BY_NAME["probe_for_complaint"]
    assert not rule.applies(RuleContext(sources, {}, [], Feedback(complaints={complaint: 0.29})))
    measured = Feedback(complaints={complaint: 0.5}, signals={complaint: 0.1})
    assert not rule.applies(RuleContext(sources, {}, [], measured))
    raised = RuleContext(sources, {}, [], Feedback(complaints={complaint: 0.3}, signals={"popularity_bias": 0.1}))
    assert rule.evidence(raised) == 0.3
    updated = _apply("probe_for_complaint", raised)
    assert updated["diagnosis"] == (TEMPLATES / template).read_text()
    assert [p.name for p in trains(tmp_path, updated).function("diagnosis", "PROBES")] == [probe_name]
    assert not rule.applies(RuleContext(updated, {}, [], raised.feedback))


def test_the_most_raised_unmeasured_complaint_gets_its_probe_first(seeds_dir):
    sources = _sources(seeds_dir, "sasrec_ce")
    complaints = {"era_mismatch": 0.4, "obscure_lists": 0.6, "scattered_lists": 0.3, "popularity_bias": 0.9}
    assert unmeasured_complaint(RuleContext(sources, {}, [], Feedback(complaints=complaints))) == "obscure_lists"
    measured = Feedback(complaints=complaints, signals={"obscure_lists": 0.2})
    assert unmeasured_complaint(RuleContext(sources, {}, [], measured)) == "era_mismatch"


def test_a_second_probe_is_added_next_to_a_verified_one_and_both_load(tmp_path, seeds_dir):
    from offline_agent.diagnosis.probes import Probe

    feedback = Feedback(complaints={"era_mismatch": 0.5, "scattered_lists": 0.4})
    sources = _apply("probe_for_complaint", RuleContext(_sources(seeds_dir, "sasrec_ce"), {}, [], feedback))
    assert 'measures="era_mismatch"' in sources["diagnosis"] and "scattered_lists" not in sources["diagnosis"]
    verified = feedback.merged(signals={"era_mismatch": 0.2})
    updated = _apply("probe_for_complaint", RuleContext(sources, {}, [], verified))
    diagnosis = updated["diagnosis"]
    era_code = sources["diagnosis"][sources["diagnosis"].index("@probe(") : sources["diagnosis"].index("PROBES = ")]
    assert era_code.strip() in diagnosis  # the verified probe is kept as it was
    assert diagnosis.rstrip().endswith("PROBES = [era_gap, off_taste_share]")
    assert diagnosis.count("import numpy as np") == 1 and "import torch\n" in diagnosis
    probes = trains(tmp_path, updated).function("diagnosis", "PROBES")
    assert [(type(p), p.name, p.measures) for p in probes] == [
        (Probe, "era_gap", "era_mismatch"),
        (Probe, "off_taste_share", "scattered_lists"),
    ]
    assert not BY_NAME["probe_for_complaint"].applies(RuleContext(updated, {}, [], verified))


def test_no_probe_is_added_to_a_diagnosis_module_that_does_not_end_with_a_probes_list(seeds_dir):
    feedback = Feedback(complaints={"obscure_lists": 0.5})
    sources = _sources(seeds_dir, "sasrec_ce")
    for diagnosis in ("PROBES = []\nEXTRA = 1\n", "PROBES = list()\n", "PROBES = [\n"):
        assert not BY_NAME["probe_for_complaint"].applies(
            RuleContext({**sources, "diagnosis": diagnosis}, {}, [], feedback)
        )


def test_complaints_count_as_evidence_like_probe_signals(seeds_dir):
    sources = _sources(seeds_dir, "sasrec_ce")
    ctx = RuleContext(sources, {}, [], Feedback(signals={"low_diversity": 0.2}, complaints={"low_diversity": 0.7}))
    assert ctx.signal("low_diversity") == 0.7 and ctx.signal("repetition") is None
    assert BY_NAME["mmr_reranking"].applies(ctx)


def test_the_strongest_evidence_decides_which_rule_comes_first(seeds_dir):
    sources = _sources(seeds_dir, "mf_bpr")
    plain = [rule.name for rule in applicable(RULES, RuleContext(sources, {}, [], Feedback()), set())]
    assert plain[0] == "sampled_softmax"  # catalogue order without feedback
    blind = RuleContext(sources, {}, [], Feedback(signals={"sequence_insensitivity": 0.9, "weak_ranking_margin": 0.4}))
    ordered = [rule.name for rule in applicable(RULES, blind, set())]
    assert ordered[0] == "sequential_model" and ordered[1] == "sampled_softmax"


def _optim(body: str) -> str:
    return (
        f"import torch\n\nfrom recsys.candidate_api import TrainingPlan\n\n\n{body}\n\n\ndef build_optimizer(params):\n"
        + ("    return torch.optim.SGD(params, lr=0.1)\n")
    )


@pytest.mark.parametrize(
    ("name", "evidence", "optim", "reason"),
    [
        ("smaller_batches", IMPROVING, "def training_plan():\n    return TrainingPlan(batch_size=256)",
         "optim.py: training_plan() passes batch_size=256, not 128"),
        ("smaller_batches", IMPROVING, "def training_plan():\n    return TrainingPlan()",
         "optim.py: the TrainingPlan(...) call in training_plan() does not state batch_size="),
        ("smaller_batches", IMPROVING, "def training_plan():\n    return dict(batch_size=128)",
         "optim.py: training_plan() makes 0 TrainingPlan(...) calls, not one"),
        ("smaller_batches", OVERFIT, "def training_plan():\n    return TrainingPlan(batch_size=128)",
         "the evidence does not show training still improving when it ended"),
        ("adamw_weight_decay", OVERFIT, "def training_plan():\n    return TrainingPlan()",
         "optim.py: build_optimizer() makes 0 Adam(...) calls, not one"),
        ("higher_learning_rate", IMPROVING, "def training_plan():\n    return TrainingPlan()",
         "optim.py: build_optimizer() passes lr=0.1, not 0.001"),
        ("warmup_cosine", IMPROVING, "def training_plan(:", "optim.py does not parse: line 6"),
    ],
)  # fmt: skip
def test_a_rule_whose_precondition_fails_says_what_is_missing_and_proposes_nothing(
    seeds_dir, name, evidence, optim, reason
):
    ctx = RuleContext({**_sources(seeds_dir, "sasrec_bce"), "optim": _optim(optim)}, {}, evidence)
    rule = BY_NAME[name]
    assert reason in (rule.why_not(ctx) or "")
    assert not rule.applies(ctx)
    with pytest.raises(RuleDoesNotApply, match=f"rule {name} does not apply: .*{reason[:20]}"):
        reply_for(rule, ctx)


def test_every_rule_says_why_it_does_not_apply_to_a_parent_without_its_evidence_or_code(seeds_dir):
    """A seed that misses most rules' code (mf_bpr) and no evidence: each rule that stays out names a reason."""
    ctx = RuleContext(_sources(seeds_dir, "mf_bpr"), {}, OVERFIT)
    reasons = {rule.name: rule.why_not(ctx) for rule in RULES}
    applying = {"sampled_softmax", "rating_weighted_positives", "adamw_weight_decay"}
    assert {name for name, reason in reasons.items() if reason is None} == applying
    assert reasons["deeper"] == "model.py defines no class SASRec; model.py has no numeric module constant BLOCKS"
    assert reasons["more_negatives"] == "loss.py has no numeric module constant NEGATIVES"
    assert reasons["wider"] == "the evidence does not show validation holding up (no overfitting)"
    assert reasons["smaller_batches"] == (
        "the evidence does not show training still improving when it ended; "
        "optim.py: training_plan() passes batch_size=256, not 128"
    )


def test_a_rule_that_would_change_nothing_says_so(seeds_dir):
    sources = _sources(seeds_dir, "sasrec_bce")
    ctx = RuleContext({**sources, "loss": sources["loss"].replace("binary_cross_entropy_with_logits", "bce_alias")})
    assert "uses no binary_cross_entropy_with_logits" in (BY_NAME["full_cross_entropy"].why_not(ctx) or "")
    ce = RuleContext(_sources(seeds_dir, "sasrec_ce"))  # the rewrite's target is the parent's loss already
    same = RuleContext({**ce.sources, "loss": ce.sources["loss"] + "\nbinary_cross_entropy_with_logits = None\n"})
    assert BY_NAME["full_cross_entropy"].applies(same)
