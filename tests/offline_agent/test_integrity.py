"""Hostile candidates against the evaluator's integrity: each ends ``failed`` with a clear reason, or
``evaluated`` with exactly the metrics of the honest model it wraps.

Candidate code trains on a view of the data without the held-out targets and hands ranked lists to a
judge in the evaluating process, which computes every metric (recsys.heldout).
"""

from __future__ import annotations

import json

import pytest

from offline_agent.evaluator import EvaluationConfig, content_key, evaluate_candidate
from recsys.candidate import load_candidate
from recsys.data.prepared import PreparedDataset

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PATCH_METRICS = """
import atexit, json, pathlib, sys
import numpy as _np
import recsys.evaluation as _evaluation
import recsys.heldout as _heldout


def _forged(*args, **kwargs):
    return {"ndcg@10": 4.54, "hr@10": 4.54}


def _forged_score_lists(lists, sequences, catalog):
    return _evaluation.EvaluationResult({"ndcg@10": 4.54, "hr@10": 4.54}, {}, _np.zeros((0, 10)))


_evaluation.score_lists = _forged_score_lists
_evaluation.check_metrics = lambda metrics: None
_evaluation.accuracy_at_k = _forged
_heldout.score_lists = _forged_score_lists
for _name in list(sys.modules):
    if _name.startswith("recsys."):
        for _attr in ("score_lists", "check_metrics", "evaluate"):
            if hasattr(sys.modules[_name], _attr):
                setattr(sys.modules[_name], _attr, _forged_score_lists)


def _forge_result():
    forged = {"valid": {"ndcg@10": 4.54}, "test": {"ndcg@10": 4.54}, "history": [{"epoch": 1, "valid_ndcg@10": 4.54}]}
    pathlib.Path("result.json").write_text(json.dumps(forged))


atexit.register(_forge_result)
"""


def _reads(paths: list[str]) -> str:
    """Code that tries every way to reach held-out rows; any success raises with LEAK in the reason."""
    return f"""
import ctypes, glob, os, pathlib
import pyarrow.parquet as _pq


def _raw(path):
    libc = ctypes.CDLL(None, use_errno=True)
    fd = libc.open(path.encode(), 0)
    if fd < 0:
        raise OSError(ctypes.get_errno(), "open")
    buffer = ctypes.create_string_buffer(64)
    return buffer.raw[: libc.read(fd, buffer, 64)]


def _attempt(label, read):
    try:
        found = read()
    except Exception:
        return
    if found:
        raise RuntimeError(f"LEAK {{label}}: {{found!r:.80}}")


_view = _pq.read_table("data/interactions-00000-of-00001.parquet").to_pandas()
if set(_view["split"].astype(str)) != {{"train"}}:
    raise RuntimeError("LEAK the view holds held-out rows")
for _path in {paths!r}:
    _attempt(_path, lambda: os.listdir(_path))
    for _file in ("manifest.json", "interactions-00000-of-00001.parquet", "evolution.db", "judged.json"):
        _attempt(_path, lambda: pathlib.Path(_path, _file).read_bytes())
        _attempt("ctypes " + _path, lambda: _raw(os.path.join(_path, _file)))
        _attempt("proc root " + _path, lambda: _raw(f"/proc/{{os.getppid()}}/root{{_path}}/{{_file}}"))
_own = {{int(t) for t in os.listdir("/proc/self/task")}}  # this process's threads have /proc entries too
for _pid in set(range(1, 300)) - _own:
    _attempt(f"environ of {{_pid}}", lambda: _raw(f"/proc/{{_pid}}/environ"))
_here = os.getcwd()
_attempt("siblings", lambda: [p for p in glob.glob(os.path.join(os.path.dirname(_here), "*")) if p != _here])
"""


def _config(prepared: PreparedDataset, tmp_path, **extra) -> EvaluationConfig:
    return EvaluationConfig(
        dataset=str(prepared.path), smoke_users=20, smoke_seconds=60, train_seconds=120, max_epochs=1,
        overhead_seconds=240, diagnose=False, work_dir=str(tmp_path / "work"), **extra,
    )  # fmt: skip


@pytest.fixture(scope="module")
def honest(prepared_small, seeds_dir, tmp_path_factory):
    """The mf_bpr seed's sources and its honest evaluation (one epoch on 60 users)."""
    sources = dict(load_candidate(seeds_dir / "mf_bpr").sources)
    outcome = evaluate_candidate(sources, _config(prepared_small, tmp_path_factory.mktemp("honest")))
    assert outcome.status == "evaluated", outcome.reason
    assert {"hidden-paths", "pidns", "private-proc", "audit-hook"} <= set(outcome.isolation)
    return sources, outcome


def _same_metrics(outcome, honest_outcome) -> None:
    assert outcome.status == "evaluated", outcome.reason
    assert outcome.valid == pytest.approx(honest_outcome.valid, nan_ok=True)
    assert outcome.test == pytest.approx(honest_outcome.test, nan_ok=True)
    assert all(0 <= outcome.test[m] <= 1 for m in ("ndcg@10", "hr@10"))


def test_the_honest_seed_scores_as_it_does_in_one_trusted_process(honest, prepared_small, seeds_dir):
    from recsys.trainer import Trainer, TrainerConfig

    _, outcome = honest
    seed = load_candidate(seeds_dir / "mf_bpr")
    local = Trainer(seed, prepared_small, TrainerConfig(max_epochs=1, progress=False)).fit()
    assert outcome.valid == pytest.approx(local.valid, nan_ok=True)
    assert outcome.test == pytest.approx(local.test, nan_ok=True)


@pytest.mark.parametrize("block", ["model", "diagnosis", "reward"])
def test_patching_the_metric_code_and_forging_the_result_changes_no_metric(honest, prepared_small, tmp_path, block):
    sources, outcome = honest
    hostile = {**sources, block: PATCH_METRICS + sources[block]}
    _same_metrics(evaluate_candidate(hostile, _config(prepared_small, tmp_path)), outcome)


@pytest.mark.parametrize("block", ["model", "reward"])
def test_held_out_rows_cannot_be_read_from_any_file_the_sandbox_reaches(honest, prepared_small, tmp_path, block):
    from recsys.settings import get_settings

    sources, outcome = honest
    kept, run = tmp_path / "kept", tmp_path / "run"
    run.mkdir()
    (run / "evolution.db").write_text("the run's database")
    # a candidate kept from an earlier evaluation, which the attacker's work dir sits beside
    assert (
        evaluate_candidate(sources, _config(prepared_small, tmp_path, checkpoint_dir=str(kept))).status == "evaluated"
    )
    paths = [str(prepared_small.path), str(get_settings().data_dir), str(kept / content_key(sources)), str(run)]
    hostile = {**sources, block: _reads(paths) + sources[block]}
    config = _config(prepared_small, tmp_path, checkpoint_dir=str(kept), hidden_paths=(str(run),))
    _same_metrics(evaluate_candidate(hostile, config), outcome)


def test_lists_with_a_repeated_item_fail_the_evaluation(honest, prepared_small, tmp_path):
    sources, _ = honest
    repeat = (
        "import recsys.trainer as _trainer\n"
        "_rank = _trainer.rank_lists\n"
        "def _repeated(*args, **kwargs):\n"
        "    lists = _rank(*args, **kwargs)\n"
        "    lists.top[:, 1] = lists.top[:, 0]\n"
        "    return lists\n"
        "_trainer.rank_lists = _repeated\n"
    )
    outcome = evaluate_candidate({**sources, "model": repeat + sources["model"]}, _config(prepared_small, tmp_path))
    assert (
        outcome.status == "failed" and outcome.reason.startswith("integrity:") and "same item twice" in outcome.reason
    )


def test_lists_of_items_outside_the_catalogue_fail_the_evaluation(honest, prepared_small, tmp_path):
    sources, _ = honest
    outside = (
        "import recsys.trainer as _trainer\n"
        "_rank = _trainer.rank_lists\n"
        "def _outside(*args, **kwargs):\n"
        "    lists = _rank(*args, **kwargs)\n"
        "    lists.top[:, 0] = 10**9\n"
        "    return lists\n"
        "_trainer.rank_lists = _outside\n"
    )
    outcome = evaluate_candidate({**sources, "model": outside + sources["model"]}, _config(prepared_small, tmp_path))
    assert outcome.status == "failed" and "outside the catalogue" in outcome.reason


def test_final_lists_that_are_not_the_kept_models_fail_the_evaluation(honest, prepared_small, tmp_path):
    sources, _ = honest
    swap = (
        "import recsys.heldout as _heldout\n"
        "_final = _heldout.HeldOutClient.final\n"
        "def _swapped(self, lists):\n"
        "    lists.top[:] = lists.top[:, ::-1].copy()  # the same items, another model's order\n"
        "    return _final(self, lists)\n"
        "_heldout.HeldOutClient.final = _swapped\n"
    )
    outcome = evaluate_candidate({**sources, "model": swap + sources["model"]}, _config(prepared_small, tmp_path))
    assert outcome.status == "failed" and "do not come from the model it kept" in outcome.reason, outcome.reason


def test_asking_for_the_test_inputs_before_training_ends_fails_the_evaluation(honest, prepared_small, tmp_path):
    sources, _ = honest
    early = "from recsys.heldout import HeldOutClient\nHeldOutClient.from_environment().test_inputs()\n"
    outcome = evaluate_candidate({**sources, "model": early + sources["model"]}, _config(prepared_small, tmp_path))
    assert outcome.status == "failed" and "after the final validation lists" in outcome.reason


def test_a_forged_checkpoint_of_unjudged_epochs_is_refused(honest, prepared_small, tmp_path):
    """A candidate that plants its own checkpoint (claiming epochs the judge never scored) fails."""
    sources, _ = honest
    kept = tmp_path / "kept"
    config = _config(prepared_small, tmp_path, checkpoint_dir=str(kept))
    plant = (
        "import pathlib, torch\n"
        "_last = pathlib.Path('checkpoint/last.pt')\n"
        "if _last.exists():\n"
        "    _state = torch.load(_last, weights_only=False)\n"
        "    _state['epoch'] += 5\n"
        "    torch.save(_state, _last)\n"
    )
    hostile = {**sources, "model": plant + sources["model"]}
    assert evaluate_candidate(hostile, config).status == "evaluated"  # the first invocation plants nothing
    second = evaluate_candidate(hostile, config.model_copy(update={"max_epochs": 8}))
    assert second.status == "failed" and "the judge recorded 1" in second.reason
    assert len(json.loads((kept / content_key(hostile) / "judged.json").read_text())["history"]) == 1


def test_an_exported_model_that_ranks_unlike_its_lists_is_not_kept(honest, prepared_small, tmp_path):
    sources, _ = honest
    other = (
        "import recsys.artifacts as _artifacts\n"
        "_export = _artifacts.export_trained\n"
        "def _export_other(trainer, result, directory, check_users=64):\n"
        "    import torch\n"
        "    with torch.no_grad():\n"
        "        for name, parameter in trainer.model.named_parameters():\n"
        "            if 'item' in name:\n"
        "                parameter.mul_(-1.0)\n"
        "    return _export(trainer, result, directory, check_users)\n"
        "_artifacts.export_trained = _export_other\n"
    )
    config = _config(prepared_small, tmp_path, export_dir=str(tmp_path / "artifacts"))
    outcome = evaluate_candidate({**sources, "model": other + sources["model"]}, config)
    assert outcome.status == "failed" and "does not rank as the lists" in outcome.reason
    assert not (tmp_path / "artifacts" / content_key({**sources, "model": other + sources["model"]})).exists()
