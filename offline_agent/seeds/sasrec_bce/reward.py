"""Every logged interaction is an equal positive (no reward shaping yet)."""

import numpy as np


def event_weights(ratings):
    return np.ones(len(ratings), dtype=np.float32)
