"""Dropout on the attention weights, apart from the rest of the network."""

ATTENTION_DROPOUT = 0.3
