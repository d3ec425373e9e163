"""How much of an item's log training popularity is subtracted from its score."""

POPULARITY_PENALTY = 0.1
