"""Dropout on the input item embeddings, apart from the rest of the network."""

EMBEDDING_DROPOUT = 0.5
