"""SASRec (Kang & McAuley, 2018): causal self-attention over a user's item sequence.

Item ids go through a TorchRec ``EmbeddingCollection`` on ``KeyedJaggedTensor`` input, so the
table can be sharded by ``DistributedModelParallel``; the same table scores the output (tied
input and output embeddings, as published).
"""

import math

import torch
import torch.nn.functional as F
from torch import nn
from torchrec import EmbeddingCollection, EmbeddingConfig, KeyedJaggedTensor

from recsys.candidate_api import ITEM_FEATURE, Batch, ModelSpec, RecModel

DIM = 64
BLOCKS = 2
HEADS = 2
DROPOUT = 0.2
SEARCH_SPACE = {  # what tuning may set (docs/offline_agent.md, "Tuning")
    "DIM": {"low": 32, "high": 256, "step": 32},
    "BLOCKS": {"low": 1, "high": 4},
    "HEADS": {"choices": [1, 2, 4]},
    "DROPOUT": {"low": 0.0, "high": 0.5, "step": 0.05},
}


def _init_item_table(weight: torch.Tensor) -> torch.Tensor:
    return nn.init.normal_(weight, std=DIM**-0.5)


class CausalSelfAttention(nn.Module):
    """Multi-head self-attention where position t sees positions <= t: ``B X L X D -> B X L X D``."""

    def __init__(self, dim: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.heads = heads
        self.dropout = dropout
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, dim = x.shape
        q, k, v = self.qkv(x).view(batch, length, 3, self.heads, dim // self.heads).permute(2, 0, 3, 1, 4)
        attended = F.scaled_dot_product_attention(
            q, k, v, is_causal=True, dropout_p=self.dropout if self.training else 0.0
        )
        return self.out(attended.transpose(1, 2).reshape(batch, length, dim))


class PointWiseFeedForward(nn.Module):
    """The same two-layer ReLU network at every position: ``B X L X D -> B X L X D``."""

    def __init__(self, dim: int, dropout: float) -> None:
        super().__init__()
        self.layers = nn.Sequential(nn.Linear(dim, dim), nn.ReLU(), nn.Dropout(dropout), nn.Linear(dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class SASRecBlock(nn.Module):
    """Pre-norm residual block: causal attention, then the feed-forward network."""

    def __init__(self, dim: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.attention_norm = nn.LayerNorm(dim)
        self.attention = CausalSelfAttention(dim, heads, dropout)
        self.feed_forward_norm = nn.LayerNorm(dim)
        self.feed_forward = PointWiseFeedForward(dim, dropout)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.dropout(self.attention(self.attention_norm(x)))
        return x + self.dropout(self.feed_forward(self.feed_forward_norm(x)))


class SASRec(nn.Module):
    """Args:
        spec: catalogue size and the longest history.

    Example::

        model = SASRec(ModelSpec(num_items=100, num_users=10, max_len=50))
        states = model(batch)  # B X L X 64
    """

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__()
        self.num_items = spec.num_items
        self.item_table = EmbeddingCollection(
            tables=[
                EmbeddingConfig(
                    name="item_table",
                    embedding_dim=DIM,
                    num_embeddings=spec.num_items + 1,
                    feature_names=[ITEM_FEATURE],
                    init_fn=_init_item_table,
                )
            ],
            device=torch.device(spec.device),
        )
        self.positions = nn.Embedding(spec.max_len, DIM)
        self.blocks = nn.ModuleList(SASRecBlock(DIM, HEADS, DROPOUT) for _ in range(BLOCKS))
        self.input_dropout = nn.Dropout(DROPOUT)
        self.final_norm = nn.LayerNorm(DIM)

    def embed_items(self, ids: torch.Tensor) -> torch.Tensor:
        """Embeddings of ``ids`` (any shape) from the item table: ``*ids.shape X D``."""
        flat = ids.reshape(-1)
        kjt = KeyedJaggedTensor.from_lengths_sync(keys=[ITEM_FEATURE], values=flat, lengths=torch.ones_like(flat))
        return self.item_table(kjt)[ITEM_FEATURE].values().reshape(*ids.shape, DIM)

    def forward(self, batch: Batch) -> torch.Tensor:
        """States after each history position: ``B X L X D`` (right-padded; causal, so padding
        after a user's last item never reaches the real positions)."""
        length = batch.max_len
        items = self.item_table(batch.history)[ITEM_FEATURE].to_padded_dense(length)
        x = self.input_dropout(items * math.sqrt(DIM) + self.positions.weight[:length])
        for block in self.blocks:
            x = block(x)
        return self.final_norm(x)

    def score(self, batch: Batch) -> torch.Tensor:
        """Scores of every item (column 0 is padding) after each user's last item: ``B X (N+1)``."""
        states = self.forward(batch)
        last = states[torch.arange(states.shape[0], device=states.device), batch.lengths - 1]
        every_item = torch.arange(self.num_items + 1, device=last.device)
        return last @ self.embed_items(every_item).T


def build_model(spec: ModelSpec) -> RecModel:
    return SASRec(spec).to(spec.device)
