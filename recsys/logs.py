"""Logging set-up for the CLI: rich console handler, one format for every module."""

from __future__ import annotations

import logging
import os

from rich.console import Console
from rich.logging import RichHandler

from recsys.redaction import RedactingFilter


def configure_logging(verbose: bool = False) -> None:
    """Route all loggers through rich; the chatter of Beam, absl, urllib3 and alembic stays at WARNING.

    Libraries that log on the root logger itself (fbgemm announces every library it loads) are
    shown from WARNING up; evorec's modules log on named loggers and are shown from INFO. Every
    record is redacted of secret values before it is written (:mod:`recsys.redaction`).
    """
    # stderr: stdout is for results (`--json` prints only JSON there)
    handler = RichHandler(console=Console(stderr=True), rich_tracebacks=False, show_path=False)
    handler.addFilter(_shown)
    handler.addFilter(RedactingFilter())
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO, format="%(message)s", datefmt="[%X]", handlers=[handler],
        force=True,
    )  # fmt: skip
    for noisy in ("apache_beam", "absl", "urllib3", "alembic"):  # never "root": that name is the root logger itself
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _shown(record: logging.LogRecord) -> bool:
    """Root-logger records only from WARNING up, and from ERROR up when Beam writes them: on import it
    warns on the root logger that optional Google Cloud clients are missing, which no user acts on."""
    if record.name != "root":
        return True
    return record.levelno >= (logging.ERROR if f"{os.sep}apache_beam{os.sep}" in record.pathname else logging.WARNING)
