"""Tune children: TPE draws inside the declared space, warm-started from the relatives' trials; the child loads."""

from __future__ import annotations

import math
import re
import statistics

import numpy as np
import pytest
import torch
from optuna.trial import TrialState

from offline_agent.evaluator import EvaluationConfig, evaluate_candidate, static_check
from offline_agent.evolve import Evolution, EvolutionConfig
from offline_agent.program_db import Program
from offline_agent.records import EditChoice, Feedback
from offline_agent.rulebook.catalogue import RULES
from offline_agent.search_space import NumberRange, current_values, declared_space, with_values
from offline_agent.tuning import EditScheduler, NoTuning, TuningConfig, relatives, study_of, tune
from recsys.batches import make_batch
from recsys.candidate import BLOCKS, load_candidate
from recsys.candidate_api import ModelSpec

SPEC = ModelSpec(num_items=30, num_users=5, max_len=8)


def _program(key: str, blocks: dict[str, str], fitness: float | None = 0.05, status: str | None = None) -> Program:
    status = status or ("evaluated" if fitness is not None else "failed")
    return Program(f"{key}@0", key, 0, None, 0, 0, "initial", blocks, status, fitness, {}, Feedback())  # type: ignore[arg-type]


def _seed(seeds_dir, name: str = "sasrec_bce") -> dict[str, str]:
    return dict(load_candidate(seeds_dir / name).sources)


def test_a_tune_child_draws_inside_the_space_and_writes_exactly_the_drawn_values(seeds_dir):
    parent = _program("seed", _seed(seeds_dir))
    space = declared_space(parent.blocks)
    for seed in range(12):
        sources, feedback = tune(parent, [parent], TuningConfig(), seed)
        assert feedback.tuned is not None and set(feedback.tuned) == {tunable.key for tunable in space}
        assert current_values(sources, space) == feedback.tuned  # read back from the child's code
        for tunable in space:
            value = feedback.tuned[tunable.key]
            if isinstance(tunable.domain, NumberRange):
                assert tunable.domain.low <= value <= tunable.domain.high  # type: ignore[operator]
                if tunable.domain.step is not None:
                    steps = (value - tunable.domain.low) / tunable.domain.step  # type: ignore[operator]
                    assert math.isclose(steps, round(steps), abs_tol=1e-9)
            else:
                assert value in tunable.domain.choices
        assert static_check(sources) is None and sources != parent.blocks
        assert (feedback.rule, feedback.proposer, feedback.edit_kind) == ("tune", "tune", "tune")
        assert feedback.rationale.startswith("tune: ") and " -> " in feedback.rationale
        assert "TPE over 1 trials of relatives, 0 failed" in feedback.rationale
    assert tune(parent, [parent], TuningConfig(), 3) == tune(parent, [parent], TuningConfig(), 3)  # seeded


def test_the_tune_child_loads_and_trains_with_its_drawn_values(seeds_dir, tmp_path):
    parent = _program("seed", _seed(seeds_dir))
    sources, feedback = tune(parent, [parent], TuningConfig(), seed=1)
    for block in BLOCKS:
        (tmp_path / f"{block}.py").write_text(sources[block])
    child = load_candidate(tmp_path)
    tuned = feedback.tuned or {}
    assert child.function("optim", "training_plan")().batch_size == tuned["optim.BATCH_SIZE"]
    torch.manual_seed(0)
    model = child.function("model", "build_model")(SPEC)
    assert len(model.blocks) == tuned["model.BLOCKS"]
    assert model.embed_items(torch.tensor([1, 2])).shape == (2, tuned["model.DIM"])
    optimizer = child.function("optim", "build_optimizer")(model.parameters())
    assert optimizer.param_groups[0]["lr"] == tuned["optim.LEARNING_RATE"]
    assert optimizer.param_groups[0]["weight_decay"] == tuned["optim.WEIGHT_DECAY"]
    batch = make_batch(
        np.array([0, 1]), [np.array([1, 2, 3]), np.array([4, 5])], [np.array([2, 3, 4]), np.array([5, 6])]
    )
    task = child.function("loss", "build_train_task")(SPEC)
    for _ in range(3):
        loss = task(model, batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        assert torch.isfinite(loss)


def _relative(parent: Program, key: str, fitness: float | None, status: str | None = None, **values) -> Program:
    space = declared_space(parent.blocks)
    written = {**(current_values(parent.blocks, space) or {}), **{k.replace("__", "."): v for k, v in values.items()}}
    return _program(key, with_values(parent.blocks, space, written), fitness, status)


def test_the_study_holds_one_trial_per_finished_relative_with_its_values_and_outcome(seeds_dir):
    parent = _program("seed", _seed(seeds_dir), fitness=0.05)
    space = declared_space(parent.blocks)
    family_members = [
        _relative(parent, "a", 0.06, optim__LEARNING_RATE=0.002),
        _relative(parent, "b", 0.04, optim__BATCH_SIZE=256, model__DROPOUT=0.3),
        _relative(parent, "c", 0.07, model__DIM=128),
        _relative(parent, "d", None, optim__LEARNING_RATE=0.009),  # failed: a failed trial
        _relative(parent, "e", None, "pending", optim__LEARNING_RATE=0.004),  # waiting: no trial, but known
    ]
    outsiders = [
        _relative(parent, "f", 0.08, optim__LEARNING_RATE=0.5),  # outside the declared range: no trial
        _program("g", {**parent.blocks, "loss": _seed(seeds_dir, "sasrec_ce")["loss"]}, 0.09),  # another structure
    ]
    programs = [*family_members, *outsiders, family_members[0]]  # a twin on another island is one trial
    family = relatives(parent, programs, space)
    assert [p.content_hash for p in family] == ["seed", "a", "b", "c", "d", "e", "f"]
    study = study_of(family, space, seed=0, startup_trials=4)
    assert len(study.trials) == 5
    complete = {trial.value: trial.params for trial in study.trials if trial.state == TrialState.COMPLETE}
    assert complete == {p.fitness: current_values(p.blocks, space) for p in [parent, *family_members[:3]]}
    assert [t.params["optim.LEARNING_RATE"] for t in study.trials if t.state == TrialState.FAIL] == [0.009]
    _, feedback = tune(parent, programs, TuningConfig(), seed=0)
    assert "TPE over 5 trials of relatives, 1 failed" in feedback.rationale


def test_warm_started_draws_go_where_the_relatives_did_best(seeds_dir):
    parent = _program("seed", _seed(seeds_dir), fitness=0.05)
    best = math.log10(3e-3)
    family = [
        _relative(
            parent, f"r{i}", 0.1 - 0.05 * (exponent - best) ** 2, optim__LEARNING_RATE=float(f"{10**exponent:.4g}")
        )
        for i, exponent in enumerate(np.linspace(-4, -2, 16))
    ]

    def distances(programs: list[Program]) -> float:
        drawn = [tune(parent, programs, TuningConfig(), seed)[1].tuned or {} for seed in range(10)]
        return statistics.median(abs(math.log10(float(d["optim.LEARNING_RATE"])) - best) for d in drawn)  # type: ignore[arg-type]

    assert distances(family) < 0.5 * distances([])  # against TPE's random start-up draws


def _only_batch_size(blocks: dict[str, str]) -> dict[str, str]:
    """mf_bpr with one tunable: its batch size, 256 or 512."""
    declared = re.compile(r"^SEARCH_SPACE = \{[^\n]*\}[^\n]*\n|^SEARCH_SPACE = \{.*?^\}\n", re.MULTILINE | re.DOTALL)
    only = 'SEARCH_SPACE = {"BATCH_SIZE": {"choices": [256, 512]}}\n'
    return {block: declared.sub(only if block == "optim" else "", text) for block, text in blocks.items()}


def test_draws_that_only_repeat_known_values_give_no_child(seeds_dir):
    parent = _program("p", _only_batch_size(_seed(seeds_dir, "mf_bpr")))
    assert [t.key for t in declared_space(parent.blocks)] == ["optim.BATCH_SIZE"]
    assert tune(parent, [parent], TuningConfig(), 0)[1].tuned == {"optim.BATCH_SIZE": 512}
    sibling = _relative(parent, "s", None, "pending", optim__BATCH_SIZE=512)
    with pytest.raises(NoTuning, match="8 draws all repeated known values"):
        tune(parent, [parent, sibling], TuningConfig(), 0)


def test_a_parent_without_a_valid_space_gets_structural_edits_with_the_reason_recorded(seeds_dir):
    scheduler = EditScheduler(TuningConfig(), threads=1)
    blocks = _seed(seeds_dir)
    malformed = _program("m", {**blocks, "optim": blocks["optim"].replace('"LEARNING_RATE": {', '"LR": {')})
    with pytest.raises(NoTuning, match=r"optim\.py: SEARCH_SPACE names LR, but the block has no module constant LR"):
        tune(malformed, [malformed], TuningConfig(), 0)
    choice = scheduler.choose(malformed, [malformed])
    assert choice is not None and choice.kind == "structural"
    assert choice.reason.startswith("the parent's SEARCH_SPACE is malformed: optim.py: SEARCH_SPACE names LR")
    undeclared = _program("u", {block: "" for block in BLOCKS})
    assert scheduler.choose(undeclared, [undeclared]) == EditChoice(
        kind="structural", reason="the parent declares no SEARCH_SPACE", arms=scheduler.choose(undeclared, []).arms
    )
    assert EditScheduler(TuningConfig(enabled=False), threads=1).choose(undeclared, []) is None


def test_the_evolution_loop_alternates_kinds_at_first_and_records_each_choice(prepared_small, seeds_dir, tmp_path):
    config = EvolutionConfig(
        seed_candidate=str(seeds_dir / "sasrec_bce"), run_dir=str(tmp_path / "run"), iterations=3,
        database={"islands": 1}, feedback={"personas": 0},
    )  # fmt: skip
    evolution = Evolution(config, prepared_small.path)
    (seed,) = evolution.start()
    evolution.db.record_evaluation(seed.key, {"ndcg@10": 0.05, "coverage@10": 0.2}, Feedback(seconds=30.0))
    structural, tuned = evolution.propose_generation(2)[0]
    assert structural.feedback.edit_kind == "structural" and structural.feedback.rule not in (None, "tune")
    assert tuned.feedback.edit_kind == "tune" and tuned.feedback.rule == "tune"
    assert [c.feedback.edit_choice.reason for c in (structural, tuned)] == ["cold start: 0 of 1 structural",
                                                                            "cold start: 0 of 1 tune"]  # fmt: skip
    evolution.db.record_evaluation(structural.key, {"ndcg@10": 0.06}, structural.feedback.merged(seconds=100.0))
    evolution.db.record_evaluation(tuned.key, {"ndcg@10": 0.07}, tuned.feedback.merged(seconds=20.0))
    (third,) = evolution.propose_generation(1)[0]
    choice = third.feedback.edit_choice
    assert choice.kind == "tune" and choice.reason.startswith("UCB1: ")  # 0.02 in 20 s beats 0.01 in 100 s
    assert choice.arms["tune"].gain == pytest.approx(0.02) and choice.arms["structural"].cpu_seconds == 100.0
    assert third.parent_key == tuned.key  # the fittest
    assert "TPE over 2 trials of relatives, 0 failed" in third.feedback.rationale  # the seed, the tune child


@pytest.mark.slow
@pytest.mark.integration
def test_a_tune_child_trains_in_the_sandbox(prepared_small, seeds_dir, tmp_path):
    parent = _program("seed", _seed(seeds_dir, "mf_bpr"))
    sources, _ = tune(parent, [parent], TuningConfig(), seed=0)
    config = EvaluationConfig(
        dataset=str(prepared_small.path), smoke_users=30, smoke_seconds=30, train_seconds=60, max_epochs=1,
        overhead_seconds=240, diagnose=False, work_dir=str(tmp_path / "work"),
    )  # fmt: skip
    outcome = evaluate_candidate(sources, config)
    assert outcome.status == "evaluated", outcome.reason
    assert [epoch["epoch"] for epoch in outcome.history] == [1]


def test_a_parent_the_rulebook_has_no_edit_for_is_tuned_instead(prepared_small, seeds_dir, tmp_path):
    config = EvolutionConfig(
        seed_candidate=str(seeds_dir / "sasrec_bce"), run_dir=str(tmp_path / "run"), iterations=1,
        database={"islands": 1}, feedback={"personas": 0}, tuning={"exploration": 0.0},
    )  # fmt: skip
    evolution = Evolution(config, prepared_small.path)
    (seed,) = evolution.start()
    seed = evolution.db.record_evaluation(seed.key, {"ndcg@10": 0.05, "coverage@10": 0.2}, Feedback(seconds=30.0))
    for number, rule in enumerate([*RULES, None]):  # every rule was tried on the seed, and tuning, and all failed
        blocks = {**seed.blocks, "loss": seed.blocks["loss"] + f"# {number}\n"}
        kind = "tune" if rule is None else "structural"
        tried = Feedback(rule=rule.name if rule else "tune", edit_kind=kind, seconds=5.0)
        child = evolution.db.add(blocks, f"tried{number}", seed, 0, feedback=tried)
        evolution.db.record_evaluation(child.key, None, tried, "crashed")
    (child,) = evolution.propose_generation(1)[0]  # both kinds brought nothing: the tie goes to structural
    assert child.feedback.edit_kind == "tune" and child.parent_key == seed.key
    reason = child.feedback.edit_choice.reason
    assert reason.startswith("no structural edit (no rule applies to") and reason.endswith("; tuning instead")
    assert any("no rule applies" in rejection for rejection in evolution.db.get_state("rejections"))
