"""Training and evaluation speed of the trainer's fast path against the plain float32 path, on ML-1M.

For ``sasrec_ce`` and ``sasrec_bce`` one epoch is trained twice from the same initial weights: the
baseline path (float32, users in random batches padded to the batch's longest history, the
materialised full-softmax loss: the trainer as it was) and the fast path (the trainer's default
here: bfloat16 autocast on the CPU's matrix units, batches bucketed by length, the chunked
cross-entropy of ``recsys.fast_losses``). Both paths see the same users in the epoch (the same
permutation; the fast path regroups it by length), and they run interleaved in blocks of
``--block`` steps in one process, so load from other work on the machine falls on both alike.
``--fraction`` times that share of each epoch's batches (every path the same share, spread evenly
over the epoch) and scales to the whole epoch; 1.0, the default, times every batch.

The FLOP count (``achieved_gflops``) is the useful work of a step: matrix products only, on real
positions only (padding is not counted), per block ``12 D^2`` per position for the projections
and the feed-forward network plus ``4 D (t+1)`` for causal attention at position ``t``, plus
``2 D (N+1)`` per target for the full-softmax output layer (``4 D`` for BCE's two dot products);
the backward pass counts twice the forward, and recomputation (the chunked loss's) is not counted.
``hardware.matmul_gflops_*`` is a 2048 x 2048 matrix product on all threads, measured in the same run.

Evaluation ranks every item for every user on the validation split with the float32 reproduction's
trained ``sasrec_ce`` (``benchmarks/state/reproduce_ml1m/sasrec_ce/best.pt``) when it is there,
baseline (float32, user order) against fast (bfloat16 body, float32 ranking, users by length).

``converged`` is the progress of ``benchmarks/reproduce_ml1m.py --fast`` (its own state folder);
``--converged-only`` refreshes that section alone from the state folder.

    nice -n 10 python benchmarks/train_speed.py [--fraction 1.0] [--block 4]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import RESULTS, write_result
from recsys.candidate_api import Batch

ROOT = Path(__file__).resolve().parent
SEEDS = ROOT.parent / "offline_agent" / "seeds"
REPRODUCED = ROOT / "state" / "reproduce_ml1m" / "sasrec_ce" / "best.pt"
FAST_STATE = ROOT / "state" / "reproduce_ml1m_fast" / "sasrec_ce"
MODELS = ("sasrec_ce", "sasrec_bce")


def matmul_gflops(dtype: torch.dtype, size: int = 2048, repeats: int = 10) -> float:
    a, b = torch.randn(size, size).to(dtype), torch.randn(size, size).to(dtype)
    a @ b
    started = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * size**3 * repeats / (time.perf_counter() - started) / 1e9


def step_flops(batch: Batch, dim: int, blocks: int, num_items: int, full_softmax: bool) -> float:
    """Useful FLOPs of one training step (forward and backward) on the batch's real positions."""
    lengths = batch.lengths.double()
    per_block = 12 * dim**2 * lengths.sum() + 2 * dim * (lengths * (lengths + 1)).sum()
    targets = float((batch.targets > 0).sum())
    output = targets * (2 * dim * (num_items + 1) if full_softmax else 4 * dim)
    return 3 * float(blocks * per_block + output)


@dataclass
class Path_:
    """One way of training: its model, loss, optimizer, precision and this epoch's batches."""

    model: nn.Module
    task: nn.Module
    optimizer: torch.optim.Optimizer
    autocast: Any
    batches: list[Batch]
    seconds: float = 0.0
    flops: float = 0.0
    steps: int = 0
    loss: float = 0.0

    def train(self, batches: list[Batch], flops: Any) -> None:
        self.model.train()
        started = time.perf_counter()
        for batch in batches:
            with self.autocast():
                loss = self.task(self.model, batch)
            self.optimizer.zero_grad()
            loss.backward()
            self.optimizer.step()
            self.loss += loss.item()
        self.seconds += time.perf_counter() - started
        self.flops += sum(flops(b) for b in batches)
        self.steps += len(batches)


def _evenly(batches: list[Batch], fraction: float) -> list[Batch]:
    count = max(1, round(len(batches) * fraction))
    return [batches[i] for i in np.linspace(0, len(batches) - 1, count).round().astype(int)]


def time_model(name: str, prepared: Any, sequences: Any, fraction: float, block: int) -> dict[str, Any]:
    from recsys.batches import training_batches
    from recsys.candidate import load_candidate
    from recsys.candidate_api import ModelSpec
    from recsys.precision import Precision

    candidate = load_candidate(SEEDS / name)
    plan = candidate.function("optim", "training_plan")()
    spec = ModelSpec(prepared.num_items, prepared.num_users, plan.max_len)
    device = torch.device("cpu")
    precisions = {"baseline": Precision.choose("float32", device), "fast": Precision.choose("auto", device)}
    torch.manual_seed(0)
    initial = candidate.function("model", "build_model")(spec).state_dict()
    paths: dict[str, Path_] = {}
    for key, bucketed in (("baseline", False), ("fast", True)):
        model = candidate.function("model", "build_model")(spec)
        model.load_state_dict(initial)
        batches = list(training_batches(sequences, plan.batch_size, plan.max_len, np.random.default_rng(1), None,
                                        bucketed=bucketed))  # fmt: skip
        paths[key] = Path_(
            model,
            candidate.function("loss", "build_train_task")(spec),
            candidate.function("optim", "build_optimizer")(model.parameters()),
            precisions[key].autocast,
            _evenly(batches, fraction),
        )
        paths[key].train(batches[:2], lambda b: 0.0)  # warm-up (and the fast loss's compilation)
        paths[key].seconds = paths[key].flops = paths[key].loss = 0.0
        paths[key].steps = 0
    module = candidate.modules["model"]
    full = name == "sasrec_ce"

    def flops(batch: Batch) -> float:
        return step_flops(batch, module.DIM, module.BLOCKS, prepared.num_items, full)

    longest = max(len(p.batches) for p in paths.values())
    for start in range(0, longest, block):
        for path in paths.values():
            path.train(path.batches[start : start + block], flops)
    epochs = {key: path.seconds / fraction for key, path in paths.items()}
    return {
        "baseline_epoch_seconds": round(epochs["baseline"], 2),
        "fast_epoch_seconds": round(epochs["fast"], 2),
        "speedup": round(epochs["baseline"] / epochs["fast"], 3),
        "baseline_gflops": round(paths["baseline"].flops / paths["baseline"].seconds / 1e9, 1),
        "achieved_gflops": round(paths["fast"].flops / paths["fast"].seconds / 1e9, 1),
        "fast_precision": precisions["fast"].describe(),
        "timed_steps": {key: path.steps for key, path in paths.items()},
        "mean_padded_length": {
            key: round(float(np.mean([b.max_len for b in p.batches])), 1) for key, p in paths.items()
        },
        "mean_loss": {key: round(path.loss / max(path.steps, 1), 4) for key, path in paths.items()},
    }


def time_evaluation(prepared: Any, sequences: Any) -> dict[str, Any]:
    from recsys.candidate import load_candidate
    from recsys.candidate_api import ModelSpec
    from recsys.evaluation import ItemCatalog, evaluated_users, rank_lists, score_lists
    from recsys.precision import Precision
    from recsys.scoring import Scorer

    candidate = load_candidate(SEEDS / "sasrec_ce")
    plan = candidate.function("optim", "training_plan")()
    model = candidate.function("model", "build_model")(ModelSpec(prepared.num_items, prepared.num_users, plan.max_len))
    trained = REPRODUCED.exists()
    if trained:
        model.load_state_dict(torch.load(REPRODUCED, weights_only=True))
    model.eval()
    catalog = ItemCatalog.build(prepared, sequences)
    device = torch.device("cpu")
    runs = {
        "baseline": (Scorer(model, Precision.choose("float32", device), prepared.num_items), False),
        "fast": (Scorer(model, Precision.choose("auto", device), prepared.num_items), True),
    }
    seconds = dict.fromkeys(runs, 0.0)
    ndcg = {}
    for _ in range(2):  # alternate, twice: the load falls on both
        for key, (scorer, by_length) in runs.items():
            started = time.perf_counter()
            users = evaluated_users(sequences, "valid")
            lists = rank_lists(scorer, sequences, "valid", users, 512, plan.max_len, by_length=by_length)
            metrics = score_lists(lists, sequences, catalog).metrics
            seconds[key] += (time.perf_counter() - started) / 2
            ndcg[key] = round(metrics["ndcg@10"], 5)
    return {
        "baseline_seconds_all_users": round(seconds["baseline"], 2),
        "fast_seconds_all_users": round(seconds["fast"], 2),
        "speedup": round(seconds["baseline"] / seconds["fast"], 3),
        "model": "sasrec_ce, trained by reproduce_ml1m (float32)" if trained else "sasrec_ce, untrained",
        "valid_ndcg10": ndcg,
    }


def converged() -> dict[str, Any]:
    """Progress of ``reproduce_ml1m.py --fast`` on sasrec_ce, read from its state folder."""
    record = (
        json.loads((RESULTS / "reproduce_ml1m_fast.json").read_text())
        if (RESULTS / "reproduce_ml1m_fast.json").exists()
        else {}
    )
    model = record.get("models", {}).get("sasrec_ce")
    lines = (
        [json.loads(line) for line in (FAST_STATE / "epochs.jsonl").read_text().splitlines()]
        if (FAST_STATE / "epochs.jsonl").exists()
        else []
    )
    if not lines:
        return {"finished": False, "epochs": 0, "seconds": 0.0, "source": "no fast reproduction yet"}
    best = max(lines, key=lambda line: line["valid_ndcg@10"])
    figures: dict[str, Any] = {
        "finished": bool(model and model.get("finished")),
        "epochs": lines[-1]["epoch"],
        "seconds": lines[-1]["seconds"],
        "best_epoch": best["epoch"],
        "best_valid_ndcg10": best["valid_ndcg@10"],
        "float32_valid_ndcg10_at_same_epoch": _float32_valid_at(lines[-1]["epoch"]),
        "source": str(FAST_STATE.relative_to(ROOT.parent)),
    }
    if model and model.get("finished"):
        figures["sasrec_ce_fast_test_ndcg10"] = model["test_ndcg10"]
    return figures


def _float32_valid_at(epoch: int) -> float | None:
    path = REPRODUCED.parent / "epochs.jsonl"
    if not path.exists():
        return None
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    return max((line["valid_ndcg@10"] for line in lines if line["epoch"] <= epoch), default=None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="ml-1m")
    parser.add_argument("--fraction", type=float, default=1.0, help="share of each epoch's batches timed")
    parser.add_argument("--block", type=int, default=4, help="steps per alternating block")
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--converged-only", action="store_true", help="refresh the converged section only")
    args = parser.parse_args()

    path = RESULTS / "train_speed.json"
    if args.converged_only:
        record = json.loads(path.read_text())
        record["converged"] = converged()
        path.write_text(json.dumps(record, indent=2) + "\n")
        print(json.dumps(record["converged"], indent=2))
        return

    from recsys.data.lookup import prepared_dataset
    from recsys.sequences import UserSequences
    from recsys.settings import get_settings

    prepared = prepared_dataset(args.dataset, get_settings())
    sequences = UserSequences.from_prepared(prepared)
    load_before = os.getloadavg()
    figures: dict[str, Any] = {
        "hardware": {
            "matmul_gflops_fp32": round(matmul_gflops(torch.float32), 1),
            "matmul_gflops_bf16": round(matmul_gflops(torch.bfloat16), 1),
            "threads": torch.get_num_threads(),
            "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        }
    }
    for name in args.models.split(","):
        figures[name] = time_model(name, prepared, sequences, args.fraction, args.block)
        print(name, json.dumps(figures[name]), flush=True)
    figures["eval"] = time_evaluation(prepared, sequences)
    print("eval", json.dumps(figures["eval"]), flush=True)
    figures["hardware"]["matmul_gflops_bf16_after"] = round(matmul_gflops(torch.bfloat16), 1)
    figures["load_average"] = {
        "before": [round(x, 2) for x in load_before],
        "after": [round(x, 2) for x in os.getloadavg()],
    }
    figures["fraction_timed"] = args.fraction
    figures["converged"] = converged()
    print(write_result("train_speed", figures, f"{args.dataset} (sasrec_ce, sasrec_bce seeds)").read_text())


if __name__ == "__main__":
    main()
