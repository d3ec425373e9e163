"""Reward functions: spec, validation, alignment with the north-star, tuning."""
