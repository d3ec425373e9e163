"""Shared fixtures: an isolated data dir and registry per test, and small files in each MovieLens layout."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from recsys.data.catalog import shipped_dir
from recsys.settings import Settings


@pytest.fixture(autouse=True)
def own_registry(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test (and every command it starts) indexes its runs in a registry of its own, never in the
    user's default one; a test that names another registry still can."""
    monkeypatch.setenv("EVOREC_REGISTRY_URL", f"sqlite:///{tmp_path_factory.mktemp('registry') / 'registry.db'}")


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


@pytest.fixture(scope="session")
def prepared_small(tmp_path_factory: pytest.TempPathFactory):
    """The first 60 users of ml-latest-small, prepared by the real pipeline with the protocol's filter."""
    from recsys.data.beam_prepare import run_prepare
    from recsys.data.catalog import layout_source
    from recsys.data.prepared import PreparedDataset

    folder = tmp_path_factory.mktemp("ml-latest-60")
    lines = (shipped_dir() / "ratings.csv").read_text().splitlines()
    keep = [lines[0]] + [line for line in lines[1:] if int(line.split(",", 1)[0]) <= 60]
    (folder / "ratings.csv").write_text("\n".join(keep) + "\n")
    shutil.copy(shipped_dir() / "movies.csv", folder / "movies.csv")
    out = tmp_path_factory.mktemp("prepared")
    run_prepare(layout_source("ml-latest-small", "grouplens", folder), out)
    return PreparedDataset.open(out)


@pytest.fixture(scope="session")
def seeds_dir() -> Path:
    return Path(__file__).resolve().parent.parent / "offline_agent" / "seeds"


@pytest.fixture(scope="session")
def artifacts(prepared_small, seeds_dir, tmp_path_factory) -> dict[str, Path]:
    """sasrec_ce and mf_bpr trained for one epoch on ``prepared_small`` and exported for serving."""
    from recsys.artifacts import export_trained
    from recsys.candidate import load_candidate
    from recsys.trainer import Trainer, TrainerConfig

    folder = tmp_path_factory.mktemp("artifacts")
    exported = {}
    for seed in ("sasrec_ce", "mf_bpr"):
        trainer = Trainer(load_candidate(seeds_dir / seed), prepared_small, TrainerConfig(max_epochs=1, progress=False))
        exported[seed] = export_trained(trainer, trainer.fit(), folder / seed)
    return exported
