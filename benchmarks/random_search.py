"""Random search over a fixed grid of the seed's numbers: the feedback ablation's rival arm.

Each configuration is written into the seed's constants and evaluated like any candidate; the trials go to a
JSON-lines log that a resumed run reads back.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from offline_agent.evaluator import EvaluationOutcome

SPACE: dict[str, tuple[str, str, list[Any]]] = {
    "dim": ("model", "DIM = 64", [32, 64, 128]),
    "blocks": ("model", "BLOCKS = 2", [1, 2, 3]),
    "heads": ("model", "HEADS = 2", [1, 2, 4]),
    "dropout": ("model", "DROPOUT = 0.2", [0.1, 0.2, 0.3, 0.5]),
    "lr": ("optim", "LEARNING_RATE = 1e-3", [5e-4, 1e-3, 2e-3]),
    "batch_size": ("optim", "BATCH_SIZE = 128", [64, 128, 256]),
}


def random_configuration(rng: random.Random) -> dict[str, Any]:
    return {name: rng.choice(values) for name, (_, _, values) in SPACE.items()}


def apply_configuration(sources: dict[str, str], configuration: dict[str, Any]) -> dict[str, str]:
    """The seed's blocks with the sampled hyperparameters written in."""
    updated = dict(sources)
    for name, value in configuration.items():
        block, default, _ = SPACE[name]
        key = default.split("=")[0].rstrip()
        joiner = " = " if " = " in default else "="
        updated[block] = updated[block].replace(default, f"{key}{joiner}{value}", 1)
    return updated


def log_trial(log: Path, configuration: dict[str, Any], outcome: EvaluationOutcome) -> dict[str, Any]:
    """Append one random-search evaluation to its JSON-lines log (what a resumed run reads back)."""
    trial = {"configuration": configuration, "status": outcome.status, "reason": outcome.reason,
             "valid": outcome.valid, "test": outcome.test, "seconds": round(outcome.seconds, 1)}  # fmt: skip
    with log.open("a") as handle:
        handle.write(json.dumps(trial) + "\n")
    return trial
