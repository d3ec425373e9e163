"""Compile a pipeline to its IR YAML, run it here with kfp.local, or submit it to a cluster.

A local run executes every task as a subprocess of this interpreter (``SubprocessRunner`` with
``use_venv=False``: the project's environment already holds everything, and a local machine may
have no network). Its artifacts stay under the pipeline root, one folder per run and task, which
is also what the registry points at for the models it trained.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import logging
import re
import time
import warnings
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from pipelines.config import PipelineConfig
from pipelines.definitions import build
from recsys.errors import EvorecError
from recsys.redaction import redact

if TYPE_CHECKING:
    from serving.registry import RunInfo

log = logging.getLogger(__name__)


class PipelineRunError(EvorecError):
    """A pipeline run failed; the message names the task and the reason from its log."""


TASK_STARTED = re.compile(r"- INFO - Executing task '(?P<task>[^']+)'")
TASK_FINISHED = re.compile(r"Task '(?P<task>[^']+)' finished with status (?P<status>[A-Z]+)")
ANSI = re.compile(r"\x1b\[[0-9;]*m")
MICROSECONDS = re.compile(r"-\d{6}$")


@dataclass
class TaskTimes:
    """Per task name: how many ran, their summed seconds, and how many failed."""

    runs: int = 0
    seconds: float = 0.0
    failed: int = 0


class TaskWatcher(io.TextIOBase):
    """Stands in for stdout during a local run: the whole KFP log goes to a file, and each task's
    start and end (from kfp.local's own log lines) is timed and reported to ``on_task``."""

    def __init__(self, log: TextIO, on_task: Callable[[str, str], None] | None = None) -> None:
        self.log, self.on_task = log, on_task
        self.times: dict[str, TaskTimes] = defaultdict(TaskTimes)
        self._started: dict[str, list[float]] = defaultdict(list)
        self._partial = ""

    def write(self, text: str) -> int:
        self.log.write(redact(text))  # a task's own output (a traceback, a library's print) may carry a key
        lines = (self._partial + text).split("\n")
        self._partial = lines.pop()
        for line in lines:
            self._observe(ANSI.sub("", line))
        return len(text)

    def flush(self) -> None:
        self.log.flush()

    def _observe(self, line: str) -> None:
        if started := TASK_STARTED.search(line):
            self._started[started["task"]].append(time.monotonic())
            self._notify(started["task"], "started")
        elif finished := TASK_FINISHED.search(line):
            task, times = finished["task"], self.times[finished["task"]]
            begun = self._started[task].pop(0) if self._started[task] else time.monotonic()
            times.runs += 1
            times.seconds += time.monotonic() - begun
            times.failed += finished["status"] != "SUCCESS"
            self._notify(task, finished["status"].lower())

    def _notify(self, task: str, event: str) -> None:
        if self.on_task is not None:
            self.on_task(task, event)


@dataclass(frozen=True)
class LocalRun:
    """A finished local run: its folder under the pipeline root (one sub-folder per task), its
    full log, and the seconds each task took."""

    name: str
    folder: Path
    log: Path
    seconds: float
    tasks: dict[str, TaskTimes] = field(default_factory=dict)
    indexed: list[RunInfo] = field(default_factory=list)  # its evolution and experiments in the run index

    def task_folders(self, task: str) -> list[Path]:
        """The folders of ``task`` (several for tasks inside a ParallelFor), in run order."""
        return sorted(self.folder.glob(f"**/{task}"))

    def output(self, task: str, name: str = "Output") -> Any:
        """A parameter output of ``task`` (its first run), or None when the task did not run."""
        for folder in self.task_folders(task):
            written = json.loads((folder / "executor_output.json").read_text())
            return written.get("parameterValues", {}).get(name)
        return None


def compile_pipeline(name: str, config: PipelineConfig, out: Path) -> Path:
    """Write pipeline ``name`` as KFP IR YAML, with ``config``'s values as parameter defaults."""
    from kfp import compiler

    pipeline = build(name, config.generations, config.parallelism)
    out.parent.mkdir(parents=True, exist_ok=True)
    compiler.Compiler().compile(pipeline, str(out), pipeline_parameters=config.arguments(pipeline))
    return out


def run_local(
    name: str, config: PipelineConfig, pipeline_root: Path, on_task: Callable[[str, str], None] | None = None
) -> LocalRun:
    """Run pipeline ``name`` here, task by task; raises `PipelineRunError` naming a failed task and
    the log that tells why. ``on_task(task, event)`` hears of every task's start and end."""
    from kfp import local

    pipeline_root = pipeline_root.resolve()
    pipeline_root.mkdir(parents=True, exist_ok=True)
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(pipeline_root))
    pipeline = build(name, config.generations, config.parallelism)
    before = set(pipeline_root.iterdir())
    log_path = pipeline_root / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}.log"
    started = time.monotonic()
    with log_path.open("w") as log_file, warnings.catch_warnings():
        # The project's image is not named like a Python image; locally the task runs in this interpreter.
        warnings.filterwarnings("ignore", message="You may be attemping to run a task", category=RuntimeWarning)
        watcher = TaskWatcher(log_file, on_task)
        # kfp.local swaps the root handlers per task and, with tasks in parallel, sometimes puts the
        # caller's back mid-run: make the caller's a plain one into the log too, so no line is lost.
        root, plain = logging.getLogger(), logging.StreamHandler(watcher)
        plain.setFormatter(logging.Formatter("%(asctime)s - %(levelname)s - %(message)s"))
        saved, root.handlers = root.handlers[:], [plain]
        try:
            with contextlib.redirect_stdout(watcher), contextlib.redirect_stderr(watcher):
                pipeline(**config.arguments(pipeline))
        except RuntimeError as exc:  # kfp.local's report of a failed task: its name and status
            raise PipelineRunError(f"pipeline {name} failed: {ANSI.sub('', str(exc))} (log: {log_path})") from exc
        finally:
            root.handlers = saved
    [folder] = [path for path in pipeline_root.iterdir() if path not in before and path.is_dir()]
    run = LocalRun(name, folder, log_path, round(time.monotonic() - started, 1), dict(watcher.times))
    return dataclasses.replace(run, indexed=index_run(run, config.registry_url))


def index_run(run: LocalRun, registry_url: str) -> list[RunInfo]:
    """Record the run's evolution (its last generation's state) and experiments in the registry's
    run index, named after the pipeline run, so the console and `evorec runs list` find them."""
    from recsys.settings import get_settings
    from serving.registry import Registry, default_registry_url

    states = sorted(run.folder.glob("**/next_state/evolution.db"), key=lambda path: path.stat().st_mtime)
    pipeline = run.folder.name
    name = MICROSECONDS.sub("", pipeline)  # two-loop-2026-12-04-16-42-44
    with Registry(registry_url or default_registry_url(get_settings())) as registry:
        indexed = []
        if states:
            state = states[-1].parent
            report = state / "report.html"
            indexed.append(
                registry.record_run("evolution", state, name=f"{name}-evolution",
                                    report=report if report.is_file() else None, pipeline=pipeline)
            )  # fmt: skip
        for experiment in sorted(run.folder.glob("**/experiment/*/plan.json")):
            reports = sorted(experiment.parent.glob("report-*.html"))
            indexed.append(
                registry.record_run("experiment", experiment.parent, report=reports[0] if reports else None,
                                    pipeline=pipeline)
            )  # fmt: skip
    return indexed


def submit(
    name: str, config: PipelineConfig, host: str, experiment: str = "evorec", namespace: str | None = None
) -> dict[str, Any]:
    """Submit pipeline ``name`` to the Kubeflow Pipelines API at ``host``; returns the run's id and URL.

    Credentials come from the environment as kfp.Client reads them (in-cluster service account,
    ``KF_PIPELINES_SA_TOKEN_PATH``), never from the config: the config is a pipeline parameter
    and shows in the cluster's UI.
    """
    import kfp
    from kfp_server_api.exceptions import ApiException
    from urllib3.exceptions import HTTPError

    pipeline = build(name, config.generations, config.parallelism)
    try:
        client = kfp.Client(host=host, namespace=namespace)
        result = client.create_run_from_pipeline_func(
            pipeline, arguments=config.arguments(pipeline), experiment_name=experiment,
            run_name=f"{name}-{time.time():.0f}",
        )  # fmt: skip
    except (ApiException, HTTPError, OSError) as exc:
        reason = getattr(exc, "reason", None) or exc
        raise PipelineRunError(f"cannot submit {name} to Kubeflow Pipelines at {host}: {reason}") from exc
    return {"run_id": result.run_id, "url": f"{host.rstrip('/')}/#/runs/details/{result.run_id}"}
