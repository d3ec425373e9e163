"""Full cross-entropy over every item of the catalogue (SASRec+, Klenitskiy & Vasilev 2023)."""

import torch
import torch.nn.functional as F
from torch import nn

from recsys.candidate_api import Batch, ModelSpec, RecModel, weighted_mean


class FullCrossEntropy(nn.Module):
    def __init__(self, num_items: int) -> None:
        super().__init__()
        self.num_items = num_items

    def forward(self, model: RecModel, batch: Batch) -> torch.Tensor:
        states = model(batch)
        present = batch.targets > 0
        logits = states[present] @ model.embed_items(torch.arange(self.num_items + 1, device=states.device)).T
        logits[:, 0] = float("-inf")  # the padding id is never a target
        losses = F.cross_entropy(logits, batch.targets[present], reduction="none")
        return weighted_mean(losses, batch.weights[present])


def build_train_task(spec: ModelSpec) -> FullCrossEntropy:
    return FullCrossEntropy(spec.num_items)
