"""Reward functions: spec, validation, alignment with the north-star, tuning.

A reward is a named, versioned function of an event table (:mod:`recsys.event_table`) giving one
float per event: a YAML spec of weighted signals (:mod:`reward_lib.spec`) or a Python function
registered with :func:`reward`. Alignment and tuning (scipy, Optuna) are imported from their own
modules, so a candidate's ``reward.py`` that only needs training weights stays light.
"""

from reward_lib.candidate import training_weights
from reward_lib.errors import RewardError
from reward_lib.rewards import Reward, reward
from reward_lib.signals import signal
from reward_lib.spec import RewardSpec, load_spec, parse_spec
from reward_lib.store import RewardStore, resolve_reward
from reward_lib.validate import ValidationReport, evaluate, validate

__all__ = [
    "Reward",
    "RewardError",
    "RewardSpec",
    "RewardStore",
    "ValidationReport",
    "evaluate",
    "load_spec",
    "parse_spec",
    "resolve_reward",
    "reward",
    "signal",
    "training_weights",
    "validate",
]
