"""SASRec (Kang & McAuley, 2018): causal self-attention over a user's item sequence.

Item ids go through a TorchRec ``EmbeddingCollection`` on ``KeyedJaggedTensor`` input, so the
table can be sharded by ``DistributedModelParallel``; the same table scores the output (tied
input and output embeddings, as published).
"""

import math

import torch
from torch import nn
from torchrec import EmbeddingCollection, EmbeddingConfig, KeyedJaggedTensor

from recsys.batches import ITEM_FEATURE, Batch
from recsys.candidate import ModelSpec

DIM = 64
BLOCKS = 2
HEADS = 2
DROPOUT = 0.2


def _init_item_table(weight: torch.Tensor) -> torch.Tensor:
    return nn.init.normal_(weight, std=DIM**-0.5)


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
            device=torch.device("cpu"),
        )
        self.positions = nn.Embedding(spec.max_len, DIM)
        layer = nn.TransformerEncoderLayer(
            DIM, HEADS, dim_feedforward=DIM, dropout=DROPOUT, batch_first=True, norm_first=True
        )
        self.encoder = nn.TransformerEncoder(layer, BLOCKS, enable_nested_tensor=False)
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
        x = items * math.sqrt(DIM) + self.positions.weight[:length]
        causal = nn.Transformer.generate_square_subsequent_mask(length)
        states = self.encoder(self.input_dropout(x), mask=causal, is_causal=True)
        return self.final_norm(states)

    def score(self, batch: Batch) -> torch.Tensor:
        """Scores of every item (column 0 is padding) after each user's last item: ``B X (N+1)``."""
        states = self.forward(batch)
        last = states[torch.arange(states.shape[0]), batch.lengths - 1]
        every_item = torch.arange(self.num_items + 1)
        return last @ self.embed_items(every_item).T


def build_model(spec):
    return SASRec(spec)
