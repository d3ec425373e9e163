"""Experiment arms by salted hash of the user id: stable per user, independent across experiments."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence


def bucket(salt: str, user_id: str) -> float:
    """A uniform number in [0, 1) fixed by ``salt`` and ``user_id``."""
    digest = hashlib.sha256(f"{salt}:{user_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def assign_arm(salt: str, user_id: str, arms: Sequence[str], weights: Sequence[float]) -> str:
    """The arm of ``user_id``: arm i takes the share ``weights[i] / sum(weights)`` of users."""
    if len(arms) != len(weights) or not arms or min(weights) < 0 or sum(weights) <= 0:
        raise ValueError("arms and weights must be non-empty, of equal length, with non-negative weights")
    point = bucket(salt, user_id) * sum(weights)
    cumulative = 0.0
    for arm, weight in zip(arms, weights, strict=True):
        cumulative += weight
        if point < cumulative:
            return arm
    return arms[-1]
