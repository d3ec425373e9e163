"""Shared fixtures: an isolated data dir per test, and small files in each MovieLens layout."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from evorec.settings import Settings
from recsys.data.catalog import shipped_dir


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "evorec-data")


@pytest.fixture
def small_latest(tmp_path: Path) -> Path:
    """The first users of the shipped ml-latest-small (real rows), as a folder of the same layout."""
    folder = tmp_path / "ml-latest-small"
    folder.mkdir()
    lines = (shipped_dir() / "ratings.csv").read_text().splitlines()
    keep = [lines[0]] + [line for line in lines[1:] if int(line.split(",", 1)[0]) <= 20]
    (folder / "ratings.csv").write_text("\n".join(keep) + "\n")
    shutil.copy(shipped_dir() / "movies.csv", folder / "movies.csv")
    return folder
