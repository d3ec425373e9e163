"""Every logged interaction is an equal positive: reward_lib's default `clicks` reward (no shaping yet)."""

from reward_lib import training_weights

REWARD_SPEC = "clicks@1"  # a reward_lib spec: name@version, or the YAML itself


def event_weights(events):
    return training_weights(REWARD_SPEC, events)
