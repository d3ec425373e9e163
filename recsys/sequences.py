"""Per-user event sequences of a prepared dataset, in compressed (CSR) arrays.

Training, evaluation and the baselines all read users' histories from here: the time-ordered
items of each user with the split of each event, so that "the input sequence" and "the target"
of a stage are defined once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from recsys.data.prepared import PreparedDataset

Stage = Literal["valid", "test"]
SPLIT_CODES = {"train": 0, "valid": 1, "test": 2}


@dataclass(frozen=True)
class UserSequences:
    """All users' time-ordered events: ``items[offsets[u]:offsets[u+1]]`` are user ``u``'s items.

    Item ids run from 1 to ``num_items`` (0 pads). ``split`` holds 0/1/2 for train/valid/test.
    """

    num_users: int
    num_items: int
    items: np.ndarray  # int64, events by user then time
    split: np.ndarray  # int8, per event
    ratings: np.ndarray  # float32, per event (NaN where the data has none)
    offsets: np.ndarray  # int64, num_users + 1

    @classmethod
    def from_prepared(cls, prepared: PreparedDataset) -> UserSequences:
        frame = prepared.interactions
        users = frame["user_idx"].to_numpy(np.int64)
        counts = np.bincount(users, minlength=prepared.num_users)
        offsets = np.concatenate([[0], np.cumsum(counts)])
        split = frame["split"].astype(str).map(SPLIT_CODES).to_numpy(np.int8)
        ratings = frame["rating"].to_numpy(np.float32, na_value=np.nan)
        items = frame["item_idx"].to_numpy(np.int64)
        return cls(prepared.num_users, prepared.num_items, items, split, ratings, offsets)

    def head(self, num_users: int) -> UserSequences:
        """The first ``num_users`` users (the same catalogue): a slice for quick smoke runs."""
        if num_users >= self.num_users:
            return self
        end = self.offsets[num_users]
        return UserSequences(
            num_users,
            self.num_items,
            self.items[:end],
            self.split[:end],
            self.ratings[:end],
            self.offsets[: num_users + 1],
        )

    def without_stage(self, stage: Stage) -> UserSequences:
        """The same users with ``stage``'s events removed: the inputs of that stage without its targets."""
        keep = self.split != SPLIT_CODES[stage]
        users = np.repeat(np.arange(self.num_users), np.diff(self.offsets))[keep]
        offsets = np.concatenate([[0], np.cumsum(np.bincount(users, minlength=self.num_users))]).astype(np.int64)
        return UserSequences(
            self.num_users, self.num_items, self.items[keep], self.split[keep], self.ratings[keep], offsets
        )

    def last_train_event_as(self, stage: Stage) -> UserSequences:
        """Each user's last training event relabelled as ``stage``: a stand-in target where the real
        held-out ones are absent (the sandbox's view of the data), for diagnosis only."""
        split = self.split.copy()
        ends = self.offsets[1:][np.diff(self.offsets) > 1] - 1  # users with one event keep it as input
        split[ends[split[ends] == SPLIT_CODES["train"]]] = SPLIT_CODES[stage]
        return UserSequences(self.num_users, self.num_items, self.items, split, self.ratings, self.offsets)

    def events(self, user: int) -> tuple[np.ndarray, np.ndarray]:
        start, end = self.offsets[user], self.offsets[user + 1]
        return self.items[start:end], self.split[start:end]

    def train_positions(self, user: int) -> np.ndarray:
        """Indices (into the event arrays) of the user's training events, in time order."""
        start, end = self.offsets[user], self.offsets[user + 1]
        return start + np.flatnonzero(self.split[start:end] == 0)

    def history(self, user: int, stage: Stage | Literal["train"]) -> np.ndarray:
        """The items a model may see when predicting ``stage``: train events for valid, train and
        valid events for test (and all train events for training)."""
        items, split = self.events(user)
        limit = {"train": 0, "valid": 0, "test": 1}[stage]
        return items[split <= limit]

    def targets(self, user: int, stage: Stage) -> np.ndarray:
        items, split = self.events(user)
        return items[split == SPLIT_CODES[stage]]

    def train_counts(self) -> np.ndarray:
        """Interactions per item in the training events (index 0 unused): popularity as seen in training."""
        return np.bincount(self.items[self.split == 0], minlength=self.num_items + 1)

    def train_lengths(self) -> np.ndarray:
        """Training events per user, which define the light / medium / heavy segments."""
        users = np.repeat(np.arange(self.num_users), np.diff(self.offsets))
        return np.bincount(users[self.split == 0], minlength=self.num_users)
