"""Per-user ordering, id vocabularies and train/valid/test splits: pure functions.

Shared by the Beam pipeline and the pandas reference so that both produce the same split.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable
from typing import Literal

import numpy as np

from recsys.data.rows import Record

SplitMethod = Literal["leave_one_out", "random"]
SPLITS = ("train", "valid", "test")


def vocab_sort_key(token: str) -> tuple[int, int, str, str]:
    """Numeric ids in numeric order first, then other tokens in text order (deterministic).

    Numbers compare by length then digits, never through ``int``: an id of any length sorts, and
    ``007`` and ``7`` (distinct text ids) keep a fixed order.
    """
    if token.isascii() and token.isdigit():
        digits = token.lstrip("0") or "0"
        return (0, len(digits), digits, token)
    return (1, 0, "", token)


def build_vocab(tokens: Iterable[str], start: int) -> dict[str, int]:
    """Dense indices in :func:`vocab_sort_key` order; items start at 1 so that 0 can pad sequences."""
    return {token: start + i for i, token in enumerate(sorted(set(tokens), key=vocab_sort_key))}


def time_order(events: Iterable[Record]) -> list[Record]:
    """A user's events by time; ties keep the original row order (file, then line)."""
    return sorted(events, key=lambda e: (e["timestamp"], e["src"], e["line"]))


def _stable_seed(seed: int, user: str) -> int:
    return int.from_bytes(hashlib.blake2b(f"{seed}:{user}".encode(), digest_size=8).digest(), "little")


def _round_half_up(value: float) -> int:
    return math.floor(value + 0.5)


def assign_splits(
    n: int,
    method: SplitMethod,
    user: str,
    ratios: tuple[float, float, float] = (0.8, 0.1, 0.1),
    seed: int = 0,
) -> list[str]:
    """The split of each of a user's ``n`` time-ordered events (``n >= 3``).

    ``leave_one_out``: last event test, second-to-last valid, the rest train (the protocol).
    ``random``: a per-user permutation seeded by ``(seed, user)``, so the result does not depend on
    worker or row order; at least one valid and one test event per user.
    """
    if n < 3:
        raise ValueError(f"user {user} has {n} events; a split needs at least 3")
    if method == "leave_one_out":
        return ["train"] * (n - 2) + ["valid", "test"]
    n_test = max(1, _round_half_up(n * ratios[2]))
    n_valid = max(1, _round_half_up(n * ratios[1]))
    n_train = n - n_valid - n_test
    labels = np.array(["train"] * n_train + ["valid"] * n_valid + ["test"] * n_test)
    order = np.random.default_rng(_stable_seed(seed, user)).permutation(n)
    return [str(label) for label in labels[np.argsort(order)]]
