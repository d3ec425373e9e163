"""The candidate's own diagnosis probes (verified against reference models before they count)."""

import torch

from offline_agent.diagnosis.context import DiagnosisContext
from offline_agent.diagnosis.probes import Measurement, probe


@probe("popularity_shortfall", measures="obscure_lists", budget_seconds=30)
def popularity_shortfall(ctx: DiagnosisContext) -> Measurement:
    """How far below each user's own history the list's popularity sits: mean popularity percentile of the
    list against the history's, and the share of list items in the long tail (outside the most popular
    items that together draw 80% of the training interactions) against the history's."""
    popularity = ctx.catalog.popularity.double()
    ordered = torch.sort(popularity[1:]).values
    below, up_to = torch.searchsorted(ordered, popularity), torch.searchsorted(ordered, popularity, right=True)
    percentile = (below + up_to - 1) / (2 * max(len(ordered) - 1, 1))  # average rank; ties share one
    descending = ordered.flip(0)
    drawn_before = (torch.cumsum(descending, 0) - descending) / descending.sum().clamp(min=1e-12)
    tail = (popularity < descending[drawn_before < 0.8].min()).double()
    histories = [torch.from_numpy(h) for h in ctx.histories]
    own = float(torch.stack([percentile[h].mean() for h in histories]).mean())
    own_tail = float(torch.stack([tail[h].mean() for h in histories]).mean())
    top = ctx.top()
    listed, list_tail = float(percentile[top].mean()), float(tail[top].mean())
    gap = own - listed
    signal = max((gap - 0.05) / 0.3, (list_tail - own_tail - 0.1) / 0.5)
    return Measurement(
        {"list_percentile": listed, "history_percentile": own, "percentile_gap": gap,
         "list_tail_share": list_tail, "history_tail_share": own_tail},
        signal=min(max(signal, 0.0), 1.0),
        interpretation=f"lists sit {gap * 100:.0f} popularity percentiles below what users watch; "
        f"{list_tail:.0%} of list items are long-tail against {own_tail:.0%} of their histories",
    )  # fmt: skip


PROBES = [popularity_shortfall]
