"""Declarative descriptions of raw interaction data: which files, which format, which columns.

A :class:`DatasetSource` is all the data pipeline needs to read a dataset. The built-in MovieLens
formats are instances of it (see :mod:`recsys.data.catalog`); any other CSV, TSV or Parquet data is
described by the same model in YAML::

    name: my-shop
    interactions:
      paths: [events.csv]
      delimiter: ","
      header: true
      columns: {user: customer_id, item: sku, rating: stars, timestamp: ts}
      types: {user: int}
      rating_range: [1, 5]
    items:
      path: products.csv
      columns: {id: sku, title: name, genres: category}
      genre_separator: "|"
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from recsys.config_files import load_yaml_model

Column = str | int
"""A column named by its header name, or by its 0-based position in a file without a header."""

FieldName = Literal["user", "item", "rating", "timestamp"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class InteractionColumns(_Strict):
    """Which raw column holds each interaction field."""

    user: Column
    item: Column
    rating: Column | None = None
    timestamp: Column | None = None


class InteractionFiles(_Strict):
    """One or more files of user-item interactions in the same format."""

    paths: list[str] = Field(min_length=1)
    format: Literal["delimited", "parquet"] = "delimited"
    delimiter: str = ","
    header: bool = True
    header_type_suffix: bool = Field(
        default=False, description="RecBole atomic files: header names carry ':type' suffixes."
    )
    encoding: str = "utf-8"
    columns: InteractionColumns
    types: dict[FieldName, Literal["int", "str", "float"]] = Field(
        default_factory=dict, description="Declared types; undeclared ones are inferred on the first run."
    )
    timestamp_format: str = Field(
        default="unix", description="'unix' (seconds), 'unix_ms', or a strptime format such as '%Y-%m-%d'."
    )
    rating_range: tuple[float, float] | None = None

    @field_validator("delimiter")
    @classmethod
    def _non_empty_delimiter(cls, value: str) -> str:
        if not value:
            raise ValueError("delimiter must not be empty")
        return value

    @model_validator(mode="after")
    def _columns_fit_header(self) -> InteractionFiles:
        named = [c for c in self.columns.model_dump().values() if isinstance(c, str)]
        if named and not self.header and self.format == "delimited":
            raise ValueError(f"columns are named {named} but the files have no header: use column positions")
        if self.rating_range is not None and self.rating_range[0] > self.rating_range[1]:
            raise ValueError(f"rating_range {self.rating_range} has its minimum above its maximum")
        return self


class ItemColumns(_Strict):
    id: Column
    title: Column | None = None
    genres: Column | None = None
    year: Column | None = None


class ItemFile(_Strict):
    """Item metadata: titles, genres and release years, which the user simulator reads."""

    path: str
    delimiter: str = ","
    header: bool = True
    header_type_suffix: bool = False
    encoding: str = "utf-8"
    columns: ItemColumns
    genre_separator: str = "|"
    genre_flag_columns: dict[int, str] | None = Field(
        default=None, description="MovieLens-100K style: one 0/1 column per genre, by position."
    )
    title_has_year: bool = Field(default=False, description="Titles end in '(1995)': split the year off.")


class UserFile(_Strict):
    """User attributes (age, gender, occupation, ...) kept as strings."""

    path: str
    delimiter: str = ","
    header: bool = True
    header_type_suffix: bool = False
    encoding: str = "utf-8"
    id_column: Column
    attributes: dict[str, Column] = Field(default_factory=dict)


class DatasetSource(_Strict):
    """Everything needed to read one dataset; relative paths resolve against ``base_dir``."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    base_dir: str = "."
    interactions: InteractionFiles
    items: ItemFile | None = None
    users: UserFile | None = None

    def resolve(self, relative: str) -> str:
        """The path of a file of this source, absolute or URL paths left as they are."""
        if "://" in relative or Path(relative).is_absolute():
            return relative
        return str(Path(self.base_dir) / relative)

    def interaction_paths(self) -> list[str]:
        return [self.resolve(p) for p in self.interactions.paths]


def load_source_yaml(path: Path) -> DatasetSource:
    """Read a dataset description from YAML; relative paths in it are taken from the file's folder."""
    return load_yaml_model(
        path, DatasetSource, "dataset description", defaults={"base_dir": str(path.parent.resolve())}
    )
