"""evorec: a recommender that improves itself, in an offline and an online loop."""

__version__ = "0.1.0"
