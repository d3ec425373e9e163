"""Positives weighted by their rating (mean 1); a click without a rating counts as three stars."""

from reward_lib import training_weights

REWARD_SPEC = """
name: rating_weighted
version: 1
description: Clicks weighted by their rating.
components:
  - signal: rating
    weight: 1.0
    transforms: [{clip: [0.0, 5.0]}]
    when: ["click > 0"]
    fill: 3.0
monotone: {rating: increasing}
"""


def event_weights(events):
    return training_weights(REWARD_SPEC, events)
