"""Finding a prepared dataset by name or folder, preparing it first when needed: what every command shares."""

from __future__ import annotations

import logging
from pathlib import Path

from recsys.data.catalog import BUILTIN, YAML_SUFFIXES, resolve_source
from recsys.data.config import PrepareConfig
from recsys.data.prepared import MANIFEST, PreparedDataset, is_up_to_date
from recsys.settings import Settings

log = logging.getLogger(__name__)


def prepared_dataset(dataset: str, settings: Settings) -> PreparedDataset:
    """A prepared folder given by path, or a dataset by name, prepared with the protocol's
    defaults when it has not been prepared yet (or its inputs changed).

    A name that is neither built in nor a YAML file is one that `evorec data prepare NAME.yaml`
    prepared into the cache: it is used as prepared (the YAML says how to prepare it again).
    """
    path = Path(dataset)
    if (path / MANIFEST).exists():
        return PreparedDataset.open(path)
    cached = settings.prepared_dir / dataset
    if dataset not in BUILTIN and path.suffix not in YAML_SUFFIXES and (cached / MANIFEST).exists():
        return PreparedDataset.open(cached)
    source = resolve_source(dataset, settings)
    out = settings.prepared_dir / source.name
    config = PrepareConfig()
    if is_up_to_date(source, out, config):
        log.info("%s is prepared and up to date in %s", source.name, out)
    else:
        from recsys.data.beam_prepare import run_prepare  # Beam loads only when something is prepared

        run_prepare(source, out, config)
    return PreparedDataset.open(out)
