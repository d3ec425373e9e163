"""The candidate API: what a candidate's code blocks import, and the contract they keep.

A candidate is a directory of blocks, each a Python file with these functions::

    model.py      build_model(spec: ModelSpec) -> RecModel: an nn.Module on spec.device with
                  forward(batch) -> B X L X D states, embed_items(ids) -> *ids.shape X D
                  (through a TorchRec table on ITEM_FEATURE) and score(batch) -> B X (N+1)
    loss.py       build_train_task(spec: ModelSpec) -> nn.Module, whose forward(model, batch)
                  returns the scalar training loss (the train task owns the loss; weighted_mean
                  averages per-target losses with the batch's weights)
    optim.py      training_plan() -> TrainingPlan, and
                  build_optimizer(params) -> torch.optim.Optimizer
                  (optional) build_scheduler(optimizer, total_steps), stepped after every step
    reward.py     event_weights(events: pd.DataFrame) -> np.ndarray, a training weight per event of
                  the training split's event table (user, item, timestamp, day, session, position,
                  event, rating, genres); with reward_lib it declares REWARD_SPEC (name@version or
                  the YAML) and returns reward_lib.training_weights(REWARD_SPEC, events)
    diagnosis.py  PROBES: a list of diagnosis probes

Shapes: ``B`` users in a batch, ``L`` the batch's padded history length, ``D`` the model's
embedding width, ``N`` the number of items (ids 1..N; id 0 is padding). The trainer owns the loop,
the optimizer steps and the device the batches are on: a block creates its tensors on
``spec.device`` or on the device of the tensors it is given, never on a fixed device.

Numbers a search may tune (learning rate, batch size, width, dropout, negatives, ...) are module
constants that the code reads, declared in the same block by a literal ``SEARCH_SPACE``:
``{"NAME": {"low": number, "high": number, "log": bool, "step": number}}`` (``log`` and ``step``
optional; integers when low, high and step are) or ``{"NAME": {"choices": [value, ...]}}``. Tuning
draws new values for them; write a number as its constant (``lr=LEARNING_RATE``), not inline, or it
cannot be tuned. Example: ``LEARNING_RATE = 1e-3`` and
``SEARCH_SPACE = {"LEARNING_RATE": {"low": 1e-4, "high": 1e-2, "log": True}}``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

import torch
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

__all__ = ["ITEM_FEATURE", "Batch", "ModelSpec", "RecModel", "TrainingPlan", "weighted_mean"]

ITEM_FEATURE = "item_seq"


@dataclass
class Batch:
    """B users' histories, oldest item first, and in training the next item at each position.

    Args:
        users: ``B`` user ids.
        history: KeyedJaggedTensor with the one key ``ITEM_FEATURE``: each user's input items.
        targets: ``B X L`` next-item targets aligned with the right-padded history (0 = none);
            all zeros in evaluation, where the evaluator holds the targets.
        weights: ``B X L`` training weight of each target (from the reward block).
        max_len: ``L``, the padded length: the longest history of the batch.
    """

    users: torch.Tensor
    history: KeyedJaggedTensor
    targets: torch.Tensor
    weights: torch.Tensor
    max_len: int

    @property
    def lengths(self) -> torch.Tensor:
        """``B`` history lengths (each at least 1)."""
        return self.history.lengths()

    def to(self, device: torch.device | str, non_blocking: bool = False) -> Batch:
        """The same batch on ``device``."""
        return Batch(
            self.users.to(device, non_blocking=non_blocking),
            self.history.to(torch.device(device), non_blocking=non_blocking),
            self.targets.to(device, non_blocking=non_blocking),
            self.weights.to(device, non_blocking=non_blocking),
            self.max_len,
        )


@dataclass(frozen=True)
class ModelSpec:
    """What model and loss blocks are told of the data, and where to build.

    Args:
        num_items: ``N``; item ids run 1..N and 0 is padding, so tables have ``N+1`` rows.
        num_users: user ids run 0..num_users-1.
        max_len: the longest history a batch carries (``L <= max_len``).
        item_popularity: ``N+1`` training interaction counts, or None: to debias or to sample
            negatives by popularity.
        item_genres: ``(N+1) X G`` multi-hot genres, or None: genre side information.
        device: where to build parameters and tensors ("cpu", "cuda", ...); the two tensors
            above are on it.
    """

    num_items: int
    num_users: int
    max_len: int
    item_popularity: torch.Tensor | None = None
    item_genres: torch.Tensor | None = None
    device: str = "cpu"


@dataclass(frozen=True)
class TrainingPlan:
    """How a candidate wants to be trained; the trainer enforces time and epoch budgets on top.

    ``patience``: epochs without a better validation score before training stops.
    ``embedding_optimizer='rowwise_adagrad'`` trains the TorchRec tables with TorchRec's fused
    row-wise Adagrad (``embedding_lr``) and everything else with ``build_optimizer``.
    """

    epochs: int = 200
    batch_size: int = 128
    patience: int = 20
    max_len: int = 200
    embedding_optimizer: Literal["dense", "rowwise_adagrad"] = "dense"
    embedding_lr: float = 0.05


class RecModel(Protocol):
    """The model ``build_model`` returns (an ``nn.Module``): states, item embeddings and scores.

    Example::

        model = build_model(ModelSpec(num_items=100, num_users=10, max_len=50))
        model(batch)            # B X L X D
        model.embed_items(ids)  # *ids.shape X D
        model.score(batch)      # B X 101
    """

    def __call__(self, batch: Batch) -> torch.Tensor:
        """``forward`` through ``nn.Module``'s hooks: ``B X L X D``."""
        ...

    def forward(self, batch: Batch) -> torch.Tensor:
        """The state after each history position: ``B X L X D``, right-padded like ``batch.targets``.

        The state at position t predicts target t, the item after it: it may depend on the
        history up to position t only.
        """
        ...

    def embed_items(self, ids: torch.Tensor) -> torch.Tensor:
        """Embeddings of ``ids`` (any shape, values 0..N): ``*ids.shape X D``.

        They come from a TorchRec ``EmbeddingCollection`` table on ``ITEM_FEATURE``, so that
        distributed training can shard it.
        """
        ...

    def score(self, batch: Batch) -> torch.Tensor:
        """A score for every item after each user's whole history: ``B X (N+1)``, higher first.

        Column 0 (padding) and the items of the user's history are masked by the evaluator.
        """
        ...


def weighted_mean(losses: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """The batch loss: per-target losses averaged with the reward block's weights, a scalar.

    Args:
        losses: one loss per present target, any shape (``T`` for the ``T`` targets
            ``batch.targets > 0``).
        weights: the same shape, e.g. ``batch.weights[batch.targets > 0]``.

    A batch whose weights are all zero gives 0, not NaN.
    """
    return (losses * weights).sum() / weights.sum().clamp(min=1e-12)
