"""Each positive against NEGATIVES shared sampled items, scored by sampled softmax cross-entropy or by gBCE.

LOSS = "softmax": cross-entropy of the positive among itself and the negatives (SASRec+ with sampled
negatives, Klenitskiy & Vasilev, RecSys 2023). With SAMPLER = "popularity" negatives follow training
popularity and LOGQ subtracts each item's log sampling probability from its logit (Yi et al., RecSys
2019), which removes the popularity bias the sampler adds.
LOSS = "gbce": generalised binary cross-entropy (gSASRec, Petrov & Macdonald, RecSys 2023): the positive's
log-sigmoid is weighted by beta, which CALIBRATION (t) sets between plain BCE (t = 0) and fully calibrated
probabilities (t = 1), countering the overconfidence that many sampled negatives cause.
"""

import torch
import torch.nn.functional as F
from torch import nn

from recsys.candidate_api import Batch, ModelSpec, RecModel, weighted_mean

NEGATIVES = 256
SAMPLER = "uniform"
LOGQ = False
LOSS = "softmax"
CALIBRATION = 0.75
SEARCH_SPACE = {  # what tuning may set (docs/offline_agent.md, "Tuning")
    "NEGATIVES": {"choices": [64, 128, 256, 512, 1024, 2048, 4096]},
    "CALIBRATION": {"low": 0.0, "high": 1.0, "step": 0.05},
}


def sampling_probabilities(num_items: int, popularity: torch.Tensor | None) -> torch.Tensor:
    """``N+1`` probabilities of drawing each item as a negative (never the padding id 0); popularity is
    smoothed by one so that every item can be drawn and its log-probability is finite."""
    weights = torch.ones(num_items + 1)
    if SAMPLER == "popularity" and popularity is not None:
        weights = popularity.detach().float().cpu() + 1.0
    weights[0] = 0.0
    return weights / weights.sum()


def softmax_losses(positive_logits: torch.Tensor, negative_logits: torch.Tensor) -> torch.Tensor:
    """``R`` cross-entropies of each positive among itself and its row of negatives."""
    logits = torch.cat([positive_logits.unsqueeze(1), negative_logits], dim=1)
    return torch.logsumexp(logits, dim=1) - positive_logits


def gbce_beta(negatives: int, num_items: int, calibration: float) -> float:
    """gSASRec's beta = alpha (t (1 - 1/alpha) + 1/alpha), alpha = negatives / (N - 1) the sampling rate."""
    alpha = negatives / (num_items - 1)
    return alpha * (calibration * (1 - 1 / alpha) + 1 / alpha)


def gbce_losses(positive_logits: torch.Tensor, negative_logits: torch.Tensor, beta: float) -> torch.Tensor:
    """``R`` gBCE losses: -(beta log sigmoid(s+) + sum log(1 - sigmoid(s-))) / (k + 1)."""
    positive = beta * F.logsigmoid(positive_logits)
    negative = F.logsigmoid(-negative_logits).sum(dim=1)
    return -(positive + negative) / (negative_logits.shape[1] + 1)


class SampledLoss(nn.Module):
    def __init__(self, num_items: int, popularity: torch.Tensor | None) -> None:
        super().__init__()
        self.num_items = num_items
        self.register_buffer("probabilities", sampling_probabilities(num_items, popularity))

    def losses(
        self, model: RecModel, hidden: torch.Tensor, positives: torch.Tensor, negatives: torch.Tensor
    ) -> torch.Tensor:
        """``R`` losses of the states ``hidden`` (``R X D``) for their ``positives`` against ``negatives``
        (``k`` item ids); a negative that is a row's positive is left out of that row."""
        positive_logits = (hidden * model.embed_items(positives)).sum(-1).float()
        negative_logits = (hidden @ model.embed_items(negatives).T).float()
        if LOGQ:
            positive_logits = positive_logits - self.probabilities[positives].log()
            negative_logits = negative_logits - self.probabilities[negatives].log()
        collisions = negatives.unsqueeze(0) == positives.unsqueeze(1)
        negative_logits = negative_logits.masked_fill(collisions, float("-inf"))
        if LOSS == "gbce":
            beta = gbce_beta(len(negatives), self.num_items, CALIBRATION)
            return gbce_losses(positive_logits, negative_logits, beta)
        return softmax_losses(positive_logits, negative_logits)

    def forward(self, model: RecModel, batch: Batch) -> torch.Tensor:
        states = model(batch)
        present = batch.targets > 0
        negatives = torch.multinomial(self.probabilities, NEGATIVES, replacement=True)
        losses = self.losses(model, states[present], batch.targets[present], negatives)
        return weighted_mean(losses, batch.weights[present])


def build_train_task(spec: ModelSpec) -> SampledLoss:
    return SampledLoss(spec.num_items, spec.item_popularity)
