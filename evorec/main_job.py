"""The main job that `evorec run` (and `make run`) performs on the embedded default dataset, and
the dataset resolution that every command shares.

For now the main job prepares the shipped MovieLens latest-small (reusing an up-to-date
preparation). Later stages (evolution, A/B experiment, approval) join here as they are built.
"""

from __future__ import annotations

import logging
from pathlib import Path

from evorec.settings import Settings
from pipelines.data_prepare import run_prepare
from recsys.data.catalog import SHIPPED, resolve_source
from recsys.data.config import PrepareConfig
from recsys.data.prepared import MANIFEST, PreparedDataset, is_up_to_date

log = logging.getLogger(__name__)


def prepared_dataset(dataset: str, settings: Settings) -> PreparedDataset:
    """A prepared folder given by path, or a dataset by name, prepared with the protocol's
    defaults when it has not been prepared yet (or its inputs changed)."""
    path = Path(dataset)
    if (path / MANIFEST).exists():
        return PreparedDataset.open(path)
    source = resolve_source(dataset, settings)
    out = settings.prepared_dir / source.name
    config = PrepareConfig()
    if is_up_to_date(source, out, config):
        log.info("%s is prepared and up to date in %s", source.name, out)
    else:
        run_prepare(source, out, config)
    return PreparedDataset.open(out)


def run_main_job(settings: Settings) -> Path:
    """Prepare the embedded dataset; returns the prepared folder."""
    return prepared_dataset(SHIPPED, settings).path
