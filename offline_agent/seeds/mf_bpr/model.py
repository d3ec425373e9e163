"""Matrix factorisation: a user vector and an item vector per id, scored by their dot product.

Users and items both go through TorchRec ``EmbeddingCollection`` tables. The model ignores the
order of the history; it is the non-sequential reference point of the protocol.
"""

import torch
from torch import nn
from torchrec import EmbeddingCollection, EmbeddingConfig, KeyedJaggedTensor

from recsys.candidate_api import ITEM_FEATURE, Batch, ModelSpec, RecModel

DIM = 64
USER_FEATURE = "user_id"
# what tuning may set (docs/offline_agent.md, "Tuning")
SEARCH_SPACE = {"DIM": {"low": 16, "high": 256, "step": 16}}


def _init_table(weight: torch.Tensor) -> torch.Tensor:
    return nn.init.normal_(weight, std=0.1)


def _lookup(collection: EmbeddingCollection, feature: str, ids: torch.Tensor) -> torch.Tensor:
    flat = ids.reshape(-1)
    kjt = KeyedJaggedTensor.from_lengths_sync(keys=[feature], values=flat, lengths=torch.ones_like(flat))
    return collection(kjt)[feature].values().reshape(*ids.shape, DIM)


class MatrixFactorization(nn.Module):
    """Example::

    model = MatrixFactorization(ModelSpec(num_items=100, num_users=10, max_len=50))
    scores = model.score(batch)  # B X 101
    """

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__()
        self.num_items = spec.num_items
        self.user_table = EmbeddingCollection(
            tables=[EmbeddingConfig(name="user_table", embedding_dim=DIM, num_embeddings=spec.num_users,
                                    feature_names=[USER_FEATURE], init_fn=_init_table)],
            device=torch.device(spec.device),
        )  # fmt: skip
        self.item_table = EmbeddingCollection(
            tables=[EmbeddingConfig(name="item_table", embedding_dim=DIM, num_embeddings=spec.num_items + 1,
                                    feature_names=[ITEM_FEATURE], init_fn=_init_table)],
            device=torch.device(spec.device),
        )  # fmt: skip

    def embed_items(self, ids: torch.Tensor) -> torch.Tensor:
        return _lookup(self.item_table, ITEM_FEATURE, ids)

    def forward(self, batch: Batch) -> torch.Tensor:
        """The user's vector at every history position: ``B X L X D``."""
        users = _lookup(self.user_table, USER_FEATURE, batch.users)
        return users.unsqueeze(1).expand(-1, batch.max_len, -1)

    def score(self, batch: Batch) -> torch.Tensor:
        users = _lookup(self.user_table, USER_FEATURE, batch.users)
        return users @ self.embed_items(torch.arange(self.num_items + 1, device=users.device)).T


def build_model(spec: ModelSpec) -> RecModel:
    return MatrixFactorization(spec)
