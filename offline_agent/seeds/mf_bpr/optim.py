"""Adam at 1e-3, larger batches: MF has no sequence cost per user."""

import torch

from recsys.candidate_api import TrainingPlan

LEARNING_RATE = 1e-3
BATCH_SIZE = 256
SEARCH_SPACE = {  # what tuning may set (docs/offline_agent.md, "Tuning")
    "LEARNING_RATE": {"low": 1e-4, "high": 1e-2, "log": True},
    "BATCH_SIZE": {"choices": [64, 128, 256, 512, 1024]},
}


def training_plan() -> TrainingPlan:
    return TrainingPlan(epochs=200, batch_size=BATCH_SIZE, patience=10, max_len=200)


def build_optimizer(params):
    return torch.optim.Adam(params, lr=LEARNING_RATE)
