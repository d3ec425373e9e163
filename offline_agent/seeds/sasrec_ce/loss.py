"""Full cross-entropy over every item of the catalogue (SASRec+, Klenitskiy & Vasilev 2023)."""

import torch
from torch import nn

from recsys.candidate_api import Batch, ModelSpec, RecModel
from recsys.fast_losses import full_softmax_cross_entropy


class FullCrossEntropy(nn.Module):
    def __init__(self, num_items: int) -> None:
        super().__init__()
        self.num_items = num_items

    def forward(self, model: RecModel, batch: Batch) -> torch.Tensor:
        states = model(batch)
        present = batch.targets > 0
        every_item = model.embed_items(torch.arange(self.num_items + 1, device=states.device))
        return full_softmax_cross_entropy(states[present], every_item, batch.targets[present], batch.weights[present])


def build_train_task(spec: ModelSpec) -> FullCrossEntropy:
    return FullCrossEntropy(spec.num_items)
