"""Diagnosis probes: each measures one property of a trained model and says how bad it is.

A probe returns a :class:`Measurement`: its numbers, a ``signal`` in [0, 1] (0: healthy, 1: as
bad as the probe can tell) and a one-line interpretation. The signal is what the rulebook's
preconditions and the prompts read, keyed by the property the probe ``measures``. Candidates add
their own probes with the same decorator in their ``diagnosis.py``::

    from offline_agent.diagnosis.probes import Measurement, probe

    @probe("tail_share", measures="popularity_bias")
    def tail_share(ctx):
        ...
        return Measurement({"tail_share": share}, signal=1 - share / 0.2, interpretation="...")

    PROBES = [tail_share]
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

from offline_agent.diagnosis.context import DiagnosisContext
from recsys.evaluation import SEGMENTS, list_diversity

Severity = Literal["none", "mild", "severe"]
MILD, SEVERE = 0.25, 0.6
EMBEDDING_SAMPLE = 2048
NEGATIVES = 100


@dataclass(frozen=True)
class Measurement:
    values: dict[str, float]
    signal: float
    interpretation: str


@dataclass(frozen=True)
class Probe:
    """A named measurement of one property (``measures``), with the time it may take."""

    name: str
    measures: str
    budget_seconds: float
    measure: Callable[[DiagnosisContext], Measurement]

    def __call__(self, ctx: DiagnosisContext) -> Measurement:
        return self.measure(ctx)


def probe(name: str, measures: str | None = None, budget_seconds: float = 60.0) -> Callable[..., Probe]:
    """Decorator turning ``f(ctx) -> Measurement`` into a :class:`Probe`."""

    def wrap(function: Callable[[DiagnosisContext], Measurement]) -> Probe:
        return Probe(name, measures or name, budget_seconds, function)

    return wrap


def severity(signal: float) -> Severity:
    return "severe" if signal >= SEVERE else "mild" if signal >= MILD else "none"


def clip01(value: float) -> float:
    return float(min(max(value, 0.0), 1.0)) if np.isfinite(value) else 0.0


def _ramp(value: float, healthy: float, bad: float) -> float:
    """0 at ``healthy``, 1 at ``bad``, linear between (either direction)."""
    return clip01((value - healthy) / (bad - healthy))


@probe("embedding_collapse")
def embedding_collapse(ctx: DiagnosisContext) -> Measurement:
    """Mean pairwise cosine of item embeddings, and effective rank from singular-value entropy."""
    ids = np.arange(1, ctx.num_items + 1)
    if len(ids) > EMBEDDING_SAMPLE:
        ids = np.sort(ctx.rng(1).choice(ids, EMBEDDING_SAMPLE, replace=False))
    with torch.no_grad():
        embeddings = ctx.model.embed_items(torch.from_numpy(ids)).float()
    normed = F.normalize(embeddings, dim=1)
    n = len(ids)
    mean_cosine = float(((normed.sum(0) @ normed.sum(0)) - n) / (n * (n - 1)))
    singular = torch.linalg.svdvals(embeddings)
    shares = singular / singular.sum().clamp(min=1e-12)
    effective_rank = float(torch.exp(-(shares * torch.log(shares.clamp(min=1e-12))).sum()))
    rank_ratio = effective_rank / embeddings.shape[1]
    signal = max(_ramp(mean_cosine, 0.1, 0.6), _ramp(rank_ratio, 0.6, 0.1))
    return Measurement(
        {"mean_cosine": mean_cosine, "effective_rank": effective_rank, "rank_ratio": rank_ratio},
        signal,
        f"item embeddings: mean cosine {mean_cosine:.2f}, effective rank {effective_rank:.1f} of "
        f"{embeddings.shape[1]} dimensions" + (" (collapsed)" if signal >= SEVERE else ""),
    )


@probe("weak_ranking_margin")
def ranking_margin(ctx: DiagnosisContext) -> Measurement:
    """Score of the held-out item minus sampled unseen negatives, in units of each user's score spread."""
    scores = ctx.scores.masked_fill(ctx.consumed, -torch.inf)
    candidates = torch.from_numpy(ctx.rng(2).integers(1, ctx.num_items + 1, size=(len(ctx.users), NEGATIVES)))
    targets = torch.from_numpy(ctx.targets)
    negative = scores.gather(1, candidates)
    valid = torch.isfinite(negative) & (candidates != targets[:, None])
    finite = torch.where(torch.isfinite(scores), scores, torch.nan)
    spread = torch.from_numpy(np.nanstd(finite.numpy(), axis=1)).clamp(min=1e-6)
    margins = ((scores.gather(1, targets[:, None]) - negative) / spread[:, None])[valid]
    wins = float((margins < 0).double().mean()) if len(margins) else float("nan")
    mean, p10 = (float(margins.mean()), float(torch.quantile(margins, 0.1))) if len(margins) else (np.nan, np.nan)
    return Measurement(
        {"mean_margin": mean, "p10_margin": p10, "negative_win_share": wins},
        _ramp(wins, 0.1, 0.5),
        f"the held-out item outscores a random unseen item {1 - wins:.0%} of the time "
        f"(mean margin {mean:.2f} score deviations, 10th percentile {p10:.2f})",
    )


@probe("popularity_bias")
def popularity_bias(ctx: DiagnosisContext) -> Measurement:
    """Rank correlation of scores with log popularity; recommended against consumed popularity; exposure Gini."""
    popularity = ctx.catalog.popularity
    item_ranks = torch.argsort(torch.argsort(popularity[1:])).double()
    score_ranks = torch.argsort(torch.argsort(ctx.scores[:, 1:], dim=1), dim=1).double()
    centred_items = item_ranks - item_ranks.mean()
    centred_scores = score_ranks - score_ranks.mean(1, keepdim=True)
    correlation = (centred_scores @ centred_items) / (centred_scores.norm(dim=1) * centred_items.norm()).clamp(1e-12)
    top = ctx.top()
    recommended = float(popularity[top].mean())
    consumed = float(np.mean([popularity[torch.from_numpy(h)].mean() for h in ctx.histories]))
    lift = recommended / max(consumed, 1e-12)
    mean_correlation = float(correlation.mean())
    signal = max(_ramp(mean_correlation, 0.3, 0.8), _ramp(lift, 1.2, 3.0))
    return Measurement(
        {"score_popularity_spearman": mean_correlation, "recommended_popularity": recommended,
         "history_popularity": consumed, "popularity_lift": lift},
        signal,
        f"lists are {lift:.1f}x as popular as what users consume; scores follow popularity "
        f"(Spearman {mean_correlation:.2f})",
    )  # fmt: skip


@probe("low_coverage")
def coverage(ctx: DiagnosisContext) -> Measurement:
    """Share of the catalogue in anyone's top-10 (all users), and the Gini of that exposure."""
    metrics = ctx.evaluation.metrics
    share, gini = metrics["coverage@10"], metrics["gini@10"]
    return Measurement(
        {"coverage": share, "gini": gini},
        max(_ramp(share, 0.4, 0.05), _ramp(gini, 0.8, 0.99)),
        f"{share:.0%} of the catalogue reaches some top-10; exposure Gini {gini:.2f}",
    )


@probe("low_diversity")
def genre_diversity(ctx: DiagnosisContext) -> Measurement:
    """Genre intra-list diversity of the lists against that of the users' own last ten items."""
    lists = float(list_diversity(ctx.top(), ctx.catalog).mean())
    recent = [h[-10:] for h in ctx.histories if len(h) >= 10]
    own = float(list_diversity(torch.from_numpy(np.stack(recent)), ctx.catalog).mean()) if recent else lists
    shortfall = (own - lists) / max(own, 1e-12)
    return Measurement(
        {"list_ild": lists, "history_ild": own, "relative_shortfall": shortfall},
        _ramp(shortfall, 0.05, 0.5),
        f"genre diversity of the lists {lists:.2f} against {own:.2f} in users' own last ten items",
    )


@probe("repetition")
def repetition(ctx: DiagnosisContext) -> Measurement:
    """Consumed items the model would put in the top-10 if not masked; near-duplicate pairs in the lists."""
    unmasked = torch.topk(ctx.scores, 10, dim=1).indices
    consumed_share = float(ctx.consumed.gather(1, unmasked).double().mean())
    top = ctx.top()
    genres = ctx.catalog.genres[top]
    same_genres = (genres.unsqueeze(2) == genres.unsqueeze(1)).all(-1) & (genres.sum(-1) > 0).unsqueeze(2)
    years = torch.from_numpy(np.nan_to_num(ctx.years, nan=-1e4))[top]
    close_years = (years.unsqueeze(2) - years.unsqueeze(1)).abs() <= 2
    pairs = (same_genres & close_years).triu(diagonal=1).sum((1, 2)).double() / 45.0
    near_duplicates = float(pairs.mean())
    return Measurement(
        {"consumed_share_unmasked": consumed_share, "near_duplicate_pair_share": near_duplicates},
        max(_ramp(consumed_share, 0.2, 0.8), _ramp(near_duplicates, 0.05, 0.3)),
        f"{consumed_share:.0%} of the unmasked top-10 was already consumed; {near_duplicates:.0%} of list pairs "
        "are near-duplicates (same genres, within two years)",
    )


def _list_change(before: torch.Tensor, after: torch.Tensor) -> float:
    overlap = (before.unsqueeze(2) == after.unsqueeze(1)).any(2).double().sum(1)
    return float(1.0 - (overlap / before.shape[1]).mean())


@probe("sequence_insensitivity")
def sequence_sensitivity(ctx: DiagnosisContext) -> Measurement:
    """How much the top-10 changes when the last item is masked, or the last two are swapped."""
    rows = [i for i, h in enumerate(ctx.histories) if len(h) >= 3]
    if not rows:
        return Measurement({}, 0.0, "no user has three items of history")
    sub = DiagnosisContext(ctx.model, ctx.sequences, ctx.catalog, ctx.years, ctx.users[rows], ctx.max_len, ctx.stage)
    base = sub.top()
    masked = sub.top(histories=[h[:-1] for h in sub.histories])
    swapped = sub.top(histories=[np.concatenate([h[:-2], h[-1:], h[-2:-1]]) for h in sub.histories])
    mask_change, swap_change = _list_change(base, masked), _list_change(base, swapped)
    return Measurement(
        {"change_last_masked": mask_change, "change_last_two_swapped": swap_change},
        _ramp(mask_change, 0.3, 0.02),
        f"masking the last item changes {mask_change:.0%} of the top-10, swapping the last two {swap_change:.0%}",
    )


@probe("segment_gap")
def segment_gaps(ctx: DiagnosisContext) -> Measurement:
    """NDCG@10 of light against heavy users, and of old against new held-out items (release year)."""
    evaluation = ctx.evaluation
    metrics = evaluation.metrics
    light, heavy = metrics[f"ndcg@10_{SEGMENTS[0]}"], metrics[f"ndcg@10_{SEGMENTS[-1]}"]
    target_years = np.array(
        [ctx.years[ctx.sequences.targets(u, ctx.stage)[0]] if len(ctx.sequences.targets(u, ctx.stage)) else np.nan
         for u in range(ctx.sequences.num_users)]
    )  # fmt: skip
    ndcg = evaluation.per_user["ndcg@10"]
    median = np.nanmedian(ctx.years)
    old = float(ndcg[target_years < median].mean()) if (target_years < median).any() else float("nan")
    new = float(ndcg[target_years >= median].mean()) if (target_years >= median).any() else float("nan")
    user_gap = abs(heavy - light) / max(heavy, light, 1e-12)
    item_gap = abs(new - old) / max(new, old, 1e-12) if np.isfinite(old) and np.isfinite(new) else 0.0
    return Measurement(
        {"ndcg_light": light, "ndcg_heavy": heavy, "ndcg_old_items": old, "ndcg_new_items": new,
         "user_gap": user_gap, "item_gap": item_gap},
        _ramp(max(user_gap, item_gap), 0.2, 0.7),
        f"NDCG@10 light {light:.3f} vs heavy {heavy:.3f} users; items before {median:.0f} {old:.3f} vs after {new:.3f}",
    )  # fmt: skip


@probe("genre_calibration")
def genre_calibration(ctx: DiagnosisContext) -> Measurement:
    """KL between the genre mix of users' histories and of their lists (Steck 2018), over all users."""
    kl = ctx.evaluation.per_user["calibration_kl@10"]
    mean, share = float(kl.mean()), float((kl > 1.0).mean())
    return Measurement(
        {"mean_kl": mean, "share_kl_above_1": share},
        _ramp(mean, 0.3, 2.0),
        f"genre calibration KL {mean:.2f}; {share:.0%} of users get a genre mix far from their own",
    )


BUILTIN_PROBES: tuple[Probe, ...] = (
    embedding_collapse,
    ranking_margin,
    popularity_bias,
    coverage,
    genre_diversity,
    repetition,
    sequence_sensitivity,
    segment_gaps,
    genre_calibration,
)
