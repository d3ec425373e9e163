"""Every rule: its evidence triggers it, its edit applies, and the result still trains."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from offline_agent.edits import apply_change, parse_reply
from offline_agent.records import Feedback
from offline_agent.rulebook.rules import PROBE_TEMPLATES, RULES, TEMPLATES, RuleContext, applicable, reply_for
from recsys.batches import make_batch
from recsys.candidate import Candidate, ModelSpec, load_candidate
from recsys.event_table import from_interactions
from tests.offline_agent.histories import history

NUM_ITEMS = 30
SPEC = ModelSpec(
    num_items=NUM_ITEMS,
    num_users=5,
    max_len=8,
    item_popularity=torch.arange(NUM_ITEMS + 1).float(),
    item_genres=(torch.rand(NUM_ITEMS + 1, 4, generator=torch.Generator().manual_seed(0)) > 0.5).float(),
)
OVERFIT = history([0.05, 0.09, 0.08, 0.07, 0.06, 0.05])
IMPROVING = history([0.05, 0.07, 0.09])
BY_NAME = {rule.name: rule for rule in RULES}
EVENTS = from_interactions(
    pd.DataFrame({"user_idx": [0, 0, 1], "item_idx": [1, 2, 3], "timestamp": [10, 20, 30],
                  "rating": [1.0, 5.0, np.nan], "position": [0, 1, 0]})
)  # fmt: skip


def _sources(seeds_dir, seed):
    return dict(load_candidate(seeds_dir / seed).sources)


def _apply(name, ctx):
    rule = BY_NAME[name]
    assert rule.applies(ctx), f"{name} should apply"
    return apply_change(ctx.sources, parse_reply(reply_for(rule, ctx)))


def _trains(tmp_path, sources):
    """The transformed candidate loads, trains one step and scores every item."""
    folder = tmp_path / "candidate"
    Candidate("t", "", sources, {}).write(folder)
    candidate = load_candidate(folder)
    torch.manual_seed(0)
    model = candidate.function("model", "build_model")(SPEC)
    task = candidate.function("loss", "build_train_task")(SPEC)
    optimizer = candidate.function("optim", "build_optimizer")(model.parameters())
    batch = make_batch(
        np.array([0, 1]), [np.array([1, 2, 3]), np.array([4, 5])], [np.array([2, 3, 4]), np.array([5, 6])]
    )
    loss = task(model, batch)
    assert torch.isfinite(loss)
    loss.backward()
    optimizer.step()
    with torch.no_grad():
        assert model.eval().score(batch).shape == (2, NUM_ITEMS + 1)
    weights = candidate.function("reward", "event_weights")(EVENTS)
    assert len(weights) == 3 and np.isfinite(weights).all()
    return candidate


CASES = [
    ("full_cross_entropy", "sasrec_bce", {}, [], "F.cross_entropy"),
    ("sampled_softmax", "sasrec_bce", {}, [], "NEGATIVES = 256"),
    ("sampled_softmax", "mf_bpr", {}, [], "NEGATIVES = 256"),
    ("uniformity_regularizer", "sasrec_ce", {"coverage@10": 0.1}, [], "UNIFORMITY_WEIGHT"),
    ("more_dropout", "sasrec_ce", {}, OVERFIT, "DROPOUT = 0.3"),
    ("adamw_weight_decay", "sasrec_ce", {}, OVERFIT, "AdamW(params, weight_decay=0.01"),
    ("warmup_cosine", "sasrec_ce", {}, IMPROVING, "def build_scheduler"),
    ("deeper", "sasrec_ce", {}, [], "BLOCKS = 3"),
    ("more_heads", "sasrec_ce", {}, [], "HEADS = 4"),
    ("wider", "mf_bpr", {}, [], "DIM = 128"),
    ("smaller_batches", "sasrec_bce", {}, IMPROVING, "batch_size=64"),
    ("higher_learning_rate", "sasrec_bce", {}, IMPROVING, "lr=2e-3"),
    ("genre_side_features", "sasrec_ce", {"calibration_kl@10": 0.9}, [], "genre_projection"),
    ("mmr_reranking", "sasrec_ce", {"ild@10": 0.3}, [], "mmr_rerank("),
    ("popularity_penalty", "sasrec_ce", {"popularity_lift@10": 3.0}, [], "POPULARITY_PENALTY"),
    ("rating_weighted_positives", "sasrec_ce", {}, [], "signal: rating"),
]


@pytest.mark.parametrize(("name", "seed", "metrics", "history", "marker"), CASES)
def test_each_rule_applies_on_its_evidence_and_the_result_trains(
    tmp_path, seeds_dir, name, seed, metrics, history, marker
):
    ctx = RuleContext(_sources(seeds_dir, seed), metrics, history)
    updated = _apply(name, ctx)
    assert marker in "".join(updated.values())
    _trains(tmp_path, updated)


def test_rules_chain_sampled_softmax_then_more_negatives_then_logq(tmp_path, seeds_dir):
    sources = _apply("sampled_softmax", RuleContext(_sources(seeds_dir, "sasrec_bce")))
    assert not BY_NAME["logq_correction"].applies(RuleContext(sources, {"popularity_lift@10": 1.0}))
    sources = _apply("more_negatives", RuleContext(sources))
    assert "NEGATIVES = 512" in sources["loss"]
    sources = _apply("logq_correction", RuleContext(sources, {"popularity_lift@10": 2.4}))
    assert 'SAMPLER = "popularity"' in sources["loss"] and "LOGQ = True" in sources["loss"]
    _trains(tmp_path, sources)


def test_preconditions_follow_the_evidence_and_tried_rules_are_skipped(seeds_dir):
    calm = RuleContext(_sources(seeds_dir, "sasrec_ce"), {"coverage@10": 0.6, "ild@10": 0.8}, IMPROVING[:1])
    names = {rule.name for rule in applicable(calm, set())}
    assert {"deeper", "wider", "rating_weighted_positives"} <= names
    assert not names & {
        "more_dropout",
        "adamw_weight_decay",
        "mmr_reranking",
        "uniformity_regularizer",
        "full_cross_entropy",
    }
    collapsed = RuleContext(calm.sources, calm.metrics, calm.history, Feedback(signals={"embedding_collapse": 0.9}))
    assert "uniformity_regularizer" in {rule.name for rule in applicable(collapsed, set())}
    assert "deeper" not in {rule.name for rule in applicable(calm, {"deeper"})}


def test_a_run_cut_short_by_its_time_budget_gets_convergence_rules_but_no_schedule_longer_than_the_budget(
    seeds_dir,
):
    def names(epochs, stopped):
        ctx = RuleContext(_sources(seeds_dir, "sasrec_bce"), {}, epochs, Feedback(stopped=stopped))
        return {rule.name for rule in applicable(ctx, set())}

    noisy_end = history([0.002, 0.008, 0.016, 0.019, 0.0188], seconds_per_epoch=4.0)
    assert {"higher_learning_rate", "smaller_batches"} <= names(noisy_end, "budget")  # the trend, not the last epoch
    assert "warmup_cosine" not in names(noisy_end, "budget")  # its schedule would end inside the warm-up
    assert "warmup_cosine" in names(noisy_end, "epochs")
    plateau = history([0.01, 0.02, 0.03, 0.0301, 0.0302, 0.0302])
    assert not {"higher_learning_rate", "smaller_batches", "warmup_cosine"} & names(plateau, "epochs")


def test_the_catalogue_holds_at_least_fifteen_distinct_improvements():
    assert len({rule.name for rule in RULES}) >= 15


def test_a_sequence_blind_model_gets_self_attention_and_still_trains(tmp_path, seeds_dir):
    sources = _sources(seeds_dir, "mf_bpr")
    assert not BY_NAME["sequential_model"].applies(RuleContext(sources, {}, [], Feedback()))
    blind = RuleContext(sources, {}, [], Feedback(signals={"sequence_insensitivity": 0.9}))
    updated = _apply("sequential_model", blind)
    assert "class SASRec(" in updated["model"] and updated["loss"] == sources["loss"]
    _trains(tmp_path, updated)


def test_a_complaint_no_probe_measures_gets_a_probe_once(tmp_path, seeds_dir):
    from offline_agent.diagnosis.probes import Probe

    sources = _sources(seeds_dir, "sasrec_ce")
    complaint = Feedback(complaints={"era_mismatch": 0.5}, signals={"popularity_bias": 0.1})
    assert not BY_NAME["probe_for_complaint"].applies(
        RuleContext(sources, {}, [], Feedback(complaints={"era_mismatch": 0.1}))
    )
    updated = _apply("probe_for_complaint", RuleContext(sources, {}, [], complaint))
    assert 'measures="era_mismatch"' in updated["diagnosis"]
    probes = _trains(tmp_path, updated).function("diagnosis", "PROBES")
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
    assert [p.name for p in _trains(tmp_path, updated).function("diagnosis", "PROBES")] == [probe_name]
    assert not rule.applies(RuleContext(updated, {}, [], raised.feedback))


def test_the_most_raised_unmeasured_complaint_gets_its_probe_first(seeds_dir):
    sources = _sources(seeds_dir, "sasrec_ce")
    complaints = {"era_mismatch": 0.4, "obscure_lists": 0.6, "scattered_lists": 0.3, "popularity_bias": 0.9}
    assert RuleContext(sources, {}, [], Feedback(complaints=complaints)).unmeasured_complaint() == "obscure_lists"
    measured = Feedback(complaints=complaints, signals={"obscure_lists": 0.2})
    assert RuleContext(sources, {}, [], measured).unmeasured_complaint() == "era_mismatch"


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
    probes = _trains(tmp_path, updated).function("diagnosis", "PROBES")
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
    plain = [rule.name for rule in applicable(RuleContext(sources), set())]
    assert plain[0] == "sampled_softmax"  # catalogue order without feedback
    blind = RuleContext(sources, {}, [], Feedback(signals={"sequence_insensitivity": 0.9, "weak_ranking_margin": 0.4}))
    ordered = [rule.name for rule in applicable(blind, set())]
    assert ordered[0] == "sequential_model" and ordered[1] == "sampled_softmax"
