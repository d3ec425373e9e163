"""Item metadata (title, year, genres) and user attributes, which the user simulator reads.

Metadata files are small (thousands of rows), so they are read with pandas in the driver and
joined onto the vocabularies. Ids are canonicalised the same way as in the interaction schema.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from recsys.data.sources import Column, DatasetSource
from recsys.errors import DataError

_TITLE_YEAR = re.compile(r"^(?P<title>.*?)\s*\((?P<year>\d{4})(?:-\d{0,4})?\)\s*$")
NO_GENRE = {"", "(no genres listed)", "unknown"}


@dataclass(frozen=True)
class ItemInfo:
    title: str | None
    year: int | None
    genres: tuple[str, ...]


def canonical_id(raw: str, as_int: bool) -> str:
    raw = raw.strip()
    if as_int:
        try:
            return str(int(float(raw)))
        except ValueError:
            return raw
    return raw


def _read_table(path: str, delimiter: str, header: bool, suffix: bool, encoding: str) -> pd.DataFrame:
    if not Path(path).exists():
        raise DataError(f"{path}: metadata file not found")
    try:
        frame = pd.read_csv(
            path,
            sep=delimiter,
            header=0 if header else None,
            encoding=encoding,
            dtype=str,
            keep_default_na=False,
            engine="python" if len(delimiter) > 1 else "c",
            quoting=3 if delimiter != "," else 0,  # csv.QUOTE_NONE except for real CSV
        )
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not valid {encoding} ({exc.reason} at byte {exc.start}); set its encoding") from exc
    except (pd.errors.ParserError, ValueError) as exc:
        raise DataError(f"{path}: cannot be read as {delimiter!r}-separated text: {exc}") from exc
    if suffix:
        frame.columns = [str(c).split(":", 1)[0] for c in frame.columns]
    return frame


def _column(frame: pd.DataFrame, column: Column, path: str) -> pd.Series:
    try:
        return frame.iloc[:, column] if isinstance(column, int) else frame[column]
    except (KeyError, IndexError) as exc:
        raise DataError(f"{path}: no column {column!r} (columns: {list(frame.columns)})") from exc


def _year(text: str) -> int | None:
    try:
        return int(float(text))
    except ValueError:
        return None


def load_items(source: DatasetSource) -> dict[str, ItemInfo]:
    """Item id (canonical) → title, year and genres; empty when the source has no item file."""
    spec = source.items
    if spec is None:
        return {}
    path = source.resolve(spec.path)
    frame = _read_table(path, spec.delimiter, spec.header, spec.header_type_suffix, spec.encoding)
    as_int = source.interactions.types.get("item") == "int"
    ids = _column(frame, spec.columns.id, path)
    titles = _column(frame, spec.columns.title, path) if spec.columns.title is not None else None
    years = _column(frame, spec.columns.year, path) if spec.columns.year is not None else None
    genres = _column(frame, spec.columns.genres, path) if spec.columns.genres is not None else None
    items: dict[str, ItemInfo] = {}
    for row in range(len(frame)):
        title = titles.iat[row] if titles is not None else None
        year = _year(years.iat[row]) if years is not None else None
        if title is not None and spec.title_has_year and (match := _TITLE_YEAR.match(title)):
            title, year = match["title"], year or int(match["year"])
        if spec.genre_flag_columns is not None:
            names = [g for col, g in spec.genre_flag_columns.items() if frame.iat[row, col].strip() == "1"]
        elif genres is not None:
            names = genres.iat[row].split(spec.genre_separator)
        else:
            names = []
        kept = tuple(g.strip() for g in names if g.strip() not in NO_GENRE)
        items[canonical_id(ids.iat[row], as_int)] = ItemInfo(title or None, year, kept)
    return items


def load_users(source: DatasetSource) -> tuple[list[str], dict[str, dict[str, str]]]:
    """The attribute names and user id (canonical) → attributes; empty without a user file."""
    spec = source.users
    if spec is None:
        return [], {}
    path = source.resolve(spec.path)
    frame = _read_table(path, spec.delimiter, spec.header, spec.header_type_suffix, spec.encoding)
    as_int = source.interactions.types.get("user") == "int"
    ids = _column(frame, spec.id_column, path)
    columns = {name: _column(frame, col, path) for name, col in spec.attributes.items()}
    users = {
        canonical_id(ids.iat[row], as_int): {name: str(col.iat[row]) for name, col in columns.items()}
        for row in range(len(frame))
    }
    return list(spec.attributes), users
