"""Logging set-up for the CLI: rich console handler, one format for every module."""

from __future__ import annotations

import logging

from rich.logging import RichHandler


def configure_logging(verbose: bool = False) -> None:
    """Route all loggers through rich; Beam's and absl's chatter stays at WARNING."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(message)s",
        datefmt="[%X]",
        handlers=[RichHandler(rich_tracebacks=False, show_path=False)],
        force=True,
    )
    for noisy in ("apache_beam", "absl", "root", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
