"""Maximal marginal relevance (Carbonell & Goldstein 1998): the top of each list re-ranked for genre diversity."""

import torch

MMR_LAMBDA = 0.8
MMR_POOL = 50


def mmr_rerank(scores: torch.Tensor, genres: torch.Tensor, k: int = 10) -> torch.Tensor:
    """Re-order each row's best MMR_POOL items greedily by relevance minus genre redundancy."""
    pool = scores.topk(min(MMR_POOL, scores.shape[1]), dim=1)
    relevance = torch.softmax(pool.values, dim=1)
    features = torch.nn.functional.normalize(genres[pool.indices], dim=-1)
    similarity = features @ features.transpose(1, 2)
    chosen = torch.zeros_like(relevance, dtype=torch.bool)
    redundancy = torch.zeros_like(relevance)
    reranked = scores.clone()
    top = scores.max(dim=1, keepdim=True).values.squeeze(1)
    rows = torch.arange(len(scores))
    for position in range(min(k, pool.indices.shape[1])):
        value = MMR_LAMBDA * relevance - (1 - MMR_LAMBDA) * redundancy
        pick = value.masked_fill(chosen, float("-inf")).argmax(dim=1)
        chosen[rows, pick] = True
        redundancy = torch.maximum(redundancy, similarity[rows, pick])
        reranked[rows, pool.indices[rows, pick]] = top + k - position
    return reranked
