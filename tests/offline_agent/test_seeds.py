"""Shape tests of every seed's arches at tiny sizes, and one real optimisation step."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from recsys.batches import make_batch
from recsys.candidate import load_candidate
from recsys.candidate_api import ModelSpec
from recsys.distributed import table_parameters

SPEC = ModelSpec(num_items=30, num_users=5, max_len=8)


def _batch():
    histories = [np.array([1, 2, 3]), np.array([4, 5, 6, 7, 8, 9, 10, 11]), np.array([12])]
    targets = [np.array([2, 3, 4]), np.array([5, 6, 7, 8, 9, 10, 11, 12]), np.array([13])]
    return make_batch(np.array([0, 3, 4]), histories, targets)


@pytest.mark.parametrize("seed", ["sasrec_bce", "sasrec_ce", "mf_bpr"])
def test_seed_arches_have_the_contract_shapes_and_train(seed, seeds_dir):
    torch.manual_seed(0)
    candidate = load_candidate(seeds_dir / seed)
    model = candidate.function("model", "build_model")(SPEC)
    task = candidate.function("loss", "build_train_task")(SPEC)
    batch = _batch()
    assert model(batch).shape[:2] == (3, 8)
    assert model.embed_items(torch.tensor([[1, 2], [3, 4]])).shape[:2] == (2, 2)
    assert model.score(batch).shape == (3, SPEC.num_items + 1)
    assert table_parameters(model), "item ids must go through a TorchRec table"

    optimizer = candidate.function("optim", "build_optimizer")(model.parameters())
    loss = task(model, batch)
    assert loss.ndim == 0 and torch.isfinite(loss)
    before = {k: v.clone() for k, v in table_parameters(model).items()}
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    changed = [not torch.equal(before[k], v) for k, v in table_parameters(model).items()]
    assert all(changed)


def test_sasrec_is_causal_a_later_item_never_changes_earlier_states(seeds_dir):
    model = load_candidate(seeds_dir / "sasrec_bce").function("model", "build_model")(SPEC).eval()
    short = make_batch(np.array([0]), [np.array([1, 2, 3, 4])], [np.array([2, 3, 4, 5])])
    longer = make_batch(np.array([0]), [np.array([1, 2, 3, 4, 9])], [np.array([2, 3, 4, 5, 10])])
    with torch.no_grad():
        torch.testing.assert_close(model(short)[0, :4], model(longer)[0, :4])


def test_sasrec_arches_keep_their_shapes(seeds_dir):
    module = load_candidate(seeds_dir / "sasrec_bce").modules["model"]
    x = torch.randn(3, 7, 64)
    assert module.CausalSelfAttention(64, 2, 0.0)(x).shape == (3, 7, 64)
    assert module.PointWiseFeedForward(64, 0.0)(x).shape == (3, 7, 64)
    assert module.SASRecBlock(64, 2, 0.0)(x).shape == (3, 7, 64)
