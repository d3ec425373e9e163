"""The candidate's own diagnosis probes (verified against reference models before they count)."""

import numpy as np

from offline_agent.diagnosis.probes import Measurement, probe


@probe("era_gap", measures="era_mismatch", budget_seconds=30)
def era_gap(ctx):
    """Years between the median release year of each user's list and of their own history."""
    gaps = []
    for row, history in zip(ctx.top().numpy(), ctx.histories, strict=True):
        listed, own = ctx.years[row], ctx.years[history]
        if np.isfinite(listed).any() and np.isfinite(own).any():
            gaps.append(abs(np.nanmedian(listed) - np.nanmedian(own)))
    gap = float(np.mean(gaps)) if gaps else 0.0
    return Measurement(
        {"mean_era_gap_years": gap},
        signal=min(max((gap - 3.0) / 12.0, 0.0), 1.0),
        interpretation=f"lists sit {gap:.1f} years away from the era each user watches",
    )


PROBES = [era_gap]
