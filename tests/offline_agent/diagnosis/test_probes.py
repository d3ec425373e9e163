"""Diagnosis of a really trained candidate: every probe reports, the report round-trips, probes are verified."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from offline_agent.diagnosis.context import DiagnosisContext, item_years, sample_users
from offline_agent.diagnosis.probes import BUILTIN_PROBES, Measurement, probe
from offline_agent.diagnosis.references import REFERENCE_PAIRS, verify_probe
from offline_agent.diagnosis.report import DiagnosisReport, candidate_probes, run_diagnosis
from offline_agent.rulebook.rules import TEMPLATES
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


def test_the_rulebook_era_probe_is_verified_and_counted(ctx):
    probes = _load_probes((TEMPLATES / "era_gap_probe.py").read_text())
    report = run_diagnosis(ctx, probes)
    assert [v.verified for v in report.verifications] == [True], report.verifications
    assert "era_mismatch" in report.signals()
    assert any(f.source == "candidate" and f.probe == "era_gap" for f in report.findings)


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
