"""Sampled softmax: each positive against NEGATIVES shared sampled items, optionally logQ-corrected.

With SAMPLER = "popularity" negatives follow training popularity and LOGQ subtracts their log
sampling probability (Yi et al. 2019), which removes the popularity bias the sampler adds.
"""

import torch
import torch.nn.functional as F
from torch import nn

from recsys.candidate_api import Batch

NEGATIVES = 256
SAMPLER = "uniform"
LOGQ = False


class SampledSoftmax(nn.Module):
    def __init__(self, num_items: int, popularity: torch.Tensor | None) -> None:
        super().__init__()
        self.num_items = num_items
        counts = torch.ones(num_items + 1) if popularity is None else torch.as_tensor(popularity).float() + 1.0
        counts[0] = 0.0
        uniform = torch.ones(num_items + 1)
        uniform[0] = 0.0
        weights = counts if SAMPLER == "popularity" else uniform
        self.register_buffer("probabilities", weights / weights.sum())

    def forward(self, model: nn.Module, batch: Batch) -> torch.Tensor:
        states = model(batch)
        present = batch.targets > 0
        hidden = states[present]
        positives = batch.targets[present]
        negatives = torch.multinomial(self.probabilities, NEGATIVES, replacement=True)
        positive_logits = (hidden * model.embed_items(positives)).sum(-1, keepdim=True)
        negative_logits = hidden @ model.embed_items(negatives).T
        if LOGQ:
            positive_logits = positive_logits - torch.log(self.probabilities[positives]).unsqueeze(-1)
            negative_logits = negative_logits - torch.log(self.probabilities[negatives])
        collisions = negatives.unsqueeze(0) == positives.unsqueeze(1)
        negative_logits = negative_logits.masked_fill(collisions, float("-inf"))
        logits = torch.cat([positive_logits, negative_logits], dim=1)
        losses = F.cross_entropy(logits, torch.zeros(len(logits), dtype=torch.long), reduction="none")
        weights = batch.weights[present]
        return (losses * weights).sum() / weights.sum().clamp(min=1e-12)


def build_train_task(spec):
    return SampledSoftmax(spec.num_items, spec.item_popularity)
