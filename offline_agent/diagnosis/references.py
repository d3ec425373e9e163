"""Verification of a probe against a pair of reference models that differ in what it claims to measure.

A probe proposed by the agent is kept only if it is deterministic, stays within its time budget
and separates two reference models built from the trained candidate: one pushed towards the
property (e.g. scores shifted towards popular items) and one pushed away from it (or left as
is). That makes "this probe measures popularity bias" a claim that was tested, not a name.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from offline_agent.diagnosis.context import DiagnosisContext, RankingModel
from offline_agent.diagnosis.probes import Measurement, Probe
from recsys.batches import make_batch
from recsys.candidate_api import ITEM_FEATURE, Batch

MIN_SEPARATION = 0.05
SHIFT = 1.5  # score deviations added per unit of offset
COLLAPSE = 0.8  # how far the collapsed reference pulls every embedding towards one direction
POPULARITY_BINS = 10  # the scattered-lists reference moves items within these popularity quantiles only

Offset = Callable[[Batch, int], torch.Tensor]
"""``(batch, width) -> B X width`` (or ``width``) offset, in units of each user's score deviation."""


def _standardised(values: torch.Tensor) -> torch.Tensor:
    """Standardised along the last (item) axis, the padding id left out of the mean and deviation."""
    finite = torch.nan_to_num(values.double(), nan=float(np.nanmean(values.numpy())))
    items = finite[..., 1:]
    return ((finite - items.mean(-1, keepdim=True)) / items.std(-1, keepdim=True).clamp(min=1e-12)).float()


def _histories(batch: Batch) -> list[np.ndarray]:
    values = batch.history[ITEM_FEATURE].values().numpy()
    return np.split(values, np.cumsum(batch.lengths.numpy())[:-1])


class ReferenceModel(nn.Module):
    """The trained model with its scores shifted, its histories rewritten or its embeddings moved."""

    def __init__(
        self,
        base: RankingModel,
        offset: Offset | None = None,
        rewrite: Callable[[Batch], Batch] | None = None,
        embed: Callable[[torch.Tensor, RankingModel], torch.Tensor] | None = None,
    ) -> None:
        super().__init__()
        self.base = base
        self.offset = offset
        self.rewrite = rewrite
        self.embed = embed

    def score(self, batch: Batch) -> torch.Tensor:
        scores = self.base.score(self.rewrite(batch) if self.rewrite else batch).float()
        if self.offset is None:
            return scores
        spread = scores[:, 1:].std(1, keepdim=True).clamp(min=1e-6)
        return scores + SHIFT * spread * self.offset(batch, scores.shape[1])

    def embed_items(self, ids: torch.Tensor) -> torch.Tensor:
        return self.embed(ids, self.base) if self.embed else self.base.embed_items(ids)


def _history_rows(batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
    """Every history item of the batch, and the row of the user it belongs to."""
    return torch.repeat_interleave(torch.arange(len(batch.users)), batch.lengths), batch.history[ITEM_FEATURE].values()


def _consumed(batch: Batch, width: int) -> torch.Tensor:
    rows, items = _history_rows(batch)
    mask = torch.zeros(len(batch.users), width)
    mask[rows, items] = 1.0
    return mask


def _unconsumed(batch: Batch, width: int) -> torch.Tensor:
    return -_consumed(batch, width)


def _first_item_only(batch: Batch) -> Batch:
    return make_batch(batch.users.numpy(), [h[:1] for h in _histories(batch)])


def _collapsed(num_items: int) -> Callable[[torch.Tensor, RankingModel], torch.Tensor]:
    def embed(ids: torch.Tensor, base: RankingModel) -> torch.Tensor:
        embeddings = base.embed_items(ids)
        scale = base.embed_items(torch.arange(1, num_items + 1)).norm(dim=1).mean()
        direction = F.normalize(torch.ones(embeddings.shape[-1]), dim=0)
        return (1 - COLLAPSE) * embeddings + COLLAPSE * scale * direction

    return embed


def _noise(seed: int) -> Offset:
    def offset(batch: Batch, width: int) -> torch.Tensor:
        generator = torch.Generator().manual_seed(seed)
        return 2.0 * torch.randn(len(batch.users), width, generator=generator)

    return offset


def _popularity(ctx: DiagnosisContext) -> torch.Tensor:
    return _standardised(torch.log1p(ctx.catalog.popularity))


def _most_common_genre(ctx: DiagnosisContext) -> torch.Tensor:
    return 2 * ctx.catalog.genres[:, int(ctx.catalog.genres.sum(0).argmax())]


def _recency(ctx: DiagnosisContext) -> torch.Tensor:
    return 2 * _standardised(torch.from_numpy(ctx.years))


def _away_from_taste(ctx: DiagnosisContext) -> Offset:
    """Scores pushed away from the genres of each user's own history, read from the batch: the lists
    scatter over genres the user rarely watches. The push is standardised within each popularity decile, so
    it moves items within their decile and no decile as a whole: the genres a user watches most are mostly
    popular ones, and pushed away from them as they were, the lists also turned obscure, so that a probe of
    obscurity separated this pair nearly as well as a probe of scatter."""
    genres = ctx.catalog.genres
    popularity = torch.log1p(ctx.catalog.popularity[1:].double())
    edges = torch.quantile(popularity, torch.linspace(0, 1, POPULARITY_BINS + 1, dtype=torch.float64)[1:-1])
    deciles = [torch.nonzero(torch.bucketize(popularity, edges) == b).flatten() + 1 for b in range(POPULARITY_BINS)]

    def offset(batch: Batch, width: int) -> torch.Tensor:
        rows, items = _history_rows(batch)
        profile = torch.zeros(len(batch.users), genres.shape[1]).index_add_(0, rows, genres[items])
        away = -(profile @ genres.T)
        for members in (d for d in deciles if len(d) > 1):
            part = away[:, members]
            away[:, members] = (part - part.mean(1, keepdim=True)) / part.std(1, keepdim=True).clamp(min=1e-12)
        return 2 * _standardised(away)

    return offset


Pair = tuple[RankingModel, RankingModel]


def _shifted(offset_of: Callable[[DiagnosisContext], torch.Tensor], away: bool) -> Callable[[DiagnosisContext], Pair]:
    """Scores shifted along an item offset; the other model shifted the opposite way, or unchanged."""

    def build(ctx: DiagnosisContext) -> Pair:
        offset = offset_of(ctx)
        towards = ReferenceModel(ctx.model, lambda batch, width: offset)
        return towards, ReferenceModel(ctx.model, lambda batch, width: -offset) if away else ctx.model

    return build


REFERENCE_PAIRS: dict[str, Callable[[DiagnosisContext], Pair]] = {
    "popularity_bias": _shifted(_popularity, away=True),
    "low_coverage": _shifted(lambda ctx: 2 * _popularity(ctx), away=False),
    "low_diversity": _shifted(_most_common_genre, away=False),
    "genre_calibration": _shifted(_most_common_genre, away=False),
    "era_mismatch": _shifted(_recency, away=False),
    "obscure_lists": _shifted(lambda ctx: -2 * _popularity(ctx), away=False),
    "scattered_lists": lambda ctx: (ReferenceModel(ctx.model, _away_from_taste(ctx)), ctx.model),
    "repetition": lambda ctx: (ReferenceModel(ctx.model, _consumed), ReferenceModel(ctx.model, _unconsumed)),
    "sequence_insensitivity": lambda ctx: (ReferenceModel(ctx.model, rewrite=_first_item_only), ctx.model),
    "weak_ranking_margin": lambda ctx: (ReferenceModel(ctx.model, _noise(ctx.seed)), ctx.model),
    "embedding_collapse": lambda ctx: (ReferenceModel(ctx.model, embed=_collapsed(ctx.num_items)), ctx.model),
}
"""Per verifiable property: (a model towards it, a model away from it or the trained one)."""


@dataclass(frozen=True)
class Verification:
    probe: str
    measures: str
    verified: bool
    reason: str
    high_signal: float | None = None
    low_signal: float | None = None
    seconds: float = 0.0


def _same(first: Measurement, second: Measurement) -> bool:
    if set(first.values) != set(second.values):
        return False
    a = np.array([first.values[k] for k in sorted(first.values)] + [first.signal], dtype=np.float64)
    b = np.array([second.values[k] for k in sorted(second.values)] + [second.signal], dtype=np.float64)
    return bool(np.allclose(a, b, rtol=1e-6, atol=1e-9, equal_nan=True))


def verify_probe(probe: Probe, ctx: DiagnosisContext) -> tuple[Verification, Measurement | None]:
    """Check determinism, budget and separation; returns the verdict and the probe's measurement."""
    started = time.monotonic()
    build = REFERENCE_PAIRS.get(probe.measures)

    def verdict(ok: bool, reason: str, high: float | None = None, low: float | None = None) -> Verification:
        return Verification(probe.name, probe.measures, ok, reason, high, low, round(time.monotonic() - started, 2))

    if build is None:
        known = ", ".join(REFERENCE_PAIRS)
        return verdict(False, f"measures {probe.measures!r}, which no reference pair tests (known: {known})"), None
    first = probe(ctx)
    took = time.monotonic() - started
    if took > probe.budget_seconds:
        return verdict(False, f"took {took:.1f} s, over its budget of {probe.budget_seconds:.0f} s"), None
    if not _same(first, probe(replace(ctx))):
        return verdict(False, "two runs on the same model gave different numbers"), None
    towards, away = build(ctx)
    high = probe(replace(ctx, model=towards)).signal
    low = probe(replace(ctx, model=away)).signal
    if high - low < MIN_SEPARATION:
        reason = f"does not separate the reference models ({high:.3f} towards {probe.measures}, {low:.3f} away)"
        return verdict(False, reason, high, low), None
    return verdict(True, f"separates the reference models ({high:.3f} vs {low:.3f})", high, low), first
