"""Rewards in training: weights from a candidate's reward.py, a real retrain, and the alignment the loop judges."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest

from offline_agent.edits import apply_change, parse_reply
from offline_agent.rulebook.catalogue import RULES
from offline_agent.rulebook.engine import RuleContext, reply_for
from recsys.candidate import load_candidate
from recsys.event_table import from_interactions
from recsys.sequences import SPLIT_CODES
from recsys.trainer import Trainer, TrainerConfig
from reward_lib.candidate import candidate_alignment, spec_of_source, training_weights
from reward_lib.errors import RewardError

EVENTS = from_interactions(
    pd.DataFrame({"user_idx": [0, 0, 1, 1], "item_idx": [1, 2, 3, 1], "timestamp": [0, 60, 0, 60],
                  "rating": [1.0, 5.0, np.nan, 3.0], "position": [0, 1, 0, 1]})
)  # fmt: skip
RATED = "name: rated\nversion: 1\ncomponents:\n  - {signal: rating, weight: 1, transforms: [{clip: [0, 5]}], fill: 3}\n"


def test_training_weights_follow_the_reward_with_mean_one():
    assert training_weights("clicks@1", EVENTS).tolist() == [1, 1, 1, 1]
    weights = training_weights(RATED, EVENTS)
    assert weights.dtype == np.float32 and weights.mean() == pytest.approx(1.0)
    assert np.allclose(weights, np.array([1, 5, 3, 3]) / 3)
    penalised = RATED.replace("weight: 1,", "weight: -1,")
    with pytest.raises(RewardError, match=r"reward rated@1 \(reward.py REWARD_SPEC\) gives no training event a "):
        training_weights(penalised, EVENTS)


def test_the_spec_of_a_reward_block_is_read_without_running_it():
    assert spec_of_source('import os\nREWARD_SPEC = "clicks@1"\nos.system("exit 1")\n') == "clicks@1"
    assert spec_of_source("def event_weights(events):\n    return events\n") is None
    assert spec_of_source("REWARD_SPEC = (") is None


@pytest.mark.slow
def test_a_reward_edit_retrains_through_the_harness_and_is_judged_by_alignment(
    prepared_small, seeds_dir, reference_logs, tmp_path
):
    seed = load_candidate(seeds_dir / "sasrec_bce")
    rule = next(rule for rule in RULES if rule.name == "rating_weighted_positives")
    sources = apply_change(dict(seed.sources), parse_reply(reply_for(rule, RuleContext(dict(seed.sources)))))
    folder = tmp_path / "rated"
    shutil.copytree(seeds_dir / "sasrec_bce", folder)
    (folder / "reward.py").write_text(sources["reward"])
    config = TrainerConfig(max_epochs=1, progress=False)
    rated, uniform = Trainer(load_candidate(folder), prepared_small, config), Trainer(seed, prepared_small, config)
    train = rated.sequences.split == SPLIT_CODES["train"]
    ratings = rated.sequences.ratings[train]
    assert np.array_equal(uniform.event_weights, np.ones_like(uniform.event_weights))
    assert (rated.event_weights[~train] == 1).all()  # valid and test events are never targets
    assert rated.event_weights[train].mean() == pytest.approx(1.0, abs=1e-4)
    assert np.allclose(rated.event_weights[train] * ratings.mean(), ratings, atol=1e-3)
    result = rated.fit()
    assert np.isfinite(result.history[0]["loss"]) and 0 <= result.test["ndcg@10"] <= 1

    paths = tuple(str(log.path) for log in reference_logs)
    judged = candidate_alignment(sources["reward"], paths, str(prepared_small.path))
    assert judged["reward"] == "rating_weighted@1" and -1 <= judged["alignment"] <= 1
    default = candidate_alignment(seed.sources["reward"], paths, str(prepared_small.path))
    assert default["reward"] == "clicks@1" and default["arm_agreement"] == 1.0
    assert candidate_alignment("def event_weights(events):\n    return 1\n", paths) == {
        "error": "reward.py defines no REWARD_SPEC string, so its alignment cannot be measured"
    }
