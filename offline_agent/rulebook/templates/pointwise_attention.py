"""HSTU's pointwise aggregated attention (Zhai et al., ICML 2024): SiLU weights instead of a softmax."""

import torch
import torch.nn.functional as F
from torch import nn


class PointwiseAttention(nn.Module):
    """Causal attention whose weights are ``silu(q . k) / L``, not normalised over the history, so the
    strength of a user's engagement survives; the aggregate is layer-normed and gated by a fourth
    projection ``u`` (HSTU's ``Norm(A V) * U``). No relative attention bias: ``B X L X D -> B X L X D``."""

    def __init__(self, dim: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.heads = heads
        self.dropout = dropout
        self.uvqk = nn.Linear(dim, 4 * dim)
        self.norm = nn.LayerNorm(dim)
        self.out = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, dim = x.shape
        u, v, q, k = F.silu(self.uvqk(x)).split(dim, dim=-1)
        v, q, k = (part.view(batch, length, self.heads, dim // self.heads).transpose(1, 2) for part in (v, q, k))
        causal = torch.ones(length, length, dtype=torch.bool, device=x.device).tril()
        weights = (F.silu(q @ k.transpose(-1, -2)) / length).masked_fill(~causal, 0.0)
        weights = F.dropout(weights, self.dropout, self.training)
        attended = (weights @ v).transpose(1, 2).reshape(batch, length, dim)
        return self.out(self.norm(attended) * u)
