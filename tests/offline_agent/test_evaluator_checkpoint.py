"""A training longer than one invocation: the sandboxed evaluation resumes from a kept checkpoint."""

from __future__ import annotations

import json

import pytest

from offline_agent.evaluator import (
    EvaluationConfig,
    EvaluationOutcome,
    content_key,
    evaluate_candidate,
    judged_progress,
    kept_epochs,
    killed_from_outside,
)
from offline_agent.multifidelity import train_on
from recsys.candidate import load_candidate
from recsys.heldout import Judge
from tests.offline_agent.stalling import stalling_candidate

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _config(prepared, tmp_path, epochs: int) -> EvaluationConfig:
    return EvaluationConfig(
        dataset=str(prepared.path), smoke_users=30, smoke_seconds=30, train_seconds=120, max_epochs=epochs,
        overhead_seconds=240, diagnose=False, work_dir=str(tmp_path / "work"), checkpoint_dir=str(tmp_path / "kept"),
    )  # fmt: skip


def test_a_second_invocation_goes_on_from_the_epoch_the_first_ended(prepared_small, seeds_dir, tmp_path):
    sources = dict(load_candidate(seeds_dir / "mf_bpr").sources)
    first = evaluate_candidate(sources, _config(prepared_small, tmp_path, epochs=1))
    assert first.status == "evaluated", first.reason
    kept = tmp_path / "kept" / content_key(sources)
    assert sorted(p.name for p in kept.iterdir()) == ["best.pt", "judged.json", "last.pt", "saved_epoch.json"]

    second = evaluate_candidate(sources, _config(prepared_small, tmp_path, epochs=2))
    assert second.status == "evaluated", second.reason
    assert [h["epoch"] for h in second.history] == [1, 2]
    assert second.history[0] == first.history[0]  # epoch 1 was read back, not trained again
    assert second.history[1]["seconds"] > first.history[0]["seconds"]


def test_a_run_that_fails_leaves_the_kept_checkpoint_as_it_was(prepared_small, seeds_dir, tmp_path):
    sources = dict(load_candidate(seeds_dir / "mf_bpr").sources)
    sources["loss"] = (
        "import pathlib\n"
        "if pathlib.Path('checkpoint/last.pt').exists():  # from the second invocation's training on\n"
        "    pathlib.Path('checkpoint/last.pt').write_bytes(b'corrupted')\n"
        "    raise RuntimeError('hostile candidate')\n"
    ) + sources["loss"]
    assert evaluate_candidate(sources, _config(prepared_small, tmp_path, epochs=1)).status == "evaluated"
    kept = tmp_path / "kept" / content_key(sources) / "last.pt"
    before = kept.read_bytes()
    failed = evaluate_candidate(sources, _config(prepared_small, tmp_path, epochs=2))
    assert failed.status == "failed" and failed.stage == "train" and "hostile candidate" in (failed.reason or "")
    assert kept.read_bytes() == before


def test_a_training_killed_at_its_wall_limit_keeps_the_epochs_the_judge_scored(prepared_small, seeds_dir, tmp_path):
    """A final stopped by its sandbox's wall limit keeps its training: the next invocation goes on from it."""
    sources = stalling_candidate(seeds_dir, saved_epochs=1)
    stalled = _config(prepared_small, tmp_path, epochs=3).model_copy(
        update={"train_seconds": 40, "overhead_seconds": 40, "smoke": False}
    )
    killed = evaluate_candidate(sources, stalled)
    assert killed.status == "failed" and "wall-clock limit" in (killed.reason or ""), killed.reason
    kept = tmp_path / "kept" / content_key(sources)
    assert len(json.loads((kept / "judged.json").read_text())["history"]) == 1
    assert json.loads((kept / "saved_epoch.json").read_text())["epoch"] == 1

    resumed = evaluate_candidate(sources, _config(prepared_small, tmp_path, epochs=2))
    assert resumed.status == "evaluated", resumed.reason
    assert [h["epoch"] for h in resumed.history] == [1, 2]  # epoch 1 came from the killed invocation


def test_a_final_killed_after_keeping_an_epoch_goes_on_from_it_in_the_same_call(prepared_small, seeds_dir, tmp_path):
    """A final whose sandbox is stopped at a limit after saving epochs (a slow leak in candidate code shows
    only hours in) trains on at once in a fresh sandbox, not one invocation of the run later."""
    sources = stalling_candidate(seeds_dir, saved_epochs=1)
    config = _config(prepared_small, tmp_path, epochs=3)
    trained = train_on(sources, config.model_copy(update={"train_seconds": 40, "overhead_seconds": 40}), 3, final=True)
    assert trained is not None
    outcome, seconds = trained
    assert outcome.status == "evaluated", outcome.reason
    assert [h["epoch"] for h in outcome.history] == [1, 2, 3] and outcome.stopped == "epochs"
    assert seconds >= 80  # the killed sandbox's wall limit is counted


def test_a_final_killed_with_nothing_more_kept_or_a_rung_killed_ends(prepared_small, seeds_dir, tmp_path):
    """No epoch saved before the kill: training on would only be killed again, so the failure stands; a rung
    below the finals is one invocation whatever stopped it."""
    limits = {"train_seconds": 20, "overhead_seconds": 30}
    config = _config(prepared_small, tmp_path, epochs=2).model_copy(update=limits)
    for saved_epochs, final in ((0, True), (1, False)):
        trained = train_on(stalling_candidate(seeds_dir, saved_epochs), config, 2, final=final)
        assert trained is not None
        outcome, seconds = trained
        assert killed_from_outside(outcome), outcome.reason
        assert seconds < 100  # one sandbox of a 50 s wall limit, not two


def test_only_a_stop_at_a_limit_counts_as_killed_from_outside_and_kept_progress_is_the_judges_record(tmp_path):
    assert killed_from_outside(EvaluationOutcome("failed", "train", "out_of_memory: memory limit of 8 GiB exceeded"))
    assert killed_from_outside(EvaluationOutcome("failed", "train", "timeout: wall-clock limit of 80 s exceeded"))
    assert not killed_from_outside(EvaluationOutcome("failed", "train", "integrity: timeout: the lists were late"))
    assert not killed_from_outside(EvaluationOutcome("failed", "train", "crashed: RuntimeError: hostile candidate"))
    assert not killed_from_outside(EvaluationOutcome("evaluated", "train", None))

    sources = {"model": "x", "loss": "y"}
    config = EvaluationConfig(dataset="unused", checkpoint_dir=str(tmp_path))
    assert kept_epochs(sources, config) == 0
    kept = tmp_path / content_key(sources)
    kept.mkdir()
    record = [{"ndcg@10": 0.1, "hr@10": 0.2}, {"ndcg@10": 0.3, "hr@10": 0.5}, {"ndcg@10": 0.25, "hr@10": 0.6}]
    (kept / "judged.json").write_text(json.dumps({"history": record}))
    assert kept_epochs(sources, config) == 3
    assert kept_epochs(sources, config.model_copy(update={"checkpoint_dir": None})) == 0

    paused = judged_progress(sources, config, seconds=12.5)  # the judge's record, the trainer's claims absent
    assert paused is not None and paused.status == "evaluated" and paused.stopped == "budget"
    assert paused.valid == record[1] and paused.test is None and paused.best_epoch == 2 and paused.seconds == 12.5
    assert [h["valid_ndcg@10"] for h in paused.history] == [0.1, 0.3, 0.25]

    (kept / "judged.json").write_text("{not json")
    assert kept_epochs(sources, config) == 0 and judged_progress(sources, config, 1.0) is None


def test_a_checkpoint_whose_note_is_behind_the_judge_is_not_kept_after_a_kill(tmp_path):
    """Killed between the judge's scoring of an epoch and the save: the note names the epoch before."""
    from offline_agent.evaluator import _saved_as_judged

    judge = Judge(sequences=None, catalog=None, history=[{"ndcg@10": 0.1}, {"ndcg@10": 0.2}])
    (tmp_path / "saved_epoch.json").write_text(json.dumps({"epoch": 1, "best_epoch": 1}))
    assert not _saved_as_judged(tmp_path, judge, "timeout")
    (tmp_path / "saved_epoch.json").write_text(json.dumps({"epoch": 2, "best_epoch": 2}))
    assert _saved_as_judged(tmp_path, judge, "timeout")
    assert not _saved_as_judged(tmp_path, judge, "crashed")  # a candidate's own failure keeps nothing new
    (tmp_path / "saved_epoch.json").write_text("{not json")
    assert not _saved_as_judged(tmp_path, judge, "timeout")


def test_evaluations_started_side_by_side_on_a_fresh_work_dir_all_run(prepared_small, seeds_dir, tmp_path):
    """The first evaluations of a process load the data and write the sandbox's view once, whichever
    thread comes first; the others wait for it instead of failing on a half-written view."""
    from concurrent.futures import ThreadPoolExecutor

    sources = dict(load_candidate(seeds_dir / "mf_bpr").sources)
    config = _config(prepared_small, tmp_path, epochs=1).model_copy(update={"checkpoint_dir": None})
    with ThreadPoolExecutor(max_workers=3) as pool:
        outcomes = list(pool.map(lambda _: evaluate_candidate(sources, config), range(3)))
    assert [o.status for o in outcomes] == ["evaluated"] * 3, [o.reason for o in outcomes]
    assert len({o.valid["ndcg@10"] for o in outcomes}) == 1
