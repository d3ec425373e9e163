"""Real training on a small slice of ml-latest-small: determinism, exact resume, budgets, failures."""

from __future__ import annotations

import pytest
import torch

from recsys.candidate import load_candidate
from recsys.precision import DeviceError
from recsys.trainer import Trainer, TrainerConfig, TrainingError

pytestmark = pytest.mark.integration


def _fit(seeds_dir, prepared, name="mf_bpr", **config):
    return Trainer(load_candidate(seeds_dir / name), prepared, TrainerConfig(progress=False, **config)).fit()


def test_training_is_deterministic_under_a_seed(seeds_dir, prepared_small):
    first = _fit(seeds_dir, prepared_small, max_epochs=3, seed=5)
    second = _fit(seeds_dir, prepared_small, max_epochs=3, seed=5)
    assert [h["loss"] for h in first.history] == [h["loss"] for h in second.history]
    assert first.test == second.test
    other = _fit(seeds_dir, prepared_small, max_epochs=3, seed=6)
    assert [h["loss"] for h in other.history] != [h["loss"] for h in first.history]


def test_resuming_from_a_checkpoint_continues_exactly(seeds_dir, prepared_small, tmp_path):
    straight = _fit(seeds_dir, prepared_small, max_epochs=4)
    _fit(seeds_dir, prepared_small, max_epochs=2, checkpoint_dir=tmp_path)
    resumed = _fit(seeds_dir, prepared_small, max_epochs=4, checkpoint_dir=tmp_path, resume=True)
    assert [h["loss"] for h in resumed.history] == [h["loss"] for h in straight.history]
    assert resumed.test == straight.test
    assert len((tmp_path / "epochs.jsonl").read_text().splitlines()) == 4
    assert (tmp_path / "best.pt").exists()


def test_sasrec_ce_learns_and_reports_every_metric(seeds_dir, prepared_small):
    result = _fit(seeds_dir, prepared_small, name="sasrec_ce", max_epochs=6)
    losses = [h["loss"] for h in result.history]
    assert losses[-1] < losses[0]
    best = result.history[result.best_epoch - 1]["valid_ndcg@10"]  # history lines round to 6 decimals
    assert best == max(h["valid_ndcg@10"] for h in result.history) == round(result.valid["ndcg@10"], 6)
    for metric in ("ndcg@5", "hr@20", "mrr@10", "coverage@10", "novelty@10", "gini@10", "ild@10",
                   "calibration_kl@10", "ndcg@10_light", "ndcg@10_heavy"):  # fmt: skip
        assert metric in result.test


def test_a_budget_stops_training_cleanly(seeds_dir, prepared_small):
    planned = load_candidate(seeds_dir / "sasrec_bce").function("optim", "training_plan")().epochs
    result = _fit(seeds_dir, prepared_small, name="sasrec_bce", budget_seconds=0.5)
    # How many epochs fit in the budget depends on the machine; stopping, keeping the best epoch and testing do not.
    assert result.stopped == "budget" and 1 <= result.epochs < planned
    assert 1 <= result.best_epoch <= result.epochs and "ndcg@10" in result.test


def test_row_wise_adagrad_trains_the_tables(seeds_dir, prepared_small, tmp_path):
    load_candidate(seeds_dir / "mf_bpr").write(tmp_path / "mf")
    (tmp_path / "mf" / "optim.py").write_text(
        "import torch\nfrom recsys.candidate_api import TrainingPlan\n\n"
        "def training_plan():\n"
        "    return TrainingPlan(epochs=3, batch_size=64, embedding_optimizer='rowwise_adagrad')\n\n"
        "def build_optimizer(params):\n    return torch.optim.Adam(params, lr=1e-3)\n"
    )
    result = Trainer(load_candidate(tmp_path / "mf"), prepared_small, TrainerConfig(progress=False)).fit()
    assert result.history[-1]["loss"] < result.history[0]["loss"]


def test_a_nan_loss_stops_with_a_clear_error(seeds_dir, prepared_small, tmp_path):
    load_candidate(seeds_dir / "mf_bpr").write(tmp_path / "mf")
    (tmp_path / "mf" / "loss.py").write_text(
        "import torch\n\ndef build_train_task(spec):\n"
        "    return lambda model, batch: model(batch).sum() * float('nan')\n"
    )
    with pytest.raises(TrainingError, match=r"the loss became nan at epoch 1, step 0"):
        Trainer(load_candidate(tmp_path / "mf"), prepared_small, TrainerConfig(progress=False)).fit()


def test_the_budget_applies_to_each_resumed_invocation_not_to_the_total(seeds_dir, prepared_small, tmp_path):
    import torch

    _fit(seeds_dir, prepared_small, max_epochs=1, checkpoint_dir=tmp_path)
    payload = torch.load(tmp_path / "last.pt", weights_only=False)
    payload["seconds"] = 1e6  # earlier sessions took far longer than this invocation's budget
    torch.save(payload, tmp_path / "last.pt")
    resumed = _fit(seeds_dir, prepared_small, max_epochs=2, checkpoint_dir=tmp_path, resume=True, budget_seconds=60)
    assert resumed.epochs == 2 and resumed.stopped == "epochs"
    assert resumed.seconds > 1e6  # the total still counts every session


def test_the_configured_device_reaches_the_model_spec_and_its_tensors(seeds_dir, prepared_small):
    default = Trainer(load_candidate(seeds_dir / "mf_bpr"), prepared_small, TrainerConfig(progress=False)).spec
    assert (default.device, default.item_genres.device.type, default.item_popularity.device.type) == ("cpu",) * 3
    if not torch.cuda.is_available():  # asking for a device the machine lacks is an error, not a fallback
        with pytest.raises(DeviceError, match="no CUDA device"):
            Trainer(load_candidate(seeds_dir / "mf_bpr"), prepared_small, TrainerConfig(device="cuda"))
        return
    spec = Trainer(load_candidate(seeds_dir / "mf_bpr"), prepared_small, TrainerConfig(device="cuda")).spec
    assert (spec.device.split(":")[0], spec.item_genres.device.type, spec.item_popularity.device.type) == ("cuda",) * 3
