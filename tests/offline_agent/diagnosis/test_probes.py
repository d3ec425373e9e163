"""Diagnosis of a really trained candidate: every probe reports, the report round-trips, probes are verified."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from offline_agent.diagnosis.context import DiagnosisContext, item_years, sample_users
from offline_agent.diagnosis.probes import BUILTIN_PROBES, Measurement, probe
from offline_agent.diagnosis.references import MIN_SEPARATION, REFERENCE_PAIRS, verify_probe
from offline_agent.diagnosis.report import DiagnosisReport, candidate_probes, run_diagnosis
from offline_agent.edits import apply_change, parse_reply
from offline_agent.records import Feedback
from offline_agent.rulebook.catalogue import PROBE_TEMPLATES, RULES, TEMPLATES
from offline_agent.rulebook.engine import RuleContext, reply_for
from recsys.candidate import load_candidate
from recsys.trainer import Trainer, TrainerConfig


@pytest.fixture(scope="module")
def trained(prepared_small, seeds_dir):
    trainer = Trainer(
        load_candidate(seeds_dir / "sasrec_ce"), prepared_small, TrainerConfig(max_epochs=3, progress=False)
    )
    trainer.fit()
    return trainer


@pytest.fixture
def ctx(trained, prepared_small):
    users = sample_users(trained.sequences, "valid", 40, seed=0)
    model = trained.model.eval()
    return DiagnosisContext(model, trained.sequences, trained.catalog, item_years(prepared_small), users, 50)


def _load_probes(source: str) -> list:
    namespace: dict = {}
    exec(compile(source, "diagnosis.py", "exec"), namespace)
    return namespace["PROBES"]


def test_every_builtin_probe_reports_numbers_a_severity_and_an_interpretation(ctx):
    report = run_diagnosis(ctx, list_users=[3, 1, 3])
    assert not report.failures
    assert {f.probe for f in report.findings} == {p.name for p in BUILTIN_PROBES}
    for finding in report.findings:
        assert 0.0 <= finding.signal <= 1.0 and finding.values and finding.interpretation
        assert finding.severity == ("severe" if finding.signal >= 0.6 else "mild" if finding.signal >= 0.25 else "none")
    assert sorted(report.lists) == [1, 3] and all(len(items) == 10 for items in report.lists.values())
    history = set(ctx.sequences.history(1, "valid").tolist())
    assert not history & set(report.lists[1])  # consumed items never come back
    again = DiagnosisReport.from_json(report.to_json())
    assert again.signals() == report.signals() and again.lists == report.lists
    markdown = report.to_markdown()
    assert all(p.name in markdown for p in BUILTIN_PROBES)


def test_the_diagnosis_is_deterministic(ctx):
    first, second = run_diagnosis(ctx), run_diagnosis(replace(ctx))
    assert [(f.probe, f.values) for f in first.findings] == [(f.probe, f.values) for f in second.findings]


@pytest.mark.parametrize(
    "name", ["popularity_bias", "low_diversity", "repetition", "sequence_insensitivity", "embedding_collapse"]
)
def test_builtin_probes_separate_the_reference_models_of_what_they_measure(ctx, name):
    builtin = next(p for p in BUILTIN_PROBES if p.measures == name)
    verification, measured = verify_probe(builtin, ctx)
    assert verification.verified, verification.reason
    assert measured is not None and verification.high_signal > verification.low_signal


def test_a_sequence_blind_model_is_diagnosed_as_such(ctx):
    towards, _ = REFERENCE_PAIRS["sequence_insensitivity"](ctx)
    blind = {f.measures: f for f in run_diagnosis(replace(ctx, model=towards)).findings}
    seeing = {f.measures: f for f in run_diagnosis(ctx).findings}
    assert blind["sequence_insensitivity"].signal > seeing["sequence_insensitivity"].signal


@pytest.mark.parametrize(
    ("complaint", "template", "name"),
    [("era_mismatch", "era_gap_probe.py", "era_gap"),
     ("obscure_lists", "obscurity_probe.py", "popularity_shortfall"),
     ("scattered_lists", "genre_focus_probe.py", "off_taste_share")],
)  # fmt: skip
def test_each_rulebook_probe_is_verified_against_its_complaint_and_counted(ctx, complaint, template, name):
    assert PROBE_TEMPLATES[complaint] == template
    probes = _load_probes((TEMPLATES / template).read_text())
    report = run_diagnosis(ctx, probes)
    assert [(v.probe, v.measures, v.verified) for v in report.verifications] == [(name, complaint, True)], report
    assert complaint in report.signals()
    finding = next(f for f in report.findings if f.source == "candidate")
    assert finding.probe == name and finding.values and finding.interpretation


def test_lists_scattered_beyond_taste_are_not_confused_with_obscure_lists(ctx):
    """The scattered-lists reference pair pushes lists off the user's genres without pushing them to obscure
    titles, so the probe of scatter separates it and the probe of obscurity does not."""
    towards, away = REFERENCE_PAIRS["scattered_lists"](ctx)
    (scatter,) = _load_probes((TEMPLATES / "genre_focus_probe.py").read_text())
    (obscurity,) = _load_probes((TEMPLATES / "obscurity_probe.py").read_text())
    separation = {
        found.name: found(replace(ctx, model=towards)).signal - found(replace(ctx, model=away)).signal
        for found in (scatter, obscurity)
    }
    assert separation["off_taste_share"] >= 0.3
    assert separation["popularity_shortfall"] < MIN_SEPARATION


@pytest.mark.parametrize(
    ("template", "unrelated"),
    [("obscurity_probe.py", "repetition"), ("obscurity_probe.py", "popularity_bias"),
     ("genre_focus_probe.py", "repetition"), ("genre_focus_probe.py", "low_diversity")],
)  # fmt: skip
def test_a_rulebook_probe_claimed_for_an_unrelated_property_is_dropped(ctx, template, unrelated):
    (claimed,) = [replace(p, measures=unrelated) for p in _load_probes((TEMPLATES / template).read_text())]
    verification, measured = verify_probe(claimed, ctx)
    assert not verification.verified and measured is None
    assert "does not separate" in verification.reason


def test_probes_the_rulebook_adds_one_by_one_accumulate_and_all_count(ctx, seeds_dir):
    rule = next(r for r in RULES if r.name == "probe_for_complaint")
    sources = {"diagnosis": (seeds_dir / "mf_bpr" / "diagnosis.py").read_text()}
    feedback = Feedback(complaints={"era_mismatch": 0.3, "obscure_lists": 0.5, "scattered_lists": 0.4})
    for _ in PROBE_TEMPLATES:  # the loudest unmeasured complaint first, one probe per generation
        rules_ctx = RuleContext(sources, feedback=feedback)
        assert rule.applies(rules_ctx)
        sources = apply_change(sources, parse_reply(reply_for(rule, rules_ctx)))
    assert not rule.applies(RuleContext(sources, feedback=feedback))
    report = run_diagnosis(ctx, _load_probes(sources["diagnosis"]))
    assert [(v.probe, v.verified) for v in report.verifications] == [
        ("popularity_shortfall", True),
        ("off_taste_share", True),
        ("era_gap", True),
    ], report.verifications
    assert {"era_mismatch", "obscure_lists", "scattered_lists"} <= set(report.signals())


def test_unverifiable_nondeterministic_or_broken_probes_are_dropped_with_a_reason(ctx):
    draws = iter(range(1000))

    @probe("coin", measures="popularity_bias")
    def coin(_):
        return Measurement({"draw": float(next(draws))}, 0.5, "changes every run")

    @probe("constant", measures="popularity_bias")
    def constant(_):
        return Measurement({"value": 1.0}, 0.4, "always the same")

    @probe("mood", measures="user_mood")
    def mood(_):
        return Measurement({}, 0.0, "")

    @probe("crash", measures="repetition")
    def crash(_):
        raise RuntimeError("boom")

    @probe("slow", measures="repetition", budget_seconds=0.0)
    def slow(c):
        return Measurement({"n": float(len(c.users))}, 0.0, "")

    report = run_diagnosis(ctx, [coin, constant, mood, crash, slow, "not a probe"])
    reasons = {v.probe: v.reason for v in report.verifications}
    assert not any(v.verified for v in report.verifications)
    assert "different numbers" in reasons["coin"]
    assert "does not separate" in reasons["constant"]
    assert "no reference pair" in reasons["mood"]
    assert "boom" in reasons["crash"]
    assert "over its budget" in reasons["slow"]
    assert any("PROBES[5]" in failure for failure in report.failures)
    assert not [f for f in report.findings if f.source == "candidate"]
    assert candidate_probes([coin])[0] == [coin]


def test_the_sample_of_users_is_seeded_and_has_targets(trained):
    first = sample_users(trained.sequences, "valid", 20, seed=1)
    assert np.array_equal(first, sample_users(trained.sequences, "valid", 20, seed=1))
    assert not np.array_equal(first, sample_users(trained.sequences, "valid", 20, seed=2))
    assert all(len(trained.sequences.targets(int(u), "valid")) for u in first)
