"""The evaluation cascade of one candidate: static checks, a smoke run, budgeted training.

Static checks read the code without running it. The smoke run trains briefly on the first
users (seconds) to catch crashes and NaNs cheaply; only a candidate that passes gets the budgeted
run on the whole dataset. Both runs execute in the sandbox: candidate code never runs in this
process.

The sandbox sees a view of the data without the held-out targets, and never computes a metric:
it hands ranked lists to a judge in this process (:class:`recsys.heldout.Judge`), which checks them
and scores them; every metric recorded here is the judge's. An exported model is checked to rank
as its lists did. Validation metrics are for selection; test metrics are kept apart and never shown
to proposers or used to rank.
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import hashlib
import json
import math
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from offline_agent.sandbox import SandboxLimits, run_sandboxed
from offline_agent.sandbox_entry import ARTIFACT_FOLDER, CANDIDATE_FOLDER, VIEW_FOLDER
from recsys.candidate import BLOCKS, REQUIRED, REQUIRED_VALUES, parse_block
from recsys.compile_cache import CACHE_ENV, copy_cache, warm_cache
from recsys.data.view import copy_view
from recsys.evaluation import LIST_AGREEMENT, SELECTION_METRIC, IntegrityError, list_agreement
from recsys.heldout import SAVED_EPOCH, Judge
from recsys.redaction import redact_json
from reward_lib.candidate import candidate_alignment

Stage = Literal["static", "smoke", "train"]
CHECKPOINT = "checkpoint"  # inside the work dir
CHECKPOINT_FILES = ("last.pt", "best.pt", SAVED_EPOCH)

ENTRY = "from offline_agent.sandbox_entry import main\n\nmain()\n"
SANDBOXES = "evorec-sandboxes"  # under the work root: every work dir, hidden from every other sandbox
COMPILE_CACHE = "compile-cache"  # in the work dir: the sandbox's private copy of the warm compile cache
JUDGED = "judged.json"  # beside a kept checkpoint: the judge's record of the epochs trained so far
VERIFIED_USERS = 64  # test users whose lists are checked against the exported program


class EvaluationConfig(BaseModel):
    """Budgets of the cascade; ``dataset`` is a prepared folder."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    dataset: str = Field(default="", description="prepared folder; the evolution run fills it in")
    seed: int = 0
    smoke: bool = Field(default=True, description="off for a training resumed from a candidate that passed it")
    smoke_users: int = Field(default=200, ge=10)
    smoke_seconds: float = Field(default=60, gt=0)
    train_seconds: float = Field(default=600, gt=0)
    max_epochs: int | None = Field(default=None, ge=1)
    threads: int = Field(default=1, ge=1)
    overhead_seconds: float = Field(default=180, ge=0, description="start-up and evaluation time on top of training")
    memory_gib: float = Field(default=8, gt=0)
    diagnose: bool = Field(default=True, description="run the diagnosis probes on the trained candidate")
    diagnosis_users: int = Field(default=512, ge=10, description="users the per-user probes sample")
    list_users: tuple[int, ...] = Field(default=(), description="users whose top-10 the simulator critiques")
    hidden_paths: tuple[str, ...] = Field(
        default=(), description="more folders no sandbox may read (the evolution run's folder and database)"
    )
    export_dir: str | None = Field(
        default=None, description="export the trained model for serving (inside the sandbox) into this folder"
    )
    work_dir: str | None = Field(default=None, description="where sandboxes run (default: a temporary folder)")
    checkpoint_dir: str | None = Field(
        default=None,
        description="keep each candidate's training checkpoint in a subfolder named by its content key and resume "
        "from it: a training longer than one invocation (a winner trained to convergence) goes on where the last "
        "one stopped; the time budget applies to each invocation",
    )
    alignment_logs: tuple[str, ...] = Field(
        default=(),
        description="simulated A/B logs (run folders or events.parquet) on which the alignment of the "
        "candidate's REWARD_SPEC with the north-star is measured (read as data: no candidate code runs)",
    )


@dataclass
class EvaluationOutcome:
    status: Literal["evaluated", "failed"]
    stage: Stage
    reason: str | None
    valid: dict[str, float] | None = None
    test: dict[str, float] | None = None
    history: list[dict[str, Any]] = field(default_factory=list)
    stopped: str | None = None  # why training ended: "budget" (time), "epochs" or "patience"
    seconds: float = 0.0
    isolation: tuple[str, ...] = ()
    diagnosis: dict[str, Any] | None = None
    diagnosis_error: str | None = None
    artifact: str | None = None  # the serving artifact's folder, when exported
    export_error: str | None = None
    reward_alignment: dict[str, Any] | None = None  # the reward's alignment with the north-star, or why none

    @property
    def best_epoch(self) -> int | None:
        """The epoch (from 1) of the best validation NDCG@10, the one the metrics are of; None before any."""
        if not self.history:
            return None
        return max(range(len(self.history)), key=lambda i: self.history[i]["valid_ndcg@10"]) + 1

    def to_json(self) -> dict[str, Any]:
        """A plain mapping, for an evaluation that ran in another process or pipeline task."""
        return dataclasses.asdict(self)

    def redacted(self) -> EvaluationOutcome:
        """This outcome with every secret value redacted from its text (a candidate may print any it finds)."""
        return EvaluationOutcome.from_json(redact_json(self.to_json()))

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> EvaluationOutcome:
        return cls(**{**data, "isolation": tuple(data.get("isolation", ()))})


def content_key(sources: dict[str, str]) -> str:
    """A short content hash of the blocks: the artifact folder's name."""
    digest = hashlib.sha256("".join(f"{block}\0{sources[block]}\0" for block in sorted(sources)).encode())
    return digest.hexdigest()[:16]


def static_check(sources: dict[str, str]) -> str | None:
    """The first contract problem visible without running code, or None."""
    for block in BLOCKS:
        try:
            tree = parse_block(sources[block], filename=f"{block}.py")
        except SyntaxError as exc:
            return f"{block}.py, line {exc.lineno}: syntax error: {exc.msg}"
        defined = {node.name for node in tree.body if isinstance(node, ast.FunctionDef)}
        assigned = {
            t.id for node in tree.body if isinstance(node, ast.Assign) for t in node.targets if isinstance(t, ast.Name)
        }
        for function in REQUIRED[block]:
            if function not in defined:
                return f"{block}.py: function {function} is missing"
        for name in REQUIRED_VALUES.get(block, ()):
            if name not in assigned:
                return f"{block}.py: {name} is missing"
    return None


def _copy_checkpoint(source: Path, target: Path) -> None:
    """The trainer's checkpoint files, regular files only (a link the candidate planted is not followed)."""
    target.mkdir(parents=True, exist_ok=True)
    for name in CHECKPOINT_FILES:
        path = source / name
        if path.is_file() and not path.is_symlink():
            shutil.copyfile(path, target / f"{name}.tmp")
            (target / f"{name}.tmp").replace(target / name)  # a copy cut short never replaces a good file


@dataclass(frozen=True)
class _HeldOutData:
    """What the judge of one dataset needs, loaded once per process: the full sequences (with the
    targets), the catalogue a trainer on the same users builds, and the sandbox's view on disk."""

    sequences: Any
    catalog: Any
    view: Path


_LOADING = threading.Lock()


@functools.cache
def _dataset(dataset: str, views: Path) -> tuple[Any, Any, Path]:
    """The prepared dataset, its full sequences and the sandbox's view on disk: loaded and written once."""
    from recsys.data.prepared import PreparedDataset
    from recsys.data.view import write_training_view
    from recsys.sequences import UserSequences

    prepared = PreparedDataset.open(Path(dataset))
    view = views / hashlib.sha256(f"{Path(dataset).resolve()}".encode()).hexdigest()[:16]
    if not (view / "manifest.json").exists():
        written = write_training_view(prepared, Path(tempfile.mkdtemp(prefix=".view-", dir=views))).path
        try:
            written.replace(view)
        except OSError:  # another process wrote it first: same content
            shutil.rmtree(written, ignore_errors=True)
    return prepared, UserSequences.from_prepared(prepared), view


@functools.cache
def _heldout_data(dataset: str, max_users: int | None, views: Path) -> _HeldOutData:
    from recsys.evaluation import ItemCatalog

    prepared, sequences, view = _dataset(dataset, views)
    if max_users is not None:
        sequences = sequences.head(max_users)
    return _HeldOutData(sequences, ItemCatalog.build(prepared, sequences), view)


@functools.cache
def _warm_compile_cache(threads: int) -> Path | None:
    """This machine's warm ``torch.compile`` cache for ``threads`` threads, where the trainer's fast path
    compiles (bfloat16 units)."""
    import torch

    from recsys.precision import bf16_is_fast

    return warm_cache(threads) if bf16_is_fast(torch.device("cpu")) else None


def _loaded(config: EvaluationConfig, root: Path, max_users: int | None) -> tuple[_HeldOutData, Path | None]:
    """The held-out data and the warm compile cache, loaded once per process: evaluations run side by side in
    threads, so the first loads and the others wait for it."""
    with _LOADING:
        return _heldout_data(config.dataset, max_users, root / ".views"), _warm_compile_cache(config.threads)


def _load_judge(judged: Path, data: _HeldOutData) -> Judge:
    """A judge that goes on from its record of an earlier invocation (kept beside the checkpoint)."""
    import numpy as np

    record = json.loads(judged.read_text())
    sample = record.get("best_sample")
    best_sample = np.asarray(sample, dtype=np.int64) if sample is not None else None
    return Judge(data.sequences, data.catalog, history=record["history"], best_sample=best_sample)


def _hidden_paths(config: EvaluationConfig, root: Path) -> list[Path]:
    """Folders no sandbox may read: the data with its targets, every work dir, kept checkpoints and
    artifacts, and what the caller names (the run's database)."""
    from recsys.settings import get_settings

    paths = [Path(config.dataset), get_settings().data_dir, root, *(Path(p) for p in config.hidden_paths)]
    paths += [Path(p) for p in (config.checkpoint_dir, config.export_dir) if p]
    return paths


def _stage(
    sources: dict[str, str],
    config: EvaluationConfig,
    job: dict[str, Any],
    wall: float,
    root: Path,
    artifact_to: Path | None = None,
    checkpoint: Path | None = None,
) -> tuple[Any, Judge]:
    """One sandboxed run judged by a :class:`Judge` here; an artifact the run exported is copied to
    ``artifact_to`` before the work dir goes.

    With ``checkpoint`` its files are copied into the work dir first and, after a run that ended
    cleanly or was killed from outside with a checkpoint of exactly the epochs the judge scored, back, with the
    judge's record beside them: the candidate writes only inside its sandbox, a final stopped at its wall limit
    keeps its hours of training, and a run killed mid-write leaves the last good checkpoint in place."""
    data, warm = _loaded(config, root, job.get("max_users"))
    judged = checkpoint / JUDGED if checkpoint is not None else None
    judge = _load_judge(judged, data) if judged is not None and judged.exists() else Judge(data.sequences, data.catalog)
    workdir = Path(tempfile.mkdtemp(prefix="evaluation-", dir=root))
    try:
        candidate = workdir / CANDIDATE_FOLDER
        candidate.mkdir()
        copy_view(data.view, workdir / VIEW_FOLDER)
        if checkpoint is not None:
            _copy_checkpoint(checkpoint, workdir / CHECKPOINT)
        for block, source in sources.items():
            (candidate / f"{block}.py").write_text(source)
        (workdir / "job.json").write_text(json.dumps(job))
        limits = SandboxLimits(wall_seconds=wall, memory_bytes=int(config.memory_gib * 2**30))
        threads = str(config.threads)
        env = {"OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}
        if warm is not None and copy_cache(warm, workdir / COMPILE_CACHE):
            env[CACHE_ENV] = str(workdir / COMPILE_CACHE)
        outcome = run_sandboxed(ENTRY, workdir, limits, env, service=judge.handle, hidden=_hidden_paths(config, root))
        exported = workdir / ARTIFACT_FOLDER
        if artifact_to is not None and outcome.status == "ok" and exported.is_dir() and not exported.is_symlink():
            shutil.rmtree(artifact_to, ignore_errors=True)
            shutil.copytree(exported, artifact_to, symlinks=True)
        kept_whole = outcome.status == "ok" or _saved_as_judged(workdir / CHECKPOINT, judge, outcome.status)
        if checkpoint is not None and judged is not None and kept_whole and judge.violation is None:
            _copy_checkpoint(workdir / CHECKPOINT, checkpoint)
            sample = judge.best_sample.tolist() if judge.best_sample is not None else None
            judged.write_text(json.dumps({"history": judge.history, "best_sample": sample}))
        return outcome, judge
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


KILLED_FROM_OUTSIDE = ("timeout", "out_of_memory")


def killed_from_outside(outcome: EvaluationOutcome) -> bool:
    """Whether the evaluation failed because its sandbox was stopped at a limit (wall clock, memory), not
    because the candidate or the judge refused it: the failures a kept checkpoint survives."""
    return outcome.status == "failed" and (outcome.reason or "").split(":", 1)[0] in KILLED_FROM_OUTSIDE


def kept_epochs(sources: dict[str, str], config: EvaluationConfig) -> int:
    """Epochs the checkpoint kept for ``sources`` under ``config.checkpoint_dir`` holds; 0 without one."""
    return len(_kept_record(sources, config))


def _kept_record(sources: dict[str, str], config: EvaluationConfig) -> list[dict[str, float]]:
    """The judge's validation metrics of each epoch the kept checkpoint holds (its record beside it, written here,
    never by the candidate); empty without one."""
    if not config.checkpoint_dir:
        return []
    judged = Path(config.checkpoint_dir) / content_key(sources) / JUDGED
    try:
        history = json.loads(judged.read_text())["history"]
    except (OSError, ValueError, KeyError, TypeError):
        return []
    return history if isinstance(history, list) else []


def judged_progress(sources: dict[str, str], config: EvaluationConfig, seconds: float) -> EvaluationOutcome | None:
    """A training paused between sandboxes, as the judge recorded it beside the kept checkpoint: a ``budget``
    stop with the best epoch's validation metrics and no test metrics (only a run that ends whole is tested);
    None without a record. For a final whose sandbox was killed at a limit with more epochs kept, when no time
    is left to go on: what it has is progress, not a failure."""
    history = _kept_record(sources, config)
    if not history:
        return None
    curve = _judged_history(history, None)
    best = history[curve[-1]["best_epoch"] - 1]
    return EvaluationOutcome("evaluated", "train", None, valid=best, history=curve, stopped="budget", seconds=seconds)


def _saved_as_judged(folder: Path, judge: Judge, status: str) -> bool:
    """Whether a run killed from outside left a checkpoint of the epochs the judge scored: its note of the saved
    epoch (written after both model files) names the judge's last epoch and best epoch. A kill between the
    judge's scoring and the save leaves the note an epoch behind, and the kept checkpoint stays as it was."""
    note = folder / SAVED_EPOCH
    if status not in KILLED_FROM_OUTSIDE or not note.is_file() or note.is_symlink() or not judge.history:
        return False
    try:
        if note.stat().st_size > 1024:  # the note is two numbers; the candidate could have written anything
            return False
        saved = json.loads(note.read_text())
    except (OSError, ValueError):
        return False
    return (
        isinstance(saved, dict)
        and saved.get("epoch") == len(judge.history)
        and (saved.get("best_epoch") == judge.best_epoch)
    )


def _judged_history(judged: list[dict[str, float]], claimed: Any) -> list[dict[str, Any]]:
    """The training curve: the judge's validation metrics per epoch (``judged``), with the trainer's own numbers
    (loss, steps, seconds: not metrics) where it reported them."""
    lines = claimed if isinstance(claimed, list) else []
    history, best, best_epoch = [], float("-inf"), 0
    for epoch, metrics in enumerate(judged, start=1):
        if metrics[SELECTION_METRIC] > best:
            best, best_epoch = metrics[SELECTION_METRIC], epoch
        line = lines[epoch - 1] if epoch <= len(lines) and isinstance(lines[epoch - 1], dict) else {}
        reported = {k: v for k, v in line.items() if k in ("loss", "steps", "seconds") and _is_number(v)}
        history.append({
            "epoch": epoch, "loss": float(reported.get("loss", math.nan)), "steps": int(reported.get("steps", 0)),
            "valid_ndcg@10": round(metrics["ndcg@10"], 6), "valid_hr@10": round(metrics["hr@10"], 6),
            "best_epoch": best_epoch, "seconds": float(reported.get("seconds", 0.0)),
        })  # fmt: skip
    return history


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _judgement_problem(outcome: Any, judge: Judge) -> str | None:
    """Why the run cannot stand as an evaluation (the judge's refusal first: a trainer it refused
    crashes), or None."""
    if judge.violation is not None:
        return f"integrity: {judge.violation}"
    if outcome.service_error is not None:
        return f"integrity: {outcome.service_error}"
    if outcome.status != "ok":
        return f"{outcome.status}: {outcome.reason}"
    if judge.final_valid is None or judge.test is None:
        return "integrity: the trainer did not hand its final validation and test lists to the judge"
    return None


def _verify_artifact(artifact: Path, judge: Judge, valid: dict[str, float], test: dict[str, float]) -> str | None:
    """Check the exported program ranks as the lists it submitted (for a sample of test users), and
    write the judge's metrics into its manifest. Returns why it cannot be served, or None; raises
    IntegrityError when it ranks otherwise than its lists."""
    import numpy as np
    import torch

    from recsys.artifacts import MANIFEST_FILE, ArtifactError
    from serving.artifacts import load_artifact

    try:
        loaded = load_artifact(str(artifact))
    except (ArtifactError, OSError, RuntimeError, ValueError) as exc:
        return f"the exported model cannot be loaded: {exc}"
    lists = judge.test_lists
    if lists is None:
        return "no test lists to check the exported model against"
    inputs = judge.sequences.without_stage("test")
    users = lists.users[:VERIFIED_USERS]
    histories = [inputs.history(int(u), "test") for u in users]
    with torch.no_grad():
        scores = loaded.scores(users, histories).clone()
    scores[:, 0] = -torch.inf
    for row, history in enumerate(histories):
        scores[row, torch.from_numpy(np.asarray(history, dtype=np.int64))] = -torch.inf
    exported = torch.topk(scores, 10, dim=1).indices.numpy()
    if list_agreement(exported, lists.top[: len(users)]) < LIST_AGREEMENT:
        raise IntegrityError("the exported model does not rank as the lists the trainer handed to the judge")
    manifest = json.loads((artifact / MANIFEST_FILE).read_text())
    manifest["metrics"] = {"valid": valid, "test": test}
    (artifact / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2) + "\n")
    return None


def _sandbox_root(config: EvaluationConfig) -> Path:
    """Where this config's sandboxes and the dataset's view for them live (created if missing)."""
    root = (Path(config.work_dir) if config.work_dir else Path(tempfile.gettempdir())) / SANDBOXES
    (root / ".views").mkdir(parents=True, exist_ok=True)
    return root


def warm_up(config: EvaluationConfig) -> None:
    """Load the dataset, write the sandboxes' view of it and build the warm compile cache now. These are
    one-time costs of a process: otherwise the first evaluation's time holds them (and, evaluations
    waiting for the first to load, theirs too), which a benchmark holding searchers to equal CPU time
    would charge to whichever evaluated first."""
    _loaded(config, _sandbox_root(config), None)


def evaluate_candidate(sources: dict[str, str], config: EvaluationConfig) -> EvaluationOutcome:
    """Run the cascade; the outcome says where it stopped and why, redacted of secret values."""
    return _cascade(sources, config).redacted()


def _cascade(sources: dict[str, str], config: EvaluationConfig) -> EvaluationOutcome:
    started = time.monotonic()
    problem = static_check(sources)
    if problem is not None:
        return EvaluationOutcome("failed", "static", problem)
    root = _sandbox_root(config)
    common = {"seed": config.seed, "threads": config.threads}
    extra: dict[str, Any] = {"export": config.export_dir is not None}
    if config.checkpoint_dir:
        extra["checkpoint_dir"] = CHECKPOINT
    if config.diagnose:
        request = {"sample_size": config.diagnosis_users, "list_users": list(config.list_users), "seed": config.seed}
        extra["diagnosis"] = request
    artifact = Path(config.export_dir) / content_key(sources) if config.export_dir else None
    stages: list[tuple[Stage, dict[str, Any], float]] = [
        ("smoke", {**common, "max_users": config.smoke_users, "max_epochs": 1, "budget_seconds": config.smoke_seconds},
         config.smoke_seconds + config.overhead_seconds),
        ("train", {**common, "max_epochs": config.max_epochs, "budget_seconds": config.train_seconds, **extra},
         config.train_seconds + config.overhead_seconds),
    ]  # fmt: skip
    outcome = None
    for stage, job, wall in stages if config.smoke else stages[1:]:
        kept = (
            Path(config.checkpoint_dir) / content_key(sources) if config.checkpoint_dir and stage == "train" else None
        )
        outcome, judge = _stage(sources, config, job, wall, root, artifact if stage == "train" else None, kept)
        problem = _judgement_problem(outcome, judge)
        if problem is not None:
            return EvaluationOutcome(
                "failed", stage, problem, seconds=time.monotonic() - started, isolation=outcome.isolation
            )
    assert outcome is not None and outcome.output is not None and judge.final_valid and judge.test
    result = outcome.output
    valid, test = judge.final_valid, judge.test
    export_error = result.get("export_error") if isinstance(result.get("export_error"), str) else None
    if artifact is not None and artifact.is_dir():
        try:
            export_error = _verify_artifact(artifact, judge, valid, test) or export_error
        except IntegrityError as exc:
            shutil.rmtree(artifact, ignore_errors=True)
            return EvaluationOutcome(
                "failed", "train", f"integrity: {exc}", seconds=time.monotonic() - started, isolation=outcome.isolation
            )
        if export_error is not None:
            shutil.rmtree(artifact, ignore_errors=True)
    return EvaluationOutcome(
        "evaluated",
        "train",
        None,
        valid=valid,
        test=test,
        history=_judged_history(judge.history, result.get("history")),
        stopped=result.get("stopped") if result.get("stopped") in ("budget", "epochs", "patience") else None,
        seconds=time.monotonic() - started,
        isolation=outcome.isolation,
        diagnosis=result.get("diagnosis") if isinstance(result.get("diagnosis"), dict) else None,
        diagnosis_error=result.get("diagnosis_error") if isinstance(result.get("diagnosis_error"), str) else None,
        artifact=str(artifact) if artifact is not None and artifact.is_dir() else None,
        export_error=export_error,
        reward_alignment=candidate_alignment(sources["reward"], config.alignment_logs, config.dataset)
        if config.alignment_logs
        else None,
    )
