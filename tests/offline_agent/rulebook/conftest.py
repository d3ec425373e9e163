"""A tiny data spec and a check that a rule's child loads, trains one step and scores every item."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from recsys.batches import make_batch
from recsys.candidate import Candidate, load_candidate
from recsys.candidate_api import ModelSpec
from recsys.event_table import from_interactions
from tests.offline_agent.histories import history

NUM_ITEMS = 30
SPEC = ModelSpec(
    num_items=NUM_ITEMS,
    num_users=5,
    max_len=8,
    item_popularity=torch.arange(NUM_ITEMS + 1).float(),
    item_genres=(torch.rand(NUM_ITEMS + 1, 4, generator=torch.Generator().manual_seed(0)) > 0.5).float(),
)
OVERFIT = history([0.05, 0.09, 0.08, 0.07, 0.06, 0.05])
IMPROVING = history([0.05, 0.07, 0.09])
EVENTS = from_interactions(
    pd.DataFrame({"user_idx": [0, 0, 1], "item_idx": [1, 2, 3], "timestamp": [10, 20, 30],
                  "rating": [1.0, 5.0, np.nan], "position": [0, 1, 0]})
)  # fmt: skip


def trains(tmp_path, sources):
    """The transformed candidate loads, trains one step and scores every item."""
    folder = tmp_path / "candidate"
    Candidate("t", "", sources, {}).write(folder)
    candidate = load_candidate(folder)
    torch.manual_seed(0)
    model = candidate.function("model", "build_model")(SPEC)
    task = candidate.function("loss", "build_train_task")(SPEC)
    optimizer = candidate.function("optim", "build_optimizer")(model.parameters())
    batch = make_batch(
        np.array([0, 1]), [np.array([1, 2, 3]), np.array([4, 5])], [np.array([2, 3, 4]), np.array([5, 6])]
    )
    loss = task(model, batch)
    assert torch.isfinite(loss)
    loss.backward()
    optimizer.step()
    with torch.no_grad():
        assert model.eval().score(batch).shape == (2, NUM_ITEMS + 1)
    weights = candidate.function("reward", "event_weights")(EVENTS)
    assert len(weights) == 3 and np.isfinite(weights).all()
    return candidate
