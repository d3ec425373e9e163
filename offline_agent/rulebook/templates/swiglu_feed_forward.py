"""A SwiGLU feed-forward network (Shazeer 2020), as in LiGR and eSASRec's layers."""

import torch
import torch.nn.functional as F
from torch import nn

FEED_FORWARD_MULTIPLIER = 4  # eSASRec's ML-1M setting: the hidden layer is 4 times the embedding width


class SwiGLUFeedForward(nn.Module):
    """The same gated network at every position, ``silu(x W) * (x V)`` then a projection back: ``B X L X D``."""

    def __init__(self, dim: int, dropout: float) -> None:
        super().__init__()
        self.gate = nn.Linear(dim, FEED_FORWARD_MULTIPLIER * dim, bias=False)
        self.value = nn.Linear(dim, FEED_FORWARD_MULTIPLIER * dim, bias=False)
        self.project = nn.Linear(FEED_FORWARD_MULTIPLIER * dim, dim, bias=False)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.project(self.dropout(F.silu(self.gate(x)) * self.value(x)))
