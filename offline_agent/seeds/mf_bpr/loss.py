"""Bayesian personalised ranking: each training item above one uniformly sampled item."""

import torch
import torch.nn.functional as F
from torch import nn

from recsys.candidate_api import Batch, ModelSpec, RecModel, weighted_mean

L2 = 1e-5
# what tuning may set (docs/offline_agent.md, "Tuning")
SEARCH_SPACE = {"L2": {"low": 1e-7, "high": 1e-3, "log": True}}


class BPR(nn.Module):
    def __init__(self, num_items: int) -> None:
        super().__init__()
        self.num_items = num_items

    def forward(self, model: RecModel, batch: Batch) -> torch.Tensor:
        states = model(batch)
        present = batch.targets > 0
        users = states[present]
        positives = model.embed_items(batch.targets[present])
        negatives = model.embed_items(torch.randint(1, self.num_items + 1, (len(users),), device=users.device))
        margin = (users * positives).sum(-1) - (users * negatives).sum(-1)
        ranking = -weighted_mean(F.logsigmoid(margin), batch.weights[present])
        penalty = L2 * (users.pow(2).sum(-1) + positives.pow(2).sum(-1) + negatives.pow(2).sum(-1)).mean()
        return ranking + penalty


def build_train_task(spec: ModelSpec) -> BPR:
    return BPR(spec.num_items)
