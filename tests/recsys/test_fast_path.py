"""The trainer's fast path keeps quality: the bfloat16 loss and gradients against float32, length
bucketing against the plain epoch, length-ordered evaluation against user order, determinism.

Tolerances: bfloat16 keeps 8 bits of mantissa (relative steps of 2^-8, 0.4%). Products of length
16-64 in bfloat16 with float32 accumulation land within about 1% of float32; the loss is asked to
agree within 1% and every gradient within 5% in norm (cosine above 0.995), on real data and a
real seed model.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from recsys.batches import make_batch, training_batches
from recsys.candidate import load_candidate
from recsys.candidate_api import ModelSpec
from recsys.evaluation import evaluated_users, rank_lists
from recsys.fast_losses import full_softmax_cross_entropy
from recsys.precision import DeviceError, Precision, resolve_device
from recsys.scoring import Scorer
from recsys.sequences import UserSequences
from recsys.trainer import Trainer, TrainerConfig

BF16 = Precision(torch.device("cpu"), torch.bfloat16, "test")
LOSS_TOLERANCE = 0.01
GRADIENT_TOLERANCE = 0.05


def _reference(hidden: torch.Tensor, table: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    logits = hidden @ table.T
    logits[:, 0] = -torch.inf
    losses = torch.nn.functional.cross_entropy(logits, targets, reduction="none")
    return (losses * weights).sum() / weights.sum()


def _relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def test_the_chunked_bf16_cross_entropy_matches_float32_in_value_and_gradients() -> None:
    generator = torch.Generator().manual_seed(0)
    hidden = torch.randn(300, 32, generator=generator, requires_grad=True)
    table = (torch.randn(501, 32, generator=generator) * 0.3).requires_grad_()
    targets = torch.randint(1, 501, (300,), generator=generator)
    weights = torch.rand(300, generator=generator) + 0.5
    expected = _reference(hidden, table, targets, weights)
    expected_grads = torch.autograd.grad(expected, (hidden, table))
    with BF16.autocast():
        fast = full_softmax_cross_entropy(hidden, table, targets, weights, chunk_rows=64)  # five chunks
    fast_grads = torch.autograd.grad(fast, (hidden, table))
    assert fast.dtype == torch.float32
    assert abs(fast.item() / expected.item() - 1) < LOSS_TOLERANCE
    for got, want in zip(fast_grads, expected_grads, strict=True):
        assert got.dtype == torch.float32 and _relative(got, want) < GRADIENT_TOLERANCE
    assert float(fast_grads[1][0].abs().max()) == 0.0  # the padding row is never scored


def test_in_float32_the_helper_computes_what_the_plain_loss_did() -> None:
    generator = torch.Generator().manual_seed(1)
    hidden, table = torch.randn(50, 8, generator=generator), torch.randn(21, 8, generator=generator)
    targets, weights = torch.randint(1, 21, (50,), generator=generator), torch.ones(50)
    assert torch.equal(
        full_softmax_cross_entropy(hidden, table, targets, weights), _reference(hidden, table, targets, weights)
    )


def _first_batch(sequences: UserSequences, max_len: int = 50):
    return next(training_batches(sequences, 32, max_len, np.random.default_rng(0)))


def test_a_seed_models_fast_loss_and_gradients_match_float32(seeds_dir, prepared_small) -> None:
    candidate = load_candidate(seeds_dir / "sasrec_ce")
    spec = ModelSpec(prepared_small.num_items, prepared_small.num_users, 50)
    torch.manual_seed(0)
    model = candidate.function("model", "build_model")(spec).eval()  # no dropout: the same function both ways
    task = candidate.function("loss", "build_train_task")(spec)
    batch = _first_batch(UserSequences.from_prepared(prepared_small))
    results = []
    for precision in (Precision.choose("float32", torch.device("cpu")), BF16):
        model.zero_grad()
        with precision.autocast():
            loss = task(model, batch)
        loss.backward()
        results.append((loss.item(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}))
    (loss32, grads32), (loss16, grads16) = results
    assert abs(loss16 / loss32 - 1) < LOSS_TOLERANCE
    assert grads32.keys() == grads16.keys() and len(grads32) > 10
    for name, want in grads32.items():
        got = grads16[name]
        cosine = float(torch.nn.functional.cosine_similarity(got.flatten(), want.flatten(), dim=0))
        assert _relative(got, want) < GRADIENT_TOLERANCE and cosine > 0.995, name


def _epoch(sequences: UserSequences, bucketed: bool, rank: int = 0, world_size: int = 1, seed: int = 3):
    return list(
        training_batches(sequences, 8, 30, np.random.default_rng(seed), None, rank, world_size, bucketed=bucketed)
    )


def _examples(batches) -> dict[int, tuple[int, ...]]:
    seen: dict[int, tuple[int, ...]] = {}
    for batch in batches:
        for row, user in enumerate(batch.users.tolist()):
            assert user not in seen, f"user {user} came twice in one epoch"
            length = int(batch.lengths[row])
            seen[user] = tuple(batch.targets[row, :length].tolist())
            assert not batch.targets[row, length:].any()
    return seen


def test_length_bucketing_keeps_every_example_exactly_once_per_epoch(prepared_small) -> None:
    sequences = UserSequences.from_prepared(prepared_small)
    plain, bucketed = _epoch(sequences, False), _epoch(sequences, True)
    assert _examples(bucketed) == _examples(plain)  # the same users, each with all its targets, once
    assert len(bucketed) == len(plain)
    for batch in bucketed:
        assert batch.max_len == int(batch.lengths.max())  # padded to its own longest history only
    assert sum(b.max_len * len(b.users) for b in bucketed) < sum(b.max_len * len(b.users) for b in plain)
    assert [b.users.tolist() for b in _epoch(sequences, True, seed=4)] != [b.users.tolist() for b in bucketed]
    ranks = [_examples(_epoch(sequences, True, rank, 2)) for rank in (0, 1)]
    assert not ranks[0].keys() & ranks[1].keys()
    assert len(ranks[0]) + len(ranks[1]) >= len(_examples(plain)) - 1  # one user may sit out under 2 ranks


def test_length_ordered_ranking_returns_the_same_lists_in_user_order(prepared_small) -> None:
    sequences = UserSequences.from_prepared(prepared_small)
    width = sequences.num_items + 1
    users = evaluated_users(sequences, "valid")
    seen: list[np.ndarray] = []

    def favour_low_ids(batch) -> torch.Tensor:  # depends on the user's history, not on the batch
        seen.append(batch.users.numpy())
        return -torch.arange(width, dtype=torch.float32) + batch.lengths[:, None].float() * 0.01

    by_user = rank_lists(favour_low_ids, sequences, "valid", users, batch_size=7)
    seen.clear()
    by_length = rank_lists(favour_low_ids, sequences, "valid", users, batch_size=7, by_length=True)
    order = np.concatenate(seen)
    assert not np.array_equal(order, np.sort(order))  # scored in another order
    assert np.array_equal(by_user.users, by_length.users) and np.array_equal(by_user.top, by_length.top)


def test_the_fast_scorer_ranks_in_float32_and_checks_the_candidates_form(seeds_dir, prepared_small) -> None:
    candidate = load_candidate(seeds_dir / "sasrec_ce")
    spec = ModelSpec(prepared_small.num_items, prepared_small.num_users, 50)
    torch.manual_seed(0)
    model = candidate.function("model", "build_model")(spec).eval()
    sequences = UserSequences.from_prepared(prepared_small)
    batch = make_batch(np.arange(16), [sequences.history(u, "valid")[-50:] for u in range(16)])
    with torch.no_grad():
        exact = model.score(batch)
    scorer = Scorer(model, BF16, prepared_small.num_items)
    fast = scorer(batch)
    assert scorer.dot_product is True and fast.dtype == torch.float32
    assert _relative(fast, exact) < GRADIENT_TOLERANCE
    distinct = [len(torch.unique(row)) for row in fast]
    assert min(distinct) > 0.99 * fast.shape[1]  # float32 scores: no mass of bfloat16 ties

    original = model.score
    model.score = lambda b: original(b) + 100.0 * torch.arange(exact.shape[1])  # not last state . item embedding
    other = Scorer(model, BF16, prepared_small.num_items)
    assert torch.equal(other(batch), model.score(batch)) and other.dot_product is False


def test_precision_and_device_are_chosen_explicitly() -> None:
    cpu = torch.device("cpu")
    assert Precision.choose("float32", cpu).dtype == torch.float32
    assert Precision.choose("bfloat16", cpu).dtype == torch.bfloat16
    if not torch.cuda.is_available():
        with pytest.raises(DeviceError, match="no CUDA device"):
            resolve_device("cuda")
    with pytest.raises(DeviceError, match="expected 'cpu', 'cuda'"):
        resolve_device("gpu please")


@pytest.mark.integration
def test_a_fast_path_run_is_deterministic_for_a_seed_on_one_thread(seeds_dir, prepared_small) -> None:
    threads = torch.get_num_threads()
    config = TrainerConfig(progress=False, max_epochs=2, seed=3, threads=1, precision="bfloat16")
    try:
        runs = [Trainer(load_candidate(seeds_dir / "sasrec_ce"), prepared_small, config).fit() for _ in range(2)]
    finally:
        torch.set_num_threads(threads)
    assert [h["loss"] for h in runs[0].history] == [h["loss"] for h in runs[1].history]
    assert runs[0].test == runs[1].test


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the skip where there is no GPU")
def test_the_gpu_check_skips_cleanly_without_cuda(tmp_path) -> None:
    import json
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu_check.py"
    done = subprocess.run([sys.executable, str(script), str(tmp_path / "gpu.json")], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "no CUDA device" in done.stdout
    assert "skipped" in json.loads((tmp_path / "gpu.json").read_text())
