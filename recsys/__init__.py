"""The shared recommender runtime: datasets and splits, batches, candidates, training, evaluation."""
