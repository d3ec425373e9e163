"""A view of a prepared dataset with the held-out targets absent: what sandboxed candidate code reads.

The view is a prepared folder of its own (same users, items and manifest counts) whose interactions
are the training events only. A model scores validation users from their training histories; the
test histories (training and validation events) are handed out by the judge after training
(:mod:`recsys.heldout`), and the test targets never leave it.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from recsys.data.fetch import file_digest
from recsys.data.prepared import MANIFEST, PreparedDataset

INTERACTIONS = "interactions-00000-of-00001.parquet"
COPIED = ("items.parquet", "users.parquet")


def write_training_view(prepared: PreparedDataset, folder: Path) -> PreparedDataset:
    """Write the view into ``folder`` (created) and open it."""
    folder.mkdir(parents=True, exist_ok=True)
    frame = prepared.interactions
    train = frame[frame["split"].astype(str) == "train"]
    pq.write_table(pa.Table.from_pandas(train, preserve_index=False), folder / INTERACTIONS)
    for name in COPIED:
        if (prepared.path / name).exists():
            shutil.copyfile(prepared.path / name, folder / name)
    written = [INTERACTIONS, *(name for name in COPIED if (folder / name).exists())]
    manifest = {
        **prepared.manifest,
        "outputs": {name: file_digest(folder / name) for name in written},
        "view": "training events only: the validation and test targets are absent",
    }
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return PreparedDataset.open(folder)


def copy_view(view: Path, folder: Path) -> None:
    """A private copy of a written view (a sandbox may write its own files; never the shared ones)."""
    shutil.copytree(view, folder)
