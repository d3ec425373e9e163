"""The candidate's own diagnosis probes (verified against reference models before they count)."""

import numpy as np
import torch

from offline_agent.diagnosis.context import DiagnosisContext
from offline_agent.diagnosis.probes import Measurement, probe


@probe("off_taste_share", measures="scattered_lists", budget_seconds=30)
def off_taste_share(ctx: DiagnosisContext) -> Measurement:
    """Share of each list sharing none of the user's three most watched genres, against the share of the
    user's own history outside them: the excess is what the list scatters beyond the user's taste."""
    genres = ctx.catalog.genres
    histories = [torch.from_numpy(h) for h in ctx.histories]
    profile = torch.stack([genres[h].sum(0) for h in histories])
    counts, main = torch.topk(profile, min(3, genres.shape[1]), dim=1)
    tastes = torch.zeros_like(profile).scatter_(1, main, (counts > 0).float())

    def outside(items: torch.Tensor, taste: torch.Tensor) -> float:
        return float((genres[items] @ taste == 0).double().mean())

    listed = float(np.mean([outside(row, taste) for row, taste in zip(ctx.top(), tastes, strict=True)]))
    own = float(np.mean([outside(h, taste) for h, taste in zip(histories, tastes, strict=True)]))
    excess = listed - own
    return Measurement(
        {"list_off_taste_share": listed, "history_off_taste_share": own, "excess": excess},
        signal=min(max((excess - 0.05) / 0.45, 0.0), 1.0),
        interpretation=f"{listed:.0%} of list items share none of the user's three main genres, "
        f"against {own:.0%} of what they watch",
    )


PROBES = [off_taste_share]
