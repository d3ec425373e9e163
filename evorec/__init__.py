"""evorec: a recommender that improves itself, in an offline and an online loop.

This package is the top floor only: the CLI, the review console and the main job.
"""

from recsys import __version__

__all__ = ["__version__"]
