"""What the server knows of users and items: id vocabularies, titles, and each known user's history."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from recsys.data.prepared import PreparedDataset
from recsys.sequences import UserSequences


class UnknownItems(LookupError):
    """Item ids that are not in the catalogue."""

    def __init__(self, ids: list[str]) -> None:
        super().__init__(f"unknown item id(s): {', '.join(ids[:10])}{' ...' if len(ids) > 10 else ''}")
        self.ids = ids


@dataclass(frozen=True)
class ServingCatalog:
    item_ids: np.ndarray  # item idx -> external id (index 0: padding)
    titles: np.ndarray  # item idx -> title
    item_index: dict[str, int]
    user_index: dict[str, int]
    sequences: UserSequences

    @classmethod
    def build(cls, prepared: PreparedDataset) -> ServingCatalog:
        items = prepared.items.sort_values("item_idx")
        ids = np.array(["", *items["item_id"].astype(str)], dtype=object)
        titles = np.array(["", *items["title"].astype(str)], dtype=object) if "title" in items else ids
        users = prepared.users
        user_index = dict(zip(users["user_id"].astype(str), users["user_idx"].astype(int), strict=True))
        item_index = {str(item): int(idx) for idx, item in enumerate(ids) if idx}
        return cls(ids, titles, item_index, user_index, UserSequences.from_prepared(prepared))

    @property
    def num_items(self) -> int:
        return len(self.item_ids) - 1

    def history(self, user_id: str) -> tuple[int, np.ndarray] | None:
        """A known user's index and every item they interacted with, oldest first; None if unknown."""
        user = self.user_index.get(user_id)
        if user is None:
            return None
        return user, self.sequences.events(user)[0]

    def indices(self, item_ids: list[str]) -> np.ndarray:
        unknown = [item for item in item_ids if item not in self.item_index]
        if unknown:
            raise UnknownItems(unknown)
        return np.array([self.item_index[item] for item in item_ids], dtype=np.int64)
