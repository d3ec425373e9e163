"""A plain in-memory pandas implementation of the prepare transform, for clean delimited data.

It is the baseline the Beam pipeline is benchmarked against and the oracle it is checked against:
same filters, same vocabularies, same ordering and the same split functions, none of the row-level
dead-lettering (rows whose fields do not parse are dropped and counted).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from recsys.data.config import PrepareConfig
from recsys.data.sources import DatasetSource
from recsys.data.splits import assign_splits, build_vocab


@dataclass(frozen=True)
class ReferenceResult:
    interactions: pd.DataFrame  # user_id, item_id, user_idx, item_idx, timestamp, rating, position, split
    rows_read: int
    rows_unparsable: int
    rows_duplicate: int


def _canonical(column: pd.Series, as_int: bool) -> pd.Series:
    if as_int:
        return pd.to_numeric(column, errors="coerce").astype("Int64").astype(str)
    return column.str.strip()


def _read(source: DatasetSource) -> pd.DataFrame:
    spec = source.interactions
    frames = []
    for src, path in enumerate(source.interaction_paths()):
        frame = pd.read_csv(
            path,
            sep=spec.delimiter,
            header=0 if spec.header else None,
            encoding=spec.encoding,
            dtype=str,
            keep_default_na=False,
            engine="python" if len(spec.delimiter) > 1 else "c",
        )
        if spec.header_type_suffix:
            frame.columns = [str(c).split(":", 1)[0] for c in frame.columns]
        picked = pd.DataFrame(
            {
                name: frame.iloc[:, col] if isinstance(col, int) else frame[col]
                for name, col in spec.columns.model_dump().items()
                if col is not None
            }
        )
        picked["src"] = src
        picked["line"] = np.arange(len(frame)) + (2 if spec.header else 1)
        frames.append(picked)
    return pd.concat(frames, ignore_index=True)


def prepare_with_pandas(source: DatasetSource, config: PrepareConfig | None = None) -> ReferenceResult:
    """The prepared interactions of ``source``, computed in memory with pandas."""
    config = config or PrepareConfig()
    raw = _read(source)
    rows_read = len(raw)
    types = source.interactions.types
    frame = pd.DataFrame(
        {
            "user_id": _canonical(raw["user"], types.get("user") == "int"),
            "item_id": _canonical(raw["item"], types.get("item") == "int"),
            "rating": pd.to_numeric(raw["rating"], errors="coerce") if "rating" in raw else np.nan,
            "timestamp": pd.to_numeric(raw["timestamp"], errors="coerce") if "timestamp" in raw else 0,
            "src": raw["src"],
            "line": raw["line"],
        }
    )
    parsable = ~frame[["user_id", "item_id", "timestamp"]].isin(["<NA>"]).any(axis=1) & frame["timestamp"].notna()
    frame = frame[parsable]
    rows_unparsable = rows_read - len(frame)
    frame = frame.assign(timestamp=frame["timestamp"].astype("int64"))
    before = len(frame)
    if config.drop_duplicates:
        frame = frame.drop_duplicates(["user_id", "item_id", "timestamp", "rating"], keep="first")
    rows_duplicate = before - len(frame)

    flt = config.filter
    for _ in range(flt.rounds):
        frame = frame[frame.groupby("item_id")["item_id"].transform("size") >= flt.min_item_interactions]
        frame = frame[frame.groupby("user_id")["user_id"].transform("size") >= flt.min_user_interactions]

    users = build_vocab(frame["user_id"].unique(), start=0)
    items = build_vocab(frame["item_id"].unique(), start=1)
    frame = frame.assign(user_idx=frame["user_id"].map(users), item_idx=frame["item_id"].map(items))
    frame = frame.sort_values(["user_idx", "timestamp", "src", "line"], kind="stable", ignore_index=True)
    frame["position"] = frame.groupby("user_idx").cumcount()
    length = frame.groupby("user_idx")["user_idx"].transform("size")
    split = config.split
    if split.method == "leave_one_out":
        labels = np.where(
            frame["position"] == length - 1,
            "test",
            np.where(frame["position"] == length - 2, "valid", "train"),
        )
    else:
        labels = np.concatenate(
            [
                assign_splits(len(group), "random", user, split.ratios, split.seed)
                for user, group in frame.groupby("user_id", sort=False)
            ]
        )
    frame["split"] = labels
    columns = ["user_id", "item_id", "user_idx", "item_idx", "timestamp", "rating", "position", "split"]
    return ReferenceResult(frame[columns], rows_read, rows_unparsable, rows_duplicate)
