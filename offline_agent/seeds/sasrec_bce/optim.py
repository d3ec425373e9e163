"""Adam at 1e-3, batches of 128 users, up to 200 epochs with early stopping (the published set-up)."""

import torch

from recsys.candidate_api import TrainingPlan

LEARNING_RATE = 1e-3
BATCH_SIZE = 128
WEIGHT_DECAY = 0.0
SEARCH_SPACE = {  # what tuning may set (docs/offline_agent.md, "Tuning")
    "LEARNING_RATE": {"low": 1e-4, "high": 1e-2, "log": True},
    "BATCH_SIZE": {"choices": [32, 64, 128, 256, 512]},
    "WEIGHT_DECAY": {"choices": [0.0, 1e-6, 1e-5, 1e-4, 1e-3, 1e-2]},
}


def training_plan() -> TrainingPlan:
    return TrainingPlan(epochs=200, batch_size=BATCH_SIZE, patience=20, max_len=200)


def build_optimizer(params):
    return torch.optim.Adam(params, lr=LEARNING_RATE, betas=(0.9, 0.98), weight_decay=WEIGHT_DECAY)
