"""Training throughput of sasrec_bce with TorchRec tables against the same model on torch.nn.Embedding,
and the speed of full-ranking evaluation, on ML-1M.

The plain variant swaps only the item table for a drop-in module backed by ``nn.Embedding`` (same
initial weights, same forward code). Both are timed in alternating blocks of steps in the same
process, so that load from other work on the machine falls on both alike.

    python benchmarks/train_throughput.py [--steps 30] [--block 5]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torchrec.sparse.jagged_tensor import JaggedTensor, KeyedJaggedTensor

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import write_result
from recsys.candidate_api import Batch

SEED = Path(__file__).resolve().parent.parent / "offline_agent" / "seeds" / "sasrec_bce"


class PlainEmbeddingCollection(nn.Module):
    """What ``EmbeddingCollection`` does for one table, with ``torch.nn.Embedding``."""

    def __init__(self, weight: torch.Tensor, feature: str) -> None:
        super().__init__()
        self.table = nn.Embedding.from_pretrained(weight.detach().clone(), freeze=False)  # type: ignore[no-untyped-call]
        self.feature = feature

    def forward(self, features: KeyedJaggedTensor) -> dict[str, JaggedTensor]:
        jagged = features[self.feature]
        return {self.feature: JaggedTensor(values=self.table(jagged.values()), lengths=jagged.lengths())}


def _time_steps(
    model: nn.Module, task: nn.Module, optimizer: torch.optim.Optimizer, batches: list[Batch]
) -> tuple[float, int]:
    model.train()
    examples = 0
    started = time.perf_counter()
    for batch in batches:
        loss = task(model, batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        examples += int((batch.targets > 0).sum())
    return time.perf_counter() - started, examples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="ml-1m")
    parser.add_argument("--steps", type=int, default=30, help="timed steps per variant")
    parser.add_argument("--block", type=int, default=5, help="steps per alternating block")
    args = parser.parse_args()

    from recsys.batches import training_batches
    from recsys.candidate import load_candidate
    from recsys.candidate_api import ITEM_FEATURE, ModelSpec
    from recsys.data.lookup import prepared_dataset
    from recsys.evaluation import ItemCatalog, evaluate
    from recsys.sequences import UserSequences
    from recsys.settings import get_settings

    prepared = prepared_dataset(args.dataset, get_settings())
    sequences = UserSequences.from_prepared(prepared)
    candidate = load_candidate(SEED)
    plan = candidate.function("optim", "training_plan")()
    spec = ModelSpec(prepared.num_items, prepared.num_users, plan.max_len)
    torch.manual_seed(0)
    models = {"torchrec": candidate.function("model", "build_model")(spec)}
    plain = candidate.function("model", "build_model")(spec)
    plain.load_state_dict(models["torchrec"].state_dict())
    plain.item_table = PlainEmbeddingCollection(
        models["torchrec"].item_table.embeddings["item_table"].weight, ITEM_FEATURE
    )
    models["plain_torch"] = plain
    tasks = {name: candidate.function("loss", "build_train_task")(spec) for name in models}
    optimizers = {name: candidate.function("optim", "build_optimizer")(m.parameters()) for name, m in models.items()}

    generator = np.random.default_rng(0)
    batches = list(training_batches(sequences, plan.batch_size, plan.max_len, generator))
    warmup = batches[:2]
    for name, model in models.items():
        _time_steps(model, tasks[name], optimizers[name], warmup)
    seconds = dict.fromkeys(models, 0.0)
    examples = dict.fromkeys(models, 0)
    timed = [batches[2 + i % (len(batches) - 2)] for i in range(args.steps)]
    for start in range(0, args.steps, args.block):
        block = timed[start : start + args.block]
        for name, model in models.items():
            spent, count = _time_steps(model, tasks[name], optimizers[name], block)
            seconds[name] += spent
            examples[name] += count

    catalog = ItemCatalog.build(prepared, sequences)
    started = time.perf_counter()
    evaluate(models["torchrec"].eval().score, sequences, "valid", catalog)
    eval_seconds = time.perf_counter() - started

    torchrec_rate = examples["torchrec"] / seconds["torchrec"]
    plain_rate = examples["plain_torch"] / seconds["plain_torch"]
    figures = {
        "torchrec_examples_per_s": round(torchrec_rate, 1),
        "plain_torch_examples_per_s": round(plain_rate, 1),
        "torchrec_over_plain": round(torchrec_rate / plain_rate, 3),
        "torchrec_seconds_per_step": round(seconds["torchrec"] / args.steps, 3),
        "plain_torch_seconds_per_step": round(seconds["plain_torch"] / args.steps, 3),
        "timed_steps": args.steps,
        "batch_size": plan.batch_size,
        "max_len": plan.max_len,
        "example": "one next-item target position",
        "eval_users_per_s": round(sequences.num_users / eval_seconds, 1),
        "eval_seconds_all_users": round(eval_seconds, 2),
        "threads": torch.get_num_threads(),
    }
    path = write_result("train_throughput", figures, f"{args.dataset} (sasrec_bce)")
    print(path.read_text())


if __name__ == "__main__":
    main()
