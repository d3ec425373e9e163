"""The one exception hierarchy of evorec.

Library code raises these; only entry points (the CLI, KFP components, HTTP handlers) turn them
into exit codes or status codes, with the message as the user sees it.
"""


class EvorecError(Exception):
    """Base of every error a user can act on: the message says what went wrong and what to do."""


class ConfigError(EvorecError):
    """A configuration file or option is invalid."""


class DataError(EvorecError):
    """Input data is missing, unreadable or does not fit its declared format."""


class TooManyBadRowsError(DataError):
    """More rows failed validation than the configured fraction allows; nothing was published."""


class FetchError(EvorecError):
    """A dataset could not be obtained from any of its sources."""


class ChecksumError(FetchError):
    """A downloaded file does not match its published checksum."""
