"""Uniformity of item embeddings on the unit sphere (Wang & Isola 2020), added to the training loss."""

import torch
import torch.nn.functional as F

UNIFORMITY_WEIGHT = 0.1


def uniformity(embeddings: torch.Tensor) -> torch.Tensor:
    normed = F.normalize(embeddings, dim=-1)
    return torch.pdist(normed).pow(2).mul(-2).exp().mean().log()


def uniformity_term(model, batch) -> torch.Tensor:
    """UNIFORMITY_WEIGHT times the uniformity of up to 512 of the batch's distinct target items."""
    sample = torch.unique(batch.targets[batch.targets > 0])[:512]
    return UNIFORMITY_WEIGHT * uniformity(model.embed_items(sample))
