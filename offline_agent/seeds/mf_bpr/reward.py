"""Every logged interaction is an equal positive: reward_lib's default `clicks` reward (no shaping yet)."""

import numpy as np
import pandas as pd

from reward_lib import training_weights

REWARD_SPEC = "clicks@1"  # a reward_lib spec: name@version, or the YAML itself


def event_weights(events: pd.DataFrame) -> np.ndarray:
    return training_weights(REWARD_SPEC, events)
