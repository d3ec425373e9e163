"""The one error of reward_lib: what the user can fix, said in the message."""

from recsys.errors import ConfigError


class RewardError(ConfigError):
    """A reward spec is invalid or unknown, or a reward gives invalid values on an event table."""
