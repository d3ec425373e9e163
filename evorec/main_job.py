"""The main job that `evorec run` (and `make run`) performs on the embedded default dataset.

For now: prepare the shipped MovieLens latest-small, reusing an up-to-date preparation. Later
stages (evolution, A/B experiment, approval) join here as they are built.
"""

from __future__ import annotations

import logging
from pathlib import Path

from evorec.settings import Settings
from pipelines.data_prepare import run_prepare
from recsys.data.catalog import SHIPPED, builtin_source
from recsys.data.config import PrepareConfig
from recsys.data.prepared import is_up_to_date

log = logging.getLogger(__name__)


def run_main_job(settings: Settings) -> Path:
    """Prepare the embedded dataset; returns the prepared folder."""
    source = builtin_source(SHIPPED, settings)
    out = settings.prepared_dir / SHIPPED
    config = PrepareConfig()
    if is_up_to_date(source, out, config):
        log.info("%s is prepared and up to date in %s", SHIPPED, out)
    else:
        run_prepare(source, out, config)
    return out
