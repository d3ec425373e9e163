"""A training longer than one invocation: the sandboxed evaluation resumes from a kept checkpoint."""

from __future__ import annotations

import pytest

from offline_agent.evaluator import EvaluationConfig, content_key, evaluate_candidate
from recsys.candidate import load_candidate

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
    assert sorted(p.name for p in kept.iterdir()) == ["best.pt", "judged.json", "last.pt"]  # the judge's record beside

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
