"""Building ``Batch``es (``recsys.candidate_api``) of user histories as TorchRec ``KeyedJaggedTensor``s.

A history is the user's most recent ``max_len`` input items, oldest first. In training, the
target at each position is the next item (``targets``, right-padded with 0); in evaluation the
batch carries only the history, and the evaluator holds the targets.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from recsys.candidate_api import ITEM_FEATURE, Batch
from recsys.sequences import UserSequences


def make_batch(
    users: np.ndarray,
    histories: list[np.ndarray],
    targets: list[np.ndarray] | None = None,
    weights: list[np.ndarray] | None = None,
) -> Batch:
    """Assemble a batch; ``targets[i]`` and ``weights[i]`` are as long as ``histories[i]`` when given."""
    lengths = np.fromiter((len(h) for h in histories), dtype=np.int64, count=len(histories))
    width = max(int(lengths.max(initial=0)), 1)
    values = np.concatenate(histories) if histories else np.zeros(0, np.int64)
    padded_targets = np.zeros((len(histories), width), dtype=np.int64)
    padded_weights = np.zeros((len(histories), width), dtype=np.float32)
    for row in range(len(histories) if targets is not None else 0):
        padded_targets[row, : lengths[row]] = targets[row]  # type: ignore[index]
        padded_weights[row, : lengths[row]] = 1.0 if weights is None else weights[row]
    history = KeyedJaggedTensor.from_lengths_sync(
        keys=[ITEM_FEATURE], values=torch.from_numpy(values.astype(np.int64)), lengths=torch.from_numpy(lengths)
    )
    return Batch(
        torch.from_numpy(users.astype(np.int64)),
        history,
        torch.from_numpy(padded_targets),
        torch.from_numpy(padded_weights),
        width,
    )


BUCKET_BATCHES = 16
"""Batches per length bucket: users are sorted by length within pools of this many batches."""


def epoch_order(
    sequences: UserSequences,
    batch_size: int,
    max_len: int,
    generator: np.random.Generator,
    world_size: int = 1,
    bucketed: bool = False,
) -> list[np.ndarray]:
    """The users of each global batch of one epoch (users with at least two training events).

    Plain: a random permutation cut into batches. Bucketed: the permutation is cut into pools of
    ``BUCKET_BATCHES`` batches, each pool is sorted by history length and cut into batches, and the
    batches of all pools are shuffled; a batch then holds users of similar length, so padding it to
    its own longest history wastes little, and every user still comes once per epoch in random company.
    """
    trainable = [u for u in range(sequences.num_users) if len(sequences.train_positions(u)) >= 2]
    order = generator.permutation(np.array(trainable, dtype=np.int64))
    order = order[: len(order) - len(order) % world_size]
    step = batch_size * world_size
    if not bucketed:
        return [order[start : start + step] for start in range(0, len(order), step)]
    lengths = np.minimum(sequences.train_lengths()[order], max_len + 1)
    pool = step * BUCKET_BATCHES
    batches: list[np.ndarray] = []
    for start in range(0, len(order), pool):
        users = order[start : start + pool][np.argsort(lengths[start : start + pool], kind="stable")]
        batches.extend(users[i : i + step] for i in range(0, len(users), step))
    return [batches[i] for i in generator.permutation(len(batches))]


def training_batches(
    sequences: UserSequences,
    batch_size: int,
    max_len: int,
    generator: np.random.Generator,
    event_weights: np.ndarray | None = None,
    rank: int = 0,
    world_size: int = 1,
    bucketed: bool = False,
) -> Iterator[Batch]:
    """One epoch of next-item training batches (users as :func:`epoch_order` draws them).

    The user order is drawn from ``generator`` (so a seed fixes the epoch); ``event_weights``
    (one per event) weight each target. Under ``world_size`` processes every rank draws the same
    order and takes its own ``batch_size`` users of each global batch, so all ranks take the same
    number of steps (up to ``world_size - 1`` users sit out an epoch, different ones each time).
    Each batch is padded to its own longest history.
    """
    for global_batch in epoch_order(sequences, batch_size, max_len, generator, world_size, bucketed):
        users = global_batch[rank::world_size]
        histories, targets, weights = [], [], []
        for user in users:
            positions = sequences.train_positions(int(user))[-(max_len + 1) :]
            histories.append(sequences.items[positions[:-1]])
            targets.append(sequences.items[positions[1:]])
            weights.append(
                np.ones(len(positions) - 1, np.float32) if event_weights is None else event_weights[positions[1:]]
            )
        yield make_batch(users, histories, targets, weights)
