"""Shape tests of every seed's arches at tiny sizes, one real optimisation step, and the device they build on."""

from __future__ import annotations

import ast

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


@pytest.mark.parametrize("seed", ["sasrec_bce", "sasrec_ce", "mf_bpr"])
def test_seed_models_are_built_on_the_spec_device_and_answer_there(seed, seeds_dir):
    spec = ModelSpec(num_items=30, num_users=5, max_len=8, device="meta")  # shapes and devices, no data
    model = load_candidate(seeds_dir / seed).function("model", "build_model")(spec)
    assert {p.device.type for p in model.parameters()} == {"meta"}
    batch = _batch().to("meta")
    outputs = {"forward": model(batch), "score": model.score(batch), "embed_items": model.embed_items(batch.targets)}
    assert {name: (out.device.type, tuple(out.shape[:2])) for name, out in outputs.items()} == {
        "forward": ("meta", (3, 8)),
        "score": ("meta", (3, SPEC.num_items + 1)),
        "embed_items": ("meta", (3, 8)),
    }


FACTORIES = {
    "arange",
    "empty",
    "eye",
    "full",
    "linspace",
    "ones",
    "rand",
    "randint",
    "randn",
    "randperm",
    "tensor",
    "zeros",
}


@pytest.mark.parametrize("seed", ["sasrec_bce", "sasrec_ce", "mf_bpr"])
def test_seed_blocks_create_no_tensor_on_a_fixed_device(seed, seeds_dir):
    """Every ``torch.<factory>(...)`` names its device (the spec's, or that of a tensor it was given)."""
    fixed = []
    for block, source in load_candidate(seeds_dir / seed).sources.items():
        for node in ast.walk(ast.parse(source)):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and ast.unparse(node.func.value) == "torch"
                and node.func.attr in FACTORIES
                and "device" not in {keyword.arg for keyword in node.keywords}
            ):
                fixed.append(f"{block}.py:{node.lineno}: {ast.unparse(node)}")
            if isinstance(node, ast.Constant) and node.value in ("cpu", "cuda"):
                fixed.append(f"{block}.py:{node.lineno}: {node.value!r}")
    assert fixed == []
