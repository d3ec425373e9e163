"""The equal-compute race of benchmarks/evolve.py at its smallest: every arm stops selecting at its CPU budget,
trains its finals, and a second invocation goes on without repeating anything."""

from __future__ import annotations

import json
import time

import optuna
import pytest

from benchmarks.common import cpu
from benchmarks.evolve import SEED, drop_checkpoints_but, race_arm, train_finals
from benchmarks.hpo_arm import HyperbandArm
from benchmarks.processor_speed import SPEEDS, ProcessorSpeeds
from benchmarks.race_evorec import EvorecArm
from offline_agent.evaluator import EvaluationConfig
from offline_agent.rungs import RungConfig
from recsys.candidate import load_candidate
from tests.offline_agent.stalling import stalling_candidate

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
    speeds = ProcessorSpeeds(tmp_path / SPEEDS, cpu(), lambda: None, lambda: 0.0)  # on the race's own processor
    figures = race_arm(name, arm, folder, budget, evaluation, RUNGS.final_epochs, time.monotonic() + 900, speeds)
    assert figures["selection_finished"] and figures["evaluations"] >= 1
    assert figures["cpu_seconds"] >= budget
    assert figures["finals_finished"], figures["finals"]
    (final,) = figures["finals"].values()
    assert final["epochs"] <= RUNGS.final_epochs and 0 <= final["test_ndcg10"] <= 1
    assert figures["final_valid_ndcg10"] == final["valid_ndcg10"]

    recorded = json.loads((folder / "finals.json").read_text())
    again = race_arm(name, build(), folder, budget, evaluation, RUNGS.final_epochs, time.monotonic() + 900, speeds)
    assert again["evaluations"] == figures["evaluations"] and again["cpu_seconds"] == figures["cpu_seconds"]
    assert json.loads((folder / "finals.json").read_text()) == recorded  # nothing trained twice


def test_a_finalist_another_arm_finished_is_shared_not_trained_again(tmp_path):
    """The HPO arms can pick the same program: the second takes the first's finished record (same program,
    seed and data), marked with who trained it; an unfinished twin is no use."""
    from offline_agent.evaluator import content_key

    sources = dict(load_candidate(SEED).sources)
    key = content_key(sources)
    optuna_folder, random_folder = tmp_path / "optuna", tmp_path / "random"
    optuna_folder.mkdir()
    random_folder.mkdir()
    finished = {"finished": True, "stopped": "patience", "valid_ndcg10": 0.139, "test_ndcg10": 0.1311, "epochs": 85}
    (optuna_folder / "finals.json").write_text(json.dumps({key: {**finished, "finished": False}}))
    no_time = time.monotonic()  # a final that had to train would not start
    evaluation = EvaluationConfig(dataset=str(tmp_path / "unused"))
    assert train_finals(random_folder, [sources], evaluation, 200, no_time, [optuna_folder]) == {}

    (optuna_folder / "finals.json").write_text(json.dumps({key: finished}))
    shared = train_finals(random_folder, [sources], evaluation, 200, no_time, [optuna_folder])
    assert shared == {key: {**finished, "trained_by": "optuna"}}
    assert json.loads((random_folder / "finals.json").read_text()) == shared


def test_an_arms_finalists_train_side_by_side_on_the_shared_workers(prepared_small, tmp_path, monkeypatch):
    """The race's last arm must not train its finals one after another while the other arms' workers idle:
    both finalists train at once on two workers, and the arm's record keeps both."""
    from concurrent.futures import ThreadPoolExecutor

    from offline_agent import multifidelity
    from offline_agent.evaluator import content_key

    evaluation = _evaluation(prepared_small, tmp_path)
    seed = dict(load_candidate(SEED).sources)
    finalists = [seed, {**seed, "optim": seed["optim"] + "\n# the second finalist\n"}]
    spans: list[tuple[float, float]] = []
    train_on = multifidelity.train_on

    def timed(*args, **kwargs):
        began = time.monotonic()
        trained = train_on(*args, **kwargs)
        spans.append((began, time.monotonic()))
        return trained

    monkeypatch.setattr(multifidelity, "train_on", timed)
    (tmp_path / "evorec").mkdir()
    with ThreadPoolExecutor(2) as workers:
        record = train_finals(tmp_path / "evorec", finalists, evaluation, 2, time.monotonic() + 900, (), workers)
    first, second = sorted(spans)
    assert second[0] < first[1]  # the second began before the first ended
    assert set(record) == {content_key(code) for code in finalists}
    assert all(final["finished"] and final["epochs"] <= 2 for final in record.values()), record
    assert json.loads((tmp_path / "evorec" / "finals.json").read_text()) == record


def test_a_final_killed_with_an_epoch_kept_and_no_time_left_shows_its_progress(prepared_small, seeds_dir, tmp_path):
    """A final's sandbox killed at a limit after saving an epoch, with too little time before the deadline to go
    on: its line in finals.json shows the kept epoch (unfinished, no test yet), not the kill's reason."""
    from offline_agent.evaluator import content_key

    sources = stalling_candidate(seeds_dir, saved_epochs=1)
    evaluation = _evaluation(prepared_small, tmp_path).model_copy(update={"overhead_seconds": 40})
    (tmp_path / "optuna").mkdir()
    # the first sandbox gets the 70 s left before the deadline less the overhead; its wall limit ends at the deadline
    record = train_finals(tmp_path / "optuna", [sources], evaluation, 3, time.monotonic() + 110)
    line = record[content_key(sources)]
    assert line["finished"] is False and line["stopped"] == "budget", line
    assert line["epochs"] == 1 and line["best_epoch"] == 1 and line["test_ndcg10"] is None
    judged = json.loads((tmp_path / "checkpoints" / content_key(sources) / "judged.json").read_text())["history"]
    assert line["valid_ndcg10"] == round(judged[0]["ndcg@10"], 4)  # the judge's record of the kept epoch
    assert line["seconds"] >= 100 and "reason" not in line


def test_hpo_finalists_are_distinct_programs_best_first(tmp_path):
    """A configuration drawn again (ML-1M's best was three of optuna's top trials) is one finalist, not three."""
    from offline_agent.evaluator import content_key

    rungs = RungConfig(epochs=(1, 2), promote_fraction=0.5, finals=3, final_epochs=3)
    evaluation = EvaluationConfig(dataset=str(tmp_path / "unused"))
    sources = dict(load_candidate(SEED).sources)
    arm = HyperbandArm("optuna", optuna.samplers.RandomSampler(0), sources, evaluation, rungs, tmp_path / "optuna")
    distributions = arm._distributions()
    first, second, third = ({key: arm.study.ask(distributions).params[key] for key in distributions} for _ in range(3))
    for trial in list(arm.study.get_trials()):
        arm.study.tell(trial.number, state=optuna.trial.TrialState.FAIL)
    for params, values in [(first, {1: 0.05, 2: 0.10}), (first, {1: 0.10, 2: 0.12}), (first, {1: 0.04, 2: 0.09}),
                           (second, {1: 0.03, 2: 0.08}), (third, {1: 0.02})]:  # fmt: skip
        arm.study.add_trial(
            optuna.trial.create_trial(
                params=params, distributions=distributions, intermediate_values=values, value=values[max(values)]
            )
        )

    finalists = arm.finalists()
    assert [content_key(code) for code in finalists] == [
        content_key(arm._sources(params)) for params in (first, second, third)
    ]


def test_a_finished_race_keeps_only_its_finals_checkpoints_and_copes_with_none(tmp_path):
    """A race can end on a machine that never held an arm's checkpoints (they are not committed): nothing to drop."""
    checkpoints = tmp_path / "checkpoints"
    drop_checkpoints_but(checkpoints, {"final"})
    assert not checkpoints.exists()
    for name in ("final", "pruned", "other"):
        (checkpoints / name).mkdir(parents=True)
        (checkpoints / name / "last.pt").write_bytes(b"weights")
    drop_checkpoints_but(checkpoints, {"final"})
    assert [folder.name for folder in checkpoints.iterdir()] == ["final"]
