"""Reading a prepared dataset: the manifest, the interactions, the item and user vocabularies.

A prepared folder is trusted only through its manifest: every output's sha256 is checked on open
(``verify=True``) so that a half-copied or edited dataset is refused instead of trained on.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.fs

from recsys.data.config import PrepareConfig
from recsys.data.fetch import file_digest
from recsys.data.sources import DatasetSource
from recsys.errors import DataError

MANIFEST = "manifest.json"


def _read_parquet(path: Path) -> pd.DataFrame:
    """A Parquet file read by Arrow's own file system. Given a local path alone, pandas opens the file and
    hands Arrow the Python file object, which Arrow's I/O threads then call into (and release) under the
    GIL; one still doing so while the interpreter exits is ended by CPython mid-C++, which aborts the
    process ("terminate called without an active exception", apache/arrow#39862 and #45017)."""
    return pd.read_parquet(path, filesystem=pyarrow.fs.LocalFileSystem())


@dataclass(frozen=True)
class PreparedDataset:
    """A prepared dataset folder; tables load lazily."""

    path: Path
    manifest: dict[str, Any]

    @classmethod
    def open(cls, path: Path, verify: bool = True) -> PreparedDataset:
        manifest_path = path / MANIFEST
        if not manifest_path.exists():
            raise DataError(f"{path} is not a prepared dataset (no {MANIFEST}); run `evorec data prepare` first")
        try:
            manifest = json.loads(manifest_path.read_text())
        except json.JSONDecodeError as exc:
            raise DataError(f"{manifest_path}: not valid JSON ({exc}); prepare the dataset again") from exc
        if verify:
            for name, expected in manifest["outputs"].items():
                file = path / name
                if not file.exists():
                    raise DataError(f"{file}: listed in the manifest but missing; prepare the dataset again")
                if file_digest(file) != expected:
                    raise DataError(f"{file}: checksum differs from the manifest; prepare the dataset again")
        return cls(path, manifest)

    @property
    def name(self) -> str:
        return str(self.manifest["dataset"])

    @property
    def num_users(self) -> int:
        return int(self.manifest["users"])

    @property
    def num_items(self) -> int:
        """Number of real items; item indices run from 1 to ``num_items`` (0 pads)."""
        return int(self.manifest["items"])

    @cached_property
    def interactions(self) -> pd.DataFrame:
        """All kept interactions, sorted by user then time: user_idx, item_idx, timestamp, rating,
        position, split."""
        files = sorted(self.path.glob("interactions-*.parquet"))
        frame = pd.concat([_read_parquet(f) for f in files], ignore_index=True)
        return frame.sort_values(["user_idx", "position"], kind="stable", ignore_index=True)

    @cached_property
    def items(self) -> pd.DataFrame:
        return _read_parquet(self.path / "items.parquet")

    @cached_property
    def users(self) -> pd.DataFrame:
        return _read_parquet(self.path / "users.parquet")


def is_up_to_date(source: DatasetSource, out_dir: Path, config: PrepareConfig) -> bool:
    """True when ``out_dir`` holds a verified preparation of the same inputs with the same config."""
    try:
        prepared = PreparedDataset.open(out_dir)
    except DataError:
        return False
    manifest = prepared.manifest
    if manifest.get("config") != config.model_dump(mode="json"):
        return False
    recorded = [(i["path"], i["sha256"]) for i in manifest.get("inputs", [])]
    current = [(p, file_digest(Path(p))) for p in source.interaction_paths()]
    return recorded == current
