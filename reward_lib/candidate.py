"""How a recommender candidate uses a reward: training weights in ``reward.py``, alignment in the offline loop.

A candidate's ``reward.py`` turns its training events into one weight per event. With reward_lib it
declares ``REWARD_SPEC`` (a reward reference: ``name@version`` or inline YAML) and returns
``training_weights(REWARD_SPEC, events)``. Because the spec is a string constant, the offline loop
reads it without running candidate code and judges a reward edit by its alignment with the
north-star on simulated logs (:func:`candidate_alignment`), not by training loss, whose scale
changes with the reward.
"""

from __future__ import annotations

import ast
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from recsys.candidate import parse_block
from reward_lib.errors import RewardError
from reward_lib.rewards import Reward
from reward_lib.store import resolve_reward
from reward_lib.validate import evaluate

SPEC_NAME = "REWARD_SPEC"


def training_weights(reward: Reward | str, events: pd.DataFrame) -> np.ndarray:
    """``E`` float32 training weights: the reward's values, negatives cut to 0, scaled to mean 1.

    A negative reward cannot be taught by weighting a positive, so it weighs nothing; the mean of
    1 keeps the loss on the scale the candidate's learning rate was set for.
    """
    resolved = resolve_reward(reward, source=f"reward.py {SPEC_NAME}")
    values = np.maximum(evaluate(resolved, events), 0.0)
    if len(values) and values.mean() <= 0:
        raise RewardError(f"reward {resolved.key} ({resolved.source}) gives no training event a positive weight")
    return (values / values.mean() if len(values) else values).astype(np.float32)


def spec_of_source(source: str) -> str | None:
    """The ``REWARD_SPEC`` string constant of a ``reward.py`` source, read without running it."""
    try:
        tree = parse_block(source, filename="reward.py")
    except SyntaxError:
        return None
    for node in tree.body:
        if (
            isinstance(node, ast.Assign)
            and any(isinstance(target, ast.Name) and target.id == SPEC_NAME for target in node.targets)
            and isinstance(node.value, ast.Constant)
            and isinstance(node.value.value, str)
        ):
            return node.value.value
    return None


@lru_cache(maxsize=4)
def _logs(paths: tuple[str, ...], dataset: str) -> tuple[Any, ...]:
    from recsys.data.prepared import PreparedDataset
    from reward_lib.logs import LogFile

    items = PreparedDataset.open(Path(dataset), verify=False).items if dataset else None
    return tuple(LogFile.find(Path(path)).read(items) for path in paths)


def candidate_alignment(source: str, log_paths: tuple[str, ...], dataset: str = "") -> dict[str, Any]:
    """The alignment of a ``reward.py``'s ``REWARD_SPEC`` on the given A/B logs, as JSON; an
    ``error`` entry says why there is none (no spec, an invalid one, a log that cannot be read).
    ``dataset`` (a prepared folder) gives the events their genres."""
    from reward_lib.alignment import measure

    text = spec_of_source(source)
    if text is None:
        return {"error": f"reward.py defines no {SPEC_NAME} string, so its alignment cannot be measured"}
    try:
        reward = resolve_reward(text, source=f"reward.py {SPEC_NAME}")
        result = measure(reward, _logs(log_paths, dataset)).to_json()
    except RewardError as exc:
        return {"error": str(exc)}
    return {"reward": reward.key, **result}
