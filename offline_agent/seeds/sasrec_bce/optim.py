"""Adam at 1e-3, batches of 128 users, up to 200 epochs with early stopping (the published set-up)."""

import torch

from recsys.candidate_api import TrainingPlan


def training_plan() -> TrainingPlan:
    return TrainingPlan(epochs=200, batch_size=128, patience=20, max_len=200)


def build_optimizer(params):
    return torch.optim.Adam(params, lr=1e-3, betas=(0.9, 0.98))
