"""The evaluation cascade of one candidate: static checks, a smoke run, budgeted training.

Static checks read the code without running it. The smoke run trains briefly on the first
users (seconds) to catch crashes and NaNs cheaply; only a candidate that passes gets the budgeted
run on the whole dataset. Both runs execute in the sandbox: candidate code never runs in this
process. Validation metrics are for selection; test metrics are kept apart and never shown to
proposers or used to rank.
"""

from __future__ import annotations

import ast
import dataclasses
import hashlib
import json
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from offline_agent.sandbox import SandboxLimits, run_sandboxed
from recsys.candidate import BLOCKS, REQUIRED, REQUIRED_VALUES, parse_block
from recsys.redaction import redact_json
from reward_lib.candidate import candidate_alignment

Stage = Literal["static", "smoke", "train"]
CHECKPOINT = "checkpoint"  # inside the work dir
CHECKPOINT_FILES = ("last.pt", "best.pt")

ENTRY = """\
import json
from pathlib import Path

from offline_agent.diagnosis.report import diagnose_trained
from recsys.candidate import load_candidate
from recsys.data.prepared import PreparedDataset
from recsys.trainer import Trainer, TrainerConfig

job = json.loads(Path("job.json").read_text())
prepared = PreparedDataset.open(Path(job.pop("dataset")), verify=False)
diagnosis = job.pop("diagnosis", None)
export = job.pop("export", False)
checkpoint = job.pop("checkpoint_dir", None)
candidate = load_candidate(Path("candidate"))
config = TrainerConfig(progress=False, checkpoint_dir=checkpoint and Path(checkpoint), resume=bool(checkpoint), **job)
trainer = Trainer(candidate, prepared, config)
fitted = trainer.fit()
result = fitted.to_json()
if export:
    from recsys.artifacts import export_trained

    try:
        export_trained(trainer, fitted, Path("artifact"))
    except Exception as exc:  # the evaluation stands; the model just cannot be served
        result["export_error"] = f"{type(exc).__name__}: {exc}"
if diagnosis is not None:
    try:
        result["diagnosis"] = diagnose_trained(trainer, candidate, **diagnosis).to_json()
    except Exception as exc:  # the training result stands; the reason goes into the feedback
        result["diagnosis_error"] = f"{type(exc).__name__}: {exc}"
Path("result.json").write_text(json.dumps(result))
"""


class EvaluationConfig(BaseModel):
    """Budgets of the cascade; ``dataset`` is a prepared folder."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    dataset: str = Field(default="", description="prepared folder; the evolution run fills it in")
    seed: int = 0
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


def _stage(
    sources: dict[str, str],
    config: EvaluationConfig,
    job: dict[str, Any],
    wall: float,
    root: Path,
    artifact_to: Path | None = None,
    checkpoint: Path | None = None,
) -> Any:
    """One sandboxed run; an artifact the run exported is copied to ``artifact_to`` before the work dir goes.

    With ``checkpoint`` its files are copied into the work dir first and, after a run that ended
    cleanly, back: the candidate writes only inside its sandbox, and a run killed mid-write leaves
    the last good checkpoint in place."""
    workdir = Path(tempfile.mkdtemp(prefix="evaluation-", dir=root))
    try:
        candidate = workdir / "candidate"
        candidate.mkdir()
        if checkpoint is not None:
            _copy_checkpoint(checkpoint, workdir / CHECKPOINT)
        for block, source in sources.items():
            (candidate / f"{block}.py").write_text(source)
        (workdir / "job.json").write_text(json.dumps({"dataset": config.dataset, **job}))
        limits = SandboxLimits(wall_seconds=wall, memory_bytes=int(config.memory_gib * 2**30))
        threads = str(config.threads)
        outcome = run_sandboxed(ENTRY, workdir, limits, env={"OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads})
        if artifact_to is not None and outcome.status == "ok" and (workdir / "artifact").is_dir():
            shutil.rmtree(artifact_to, ignore_errors=True)
            shutil.copytree(workdir / "artifact", artifact_to)
        if checkpoint is not None and outcome.status == "ok":
            _copy_checkpoint(workdir / CHECKPOINT, checkpoint)
        return outcome
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def evaluate_candidate(sources: dict[str, str], config: EvaluationConfig) -> EvaluationOutcome:
    """Run the cascade; the outcome says where it stopped and why, redacted of secret values."""
    return _cascade(sources, config).redacted()


def _cascade(sources: dict[str, str], config: EvaluationConfig) -> EvaluationOutcome:
    started = time.monotonic()
    problem = static_check(sources)
    if problem is not None:
        return EvaluationOutcome("failed", "static", problem)
    root = Path(config.work_dir) if config.work_dir else Path(tempfile.gettempdir())
    root.mkdir(parents=True, exist_ok=True)
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
    for stage, job, wall in stages:
        kept = (
            Path(config.checkpoint_dir) / content_key(sources) if config.checkpoint_dir and stage == "train" else None
        )
        outcome = _stage(sources, config, job, wall, root, artifact if stage == "train" else None, kept)
        if outcome.status != "ok":
            return EvaluationOutcome(
                "failed", stage, f"{outcome.status}: {outcome.reason}", seconds=time.monotonic() - started,
                isolation=outcome.isolation,
            )  # fmt: skip
    assert outcome is not None and outcome.output is not None
    result = outcome.output
    return EvaluationOutcome(
        "evaluated",
        "train",
        None,
        valid=result["valid"],
        test=result["test"],
        history=result["history"],
        stopped=result.get("stopped"),
        seconds=time.monotonic() - started,
        isolation=outcome.isolation,
        diagnosis=result.get("diagnosis"),
        diagnosis_error=result.get("diagnosis_error"),
        artifact=str(artifact) if artifact is not None and artifact.is_dir() else None,
        export_error=result.get("export_error"),
        reward_alignment=candidate_alignment(sources["reward"], config.alignment_logs, config.dataset)
        if config.alignment_logs
        else None,
    )
