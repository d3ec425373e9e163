"""Binary cross-entropy with one uniformly sampled negative per position (SASRec as published)."""

import torch
import torch.nn.functional as F
from torch import nn

from recsys.candidate_api import Batch, ModelSpec, RecModel, weighted_mean


class BCEOneNegative(nn.Module):
    def __init__(self, num_items: int) -> None:
        super().__init__()
        self.num_items = num_items

    def forward(self, model: RecModel, batch: Batch) -> torch.Tensor:
        states = model(batch)
        present = batch.targets > 0
        hidden = states[present]
        positives = batch.targets[present]
        negatives = torch.randint(1, self.num_items + 1, positives.shape, device=positives.device)
        positive_logits = (hidden * model.embed_items(positives)).sum(-1)
        negative_logits = (hidden * model.embed_items(negatives)).sum(-1)
        losses = F.binary_cross_entropy_with_logits(
            positive_logits, torch.ones_like(positive_logits), reduction="none"
        ) + F.binary_cross_entropy_with_logits(negative_logits, torch.zeros_like(negative_logits), reduction="none")
        return weighted_mean(losses, batch.weights[present])


def build_train_task(spec: ModelSpec) -> BCEOneNegative:
    return BCEOneNegative(spec.num_items)
