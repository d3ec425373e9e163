"""The one error of reward_lib: what the user can fix, said in the message."""

from evorec.exceptions import ConfigError


class RewardError(ConfigError):
    """A reward spec is invalid or unknown, or a reward gives invalid values on an event table."""
