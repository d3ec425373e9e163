"""Beam prepare pipeline against a plain pandas implementation of the same transform, on ML-1M.

Each implementation runs in its own process, on the protocol's filter and leave-one-out split; the
parent samples the resident memory of each child's whole process tree (Beam's SDK workers and the
Dask workers are processes of their own), and checks that they produce the same split. Beam and
pandas run ``--repeats`` times each, alternately, so that a burst of other work on the machine
touches both sides; the recorded seconds are each side's median, and every run's seconds are kept.
The Beam pipeline runs on FnApiRunner and on a distributed runner: Beam's DaskRunner on a
``dask.distributed`` cluster of worker processes started here.

    python benchmarks/data_prepare.py [--dataset ml-1m] [--runner FnApiRunner] [--repeats 3]
        [--distributed-timeout 1200]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pandas as pd
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import write_result


def _child(kind: str, dataset: str, out: Path, runner: str, beam_args: list[str]) -> None:
    from recsys.data.catalog import builtin_source
    from recsys.settings import get_settings

    source = builtin_source(dataset, get_settings())
    if kind == "pandas":
        from recsys.data.reference import prepare_with_pandas

        started = time.perf_counter()
        out.mkdir(parents=True, exist_ok=True)
        prepare_with_pandas(source).interactions.to_parquet(out / "reference.parquet")
    elif kind == "beam":
        from recsys.data.beam_prepare import run_prepare

        started = time.perf_counter()
        run_prepare(source, out, runner=runner, beam_args=beam_args)
    else:
        from distributed import LocalCluster

        from recsys.data.beam_prepare import run_prepare

        cluster_options = {"n_workers": 2, "threads_per_worker": 2, "processes": True, "dashboard_address": None}
        with LocalCluster(**cluster_options) as cluster:  # type: ignore[no-untyped-call]
            started = time.perf_counter()  # the cluster's start is not the pipeline's time
            address = [f"--dask_client_address={cluster.scheduler_address}", "--dask_npartitions=4"]
            run_prepare(source, out, runner="DaskRunner", beam_args=address)
    print(json.dumps({"seconds": time.perf_counter() - started}))


def _run_child(kind: str, dataset: str, out: Path, runner: str, beam_args: str, timeout: float) -> dict[str, Any]:
    """Run one child; its seconds, and the peak resident memory of its process tree (sampled every 50 ms)."""
    command = [sys.executable, __file__, "--child", kind, "--dataset", dataset, "--out", str(out), "--runner", runner,
               f"--beam-args={beam_args}"]  # fmt: skip
    with tempfile.TemporaryFile("w+") as log:
        child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=log, text=True)
        tree, peak, deadline = psutil.Process(child.pid), 0, time.monotonic() + timeout
        while child.poll() is None:
            if time.monotonic() > deadline:
                for process in [*tree.children(recursive=True), tree]:
                    process.kill()
                return {"timed_out_after_seconds": timeout, "peak_mb": round(peak / 2**20, 1)}
            peak = max(peak, _tree_rss(tree))
            time.sleep(0.05)
        stdout = child.stdout.read() if child.stdout else ""
        if child.returncode:
            log.seek(0)
            raise RuntimeError(f"{kind} failed: {log.read()[-3000:]}")
    return {**json.loads(stdout.strip().splitlines()[-1]), "peak_mb": round(peak / 2**20, 1)}


def _median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The median seconds of a side's runs, and the highest peak memory of any of them."""
    seconds = statistics.median(run["seconds"] for run in runs)
    return {"seconds": seconds, "peak_mb": max(run["peak_mb"] for run in runs)}


def _tree_rss(process: psutil.Process) -> int:
    total = 0
    for member in [process, *process.children(recursive=True)]:
        with contextlib.suppress(psutil.Error):
            total += member.memory_info().rss
    return total


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
    parser.add_argument("--beam-args", default="", help="extra Beam flags of the FnApiRunner run, space-separated")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each side (Beam, pandas), alternately")
    parser.add_argument("--distributed-timeout", type=float, default=1200.0)
    parser.add_argument("--child", choices=("beam", "pandas", "distributed"))
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    beam_args = args.beam_args.split()
    if args.child:
        _child(args.child, args.dataset, args.out, args.runner, beam_args)
        return

    from recsys.data.catalog import FETCHABLE
    from recsys.data.fetch import fetch_dataset
    from recsys.data.prepared import PreparedDataset
    from recsys.settings import get_settings

    if args.dataset in FETCHABLE:
        fetch_dataset(args.dataset, get_settings())
    load_start = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        outs = {kind: Path(tmp) / kind for kind in ("beam", "pandas", "distributed")}
        beams, references = [], []
        for _ in range(args.repeats):
            beams.append(_run_child("beam", args.dataset, outs["beam"], args.runner, args.beam_args, 3600))
            references.append(_run_child("pandas", args.dataset, outs["pandas"], args.runner, "", 3600))
        beam, reference = _median_run(beams), _median_run(references)
        load_mid = os.getloadavg()[0]
        distributed = _run_child("distributed", args.dataset, outs["distributed"], "", "", args.distributed_timeout)
        prepared = PreparedDataset.open(outs["beam"])
        same_split = _same_rows(prepared.interactions, pd.read_parquet(outs["pandas"] / "reference.parquet"))
        figures = {
            "users": prepared.num_users,
            "items": prepared.num_items,
            "interactions": int(prepared.manifest["interactions"]),
            "rows": prepared.manifest["rows"],
            "runner": args.runner,
            "runner_options": beam_args,
            "repeats": args.repeats,
            "seconds_are": "the median of each side's runs; Beam and pandas ran alternately",
            "beam_seconds": round(beam["seconds"], 2),
            "beam_seconds_runs": [round(run["seconds"], 2) for run in beams],
            "beam_peak_mb": beam["peak_mb"],
            "pandas_seconds": round(reference["seconds"], 2),
            "pandas_seconds_runs": [round(run["seconds"], 2) for run in references],
            "pandas_peak_mb": reference["peak_mb"],
            "beam_over_pandas_seconds": round(beam["seconds"] / reference["seconds"], 2),
            "beam_over_pandas_peak_mb": round(beam["peak_mb"] / reference["peak_mb"], 2),
            "same_split": same_split,
            "distributed_runner": "DaskRunner (apache-beam 2.77, bundles fixed by recsys.data.dask_runner), "
            "dask.distributed LocalCluster of 2 worker processes",
            "distributed_seconds": round(distributed["seconds"], 2) if "seconds" in distributed else None,
            "distributed_timed_out_after_seconds": distributed.get("timed_out_after_seconds"),
            "distributed_peak_mb": distributed["peak_mb"],
            "distributed_same_outputs": _same_outputs(outs["beam"], outs["distributed"])
            if "seconds" in distributed
            else None,
            "peak_mb_is": "sampled resident memory of the child's whole process tree",
            "load_average_1m_start_mid_end": [round(load_start, 2), round(load_mid, 2), round(os.getloadavg()[0], 2)],
            "sessions": 1,
        }
    path = write_result("data_prepare", figures, args.dataset)
    print(path.read_text())


def _same_outputs(first: Path, second: Path) -> bool:
    """The same Parquet outputs, schema and dead letters, byte for byte (manifest checksums)."""
    from recsys.data.prepared import PreparedDataset

    compared = ("interactions", "items.parquet", "users.parquet", "schema.pbtxt", "dead_letter.jsonl")
    one, two = (PreparedDataset.open(p).manifest["outputs"] for p in (first, second))
    return all(one[name] == two.get(name) for name in one if name.startswith(compared))


if __name__ == "__main__":
    main()
