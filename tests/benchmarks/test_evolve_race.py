"""The equal-compute race of benchmarks/evolve.py at its smallest: every arm stops selecting at its CPU budget,
trains its finals, and a second invocation goes on without repeating anything."""

from __future__ import annotations

import json
import time

import optuna
import pytest

from benchmarks.evolve import SEED, race_arm
from benchmarks.hpo_arm import HyperbandArm
from benchmarks.race_evorec import EvorecArm
from offline_agent.evaluator import EvaluationConfig
from offline_agent.rungs import RungConfig
from recsys.candidate import load_candidate

pytestmark = [pytest.mark.integration, pytest.mark.slow]
RUNGS = RungConfig(epochs=(1, 2), promote_fraction=0.5, finals=1, final_epochs=3)


def _evaluation(prepared, folder):
    return EvaluationConfig(
        dataset=str(prepared.path), smoke_users=20, train_seconds=120, diagnose=False, work_dir=str(folder / "work"),
        checkpoint_dir=str(folder / "checkpoints"),
    )  # fmt: skip


@pytest.mark.parametrize("name", ["random", "evorec"])
def test_an_arm_spends_its_budget_trains_its_finals_and_resumes_without_repeating(prepared_small, tmp_path, name):
    evaluation = _evaluation(prepared_small, tmp_path)
    folder = tmp_path / name

    def build():
        if name == "evorec":
            diagnosed = evaluation.model_copy(update={"diagnose": True})
            return EvorecArm(SEED, prepared_small.path, diagnosed, RUNGS, folder, 0)
        sampler = optuna.samplers.RandomSampler(seed=0)
        return HyperbandArm(name, sampler, dict(load_candidate(SEED).sources), evaluation, RUNGS, folder)

    arm = build()
    budget = 1.0  # CPU-seconds: spent by the first evaluation, so selection stops after it
    figures = race_arm(name, arm, folder, budget, evaluation, RUNGS.final_epochs, time.monotonic() + 900)
    assert figures["selection_finished"] and figures["evaluations"] >= 1
    assert figures["cpu_seconds"] >= budget
    assert figures["finals_finished"], figures["finals"]
    (final,) = figures["finals"].values()
    assert final["epochs"] <= RUNGS.final_epochs and 0 <= final["test_ndcg10"] <= 1
    assert figures["final_valid_ndcg10"] == final["valid_ndcg10"]

    recorded = json.loads((folder / "finals.json").read_text())
    again = race_arm(name, build(), folder, budget, evaluation, RUNGS.final_epochs, time.monotonic() + 900)
    assert again["evaluations"] == figures["evaluations"] and again["cpu_seconds"] == figures["cpu_seconds"]
    assert json.loads((folder / "finals.json").read_text()) == recorded  # nothing trained twice
