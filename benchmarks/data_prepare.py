"""Beam prepare pipeline against a plain pandas implementation of the same transform, on ML-1M.

Each implementation runs in its own process (so that peak memory is its own), on the protocol's
filter and leave-one-out split; the parent checks both produce the same split.

    python benchmarks/data_prepare.py [--dataset ml-1m] [--runner FnApiRunner]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import peak_rss_mb, write_result


def _child(kind: str, dataset: str, out: Path, runner: str) -> None:
    from recsys.data.catalog import builtin_source
    from recsys.settings import get_settings

    source = builtin_source(dataset, get_settings())
    started = time.perf_counter()
    if kind == "beam":
        from recsys.data.beam_prepare import run_prepare

        run_prepare(source, out, runner=runner)
    else:
        from recsys.data.reference import prepare_with_pandas

        out.mkdir(parents=True, exist_ok=True)
        prepare_with_pandas(source).interactions.to_parquet(out / "reference.parquet")
    print(json.dumps({"seconds": time.perf_counter() - started, "peak_mb": peak_rss_mb()}))


def _run_child(kind: str, dataset: str, out: Path, runner: str) -> dict[str, float]:
    command = [
        sys.executable,
        __file__,
        "--child",
        kind,
        "--dataset",
        dataset,
        "--out",
        str(out),
        "--runner",
        runner,
    ]
    done = subprocess.run(command, check=True, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def _same_rows(beam: pd.DataFrame, reference: pd.DataFrame) -> bool:
    """Same users, items, times, positions and split labels, row for row (dtypes aside)."""
    numeric = ["user_idx", "item_idx", "timestamp", "position"]
    if len(beam) != len(reference):
        return False
    same_numbers = (beam[numeric].to_numpy("int64") == reference[numeric].to_numpy("int64")).all()
    same_labels = (beam["split"].astype(str).to_numpy() == reference["split"].astype(str).to_numpy()).all()
    return bool(same_numbers and same_labels)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dataset", default="ml-1m")
    parser.add_argument("--runner", default="FnApiRunner")
    parser.add_argument("--child", choices=("beam", "pandas"))
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if args.child:
        _child(args.child, args.dataset, args.out, args.runner)
        return

    from recsys.data.catalog import FETCHABLE
    from recsys.data.fetch import fetch_dataset
    from recsys.data.prepared import PreparedDataset
    from recsys.settings import get_settings

    if args.dataset in FETCHABLE:
        fetch_dataset(args.dataset, get_settings())
    with tempfile.TemporaryDirectory() as tmp:
        beam_out, pandas_out = Path(tmp) / "beam", Path(tmp) / "pandas"
        beam = _run_child("beam", args.dataset, beam_out, args.runner)
        reference = _run_child("pandas", args.dataset, pandas_out, args.runner)
        prepared = PreparedDataset.open(beam_out)
        same_split = _same_rows(prepared.interactions, pd.read_parquet(pandas_out / "reference.parquet"))
        figures = {
            "users": prepared.num_users,
            "items": prepared.num_items,
            "interactions": int(prepared.manifest["interactions"]),
            "rows": prepared.manifest["rows"],
            "runner": args.runner,
            "beam_seconds": round(beam["seconds"], 2),
            "beam_peak_mb": round(beam["peak_mb"], 1),
            "pandas_seconds": round(reference["seconds"], 2),
            "pandas_peak_mb": round(reference["peak_mb"], 1),
            "beam_over_pandas_seconds": round(beam["seconds"] / reference["seconds"], 2),
            "beam_over_pandas_peak_mb": round(beam["peak_mb"] / reference["peak_mb"], 2),
            "same_split": same_split,
            "sessions": 1,
        }
    path = write_result("data_prepare", figures, args.dataset)
    print(path.read_text())


if __name__ == "__main__":
    main()
