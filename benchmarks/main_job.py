"""The main job (`make run`: the two-loop pipeline on the embedded default): its time, its peak
memory and where the time goes, against the same stages called in one process (no orchestrator).

Both runs start from an empty registry (so the seed is trained as the first production model, the
longest path) in a temporary folder. The pipeline run is `evorec run` as a subprocess, exactly
what `make run` starts; its per-task seconds come from the run's ``summary.json``. Memory is the
peak of the summed resident memory of the whole process tree (tasks and sandboxes), sampled.

    python benchmarks/main_job.py
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.common import write_result

EVOREC = Path(sys.executable).parent / "evorec"


class TreeMemory:
    """Samples the summed RSS of a process and all its descendants until stopped."""

    def __init__(self, pid: int, every: float = 0.5) -> None:
        self.root, self.every, self.peak_mb = psutil.Process(pid), every, 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> TreeMemory:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    def _sample(self) -> None:
        while not self._stop.wait(self.every):
            total = 0
            for process in [self.root, *self.root.children(recursive=True)]:
                try:
                    total += process.memory_info().rss
                except psutil.Error:  # it ended between listing and reading
                    continue
            self.peak_mb = max(self.peak_mb, total / 2**20)


def pipeline_run(folder: Path, config: Path | None = None) -> dict[str, Any]:
    """`evorec run` in ``folder`` (with ``config``, else the embedded default) against a fresh registry; its
    summary, seconds and peak memory."""
    env = {**os.environ, "EVOREC_REGISTRY_URL": f"sqlite:///{folder / 'registry.db'}"}
    started = time.monotonic()
    process = subprocess.Popen(
        [str(EVOREC), "run", *(["--config", str(config)] if config else [])], cwd=folder, env=env
    )
    with TreeMemory(process.pid) as memory:
        code = process.wait()
    if code != 0:
        raise SystemExit(f"evorec run failed with exit code {code}")
    [summary] = (folder / "runs" / "pipelines").glob("two-loop-*/summary.json")
    return {"seconds": round(time.monotonic() - started, 1), "peak_mb": round(memory.peak_mb), **json.loads(
        summary.read_text())}  # fmt: skip


def in_process_run(folder: Path) -> dict[str, Any]:
    """The same stages called in this process, fan-outs on a thread pool: the orchestrator-free baseline."""
    from pipelines import steps
    from pipelines.config import PipelineConfig

    config, url = PipelineConfig(), f"sqlite:///{folder / 'registry.db'}"
    evolution, pool = config.evolution, ThreadPoolExecutor(max_workers=config.parallelism)
    stages: dict[str, float] = defaultdict(float)

    @contextmanager
    def stage(name: str) -> Iterator[None]:
        begun = time.monotonic()
        yield
        stages[name] += time.monotonic() - begun

    started = time.monotonic()
    with TreeMemory(os.getpid()) as memory:
        prepared, state = folder / "prepared", folder / "state-0"
        with stage("prepare"):
            steps.prepare(config.dataset, prepared)
        with stage("start"):
            keys = steps.start_evolution(evolution, prepared, state)
        for generation in range(config.generations + 1):
            outcomes = [folder / f"outcome-{generation}-{i}" for i in range(len(keys))]
            evaluate = partial(steps.evaluate_program, evolution, prepared, state)
            with stage("evaluate"):
                list(pool.map(evaluate, keys, outcomes))
            propose = 0 if generation == config.generations else config.candidates_per_generation
            stored = folder / f"state-{generation + 1}"
            with stage("record"):
                keys = steps.record_generation(evolution, prepared, state, outcomes, stored, propose)
            state = stored
        with stage("finalists"):
            roles = steps.finalists(evolution, prepared, state, url, config.model_name)
        models = [folder / f"model-{role}" for role in roles]
        train = partial(steps.final_training, evolution, prepared, state)
        with stage("final training"):
            seconds, epochs = [config.final_train_seconds] * len(roles), [config.final_max_epochs] * len(roles)
            list(pool.map(train, roles, seconds, models, epochs))
        with stage("register"):
            finalists = [(model, str(model)) for model in models]
            version = steps.register_finalists(finalists, url, config.model_name, config.first_production_policy)
        if version:
            with stage("experiment"):
                steps.experiment(config.online, prepared, url, version, folder / "ab")
    return {"seconds": round(time.monotonic() - started, 1), "peak_mb": round(memory.peak_mb),
            "stages": {name: round(seconds, 1) for name, seconds in stages.items()}, "version": version}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="main-job-") as kfp_dir, tempfile.TemporaryDirectory() as plain_dir:
        pipeline = pipeline_run(Path(kfp_dir))
        baseline = in_process_run(Path(plain_dir))
    figures = {
        "seconds": pipeline["seconds"],
        "peak_mb": pipeline["peak_mb"],
        "stages": {name: times["seconds"] for name, times in pipeline["tasks"].items()},
        "task_runs": {name: times["runs"] for name, times in pipeline["tasks"].items()},
        "outcome": {"version": pipeline["version"], "state": pipeline["state"], "decision": pipeline["decision"]},
        "baseline_in_process": baseline,
        "seconds_ratio_vs_in_process": round(pipeline["seconds"] / baseline["seconds"], 3),
        "peak_mb_ratio_vs_in_process": round(pipeline["peak_mb"] / max(baseline["peak_mb"], 1), 3),
        "note": "stages: summed seconds of each pipeline task (tasks in a ParallelFor overlap, so they can add up "
        "to more than the wall time); the baseline runs the same steps with the same budgets in one process",
    }
    path = write_result("main_job", figures, "ml-latest-small (shipped), embedded default pipeline config")
    print(json.dumps(figures, indent=2))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
