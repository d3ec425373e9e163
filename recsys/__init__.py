"""The ground floor: errors, settings, config loading, logging, the event schema, datasets and their
Beam preparation, the candidate API, training, trusted evaluation and model export.

It imports nothing else of the project, so every other package can build on it.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("evorec")
except PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0.0.0+unknown"
