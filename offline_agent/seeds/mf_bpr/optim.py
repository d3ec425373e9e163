"""Adam at 1e-3, larger batches: MF has no sequence cost per user."""

import torch

from recsys.candidate_api import TrainingPlan


def training_plan() -> TrainingPlan:
    return TrainingPlan(epochs=200, batch_size=256, patience=10, max_len=200)


def build_optimizer(params):
    return torch.optim.Adam(params, lr=1e-3)
