"""The feedback ablation at its smallest: every arm spends its CPU budget, the summary pairs the arms seed by
seed, the evorec arms measure feedback whether or not their proposer sees it, a second invocation goes on
without repeating anything, and one on another processor charges its steps at the speed it measured there."""

from __future__ import annotations

import json
import time

import pytest

from benchmarks.arms import TopRung
from benchmarks.common import cpu
from benchmarks.feedback_ablation import ARMS, Run, ablation_runs, advance, paired, summarise
from benchmarks.processor_speed import processor_name
from benchmarks.race_evorec import EvorecArm
from offline_agent.evaluator import EvaluationConfig
from offline_agent.rungs import RungConfig

pytestmark = [pytest.mark.integration, pytest.mark.slow]
RUNGS = RungConfig(epochs=(1, 2), promote_fraction=0.5)


def test_each_arm_spends_its_budget_and_a_resumed_ablation_repeats_nothing(prepared_small, tmp_path):
    evaluation = EvaluationConfig(dataset=str(prepared_small.path), smoke_users=20, train_seconds=120,
                                  work_dir=str(tmp_path / "work"))  # fmt: skip

    def runs(reference_cpu: dict[str, str | None], budget: float = 1.0) -> list[Run]:
        built, _ = ablation_runs(ARMS, 1, tmp_path, prepared_small.path, evaluation, RUNGS, 2, budget, reference_cpu)
        return built

    first = runs(reference_cpu=cpu())  # the processor the ablation began on
    assert advance(first, parallel=2, deadline=time.monotonic() + 900)
    figures = summarise(first, ARMS, seeds=1)
    for arm in ARMS:
        shown = figures["arms"][arm]
        assert shown["runs"] == 1 and shown["evaluations"] == [1] and shown["cpu_seconds"][0] >= 1.0
        assert 0 <= shown["mean_test_ndcg10"] <= 1 and shown["per_seed"][0]["epochs"] == RUNGS.epochs[0]
    for arm in ("directional", "scalar_only"):  # both measure the seed's signals; only one proposer sees them
        (program,) = next(r for r in first if r.arm == arm).searcher.evolution.db.programs()  # type: ignore[attr-defined]
        assert program.feedback.signals and program.feedback.diagnosis
        assert figures["arms"][arm]["feedback_precision"]["targeted"] == 0  # the seed answered nothing
    assert "optuna" in figures["directional_against"] and "feedback_precision" not in figures["arms"]["optuna"]

    again = runs(reference_cpu=cpu())
    assert advance(again, parallel=2, deadline=time.monotonic() + 900)
    assert summarise(again, ARMS, seeds=1) == figures  # nothing trained twice

    spent = {run.arm: (run.meter.spent(), run.searcher.cpu_seconds()) for run in again}
    elsewhere = runs({"model": "the processor the ablation began on", "capability": "AVX512"},
                     budget=max(charged for charged, _ in spent.values()) + 0.001)  # fmt: skip
    assert advance(elsewhere, parallel=2, deadline=time.monotonic() + 900)
    known = json.loads((tmp_path / "processor_speeds.json").read_text())
    here = known["processors"][processor_name(cpu())]
    seed_run = next(run.searcher for run in elsewhere if run.arm == "directional")
    assert isinstance(seed_run, EvorecArm) and seed_run.first_evaluation_seconds() is not None
    assert known["reference"]["seconds"] == round(seed_run.first_evaluation_seconds() or 0, 2)
    assert here["seconds"] > 0 and here["speed"] == round(known["reference"]["seconds"] / here["seconds"], 4)
    for run in elsewhere:  # each stepped, charged what its CPU time grew by times the speed measured here
        charged, raw = spent[run.arm]
        assert run.searcher.cpu_seconds() > raw and run.meter.spent() >= run.budget
        assert run.meter.spent() - charged == pytest.approx((run.searcher.cpu_seconds() - raw) * here["speed"])
    assert not list(tmp_path.glob("speed-*"))  # the measuring run's scratch folder is gone


def _top(test: float) -> TopRung:
    return TopRung(1, 3, {"ndcg@10": test}, {"ndcg@10": test})


def test_paired_differences_carry_a_t_interval_around_their_mean():
    figures = paired([_top(0.12), _top(0.15), _top(0.11), None], [_top(0.10), _top(0.11), _top(0.12), _top(0.2)])
    assert figures["test_ndcg10_differences"] == [0.02, 0.04, -0.01] and figures["wins"] == 2
    assert figures["mean_difference"] == pytest.approx(0.0167, abs=1e-4)
    low, high = figures["ci95"]
    assert low < figures["mean_difference"] < high and low < 0  # three seeds this noisy cannot exclude zero
    assert 0 < figures["paired_t_p_value"] < 1
