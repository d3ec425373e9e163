"""Bayesian personalised ranking: each training item above one uniformly sampled item."""

import torch
import torch.nn.functional as F
from torch import nn

from recsys.batches import Batch

L2 = 1e-5


class BPR(nn.Module):
    def __init__(self, num_items: int) -> None:
        super().__init__()
        self.num_items = num_items

    def forward(self, model: nn.Module, batch: Batch) -> torch.Tensor:
        states = model(batch)
        present = batch.targets > 0
        users = states[present]
        positives = model.embed_items(batch.targets[present])
        negatives = model.embed_items(torch.randint(1, self.num_items + 1, (len(users),)))
        margin = (users * positives).sum(-1) - (users * negatives).sum(-1)
        weights = batch.weights[present]
        ranking = -(F.logsigmoid(margin) * weights).sum() / weights.sum().clamp(min=1e-12)
        penalty = L2 * (users.pow(2).sum(-1) + positives.pow(2).sum(-1) + negatives.pow(2).sum(-1)).mean()
        return ranking + penalty


def build_train_task(spec):
    return BPR(spec.num_items)
