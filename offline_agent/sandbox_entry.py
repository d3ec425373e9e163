"""Train, diagnose and export one candidate: the one function ``evorec train`` and the sandbox share.

In the sandbox (:func:`main`) the candidate trains on a view of the data without the held-out
targets and its ranked lists are judged outside, by the evaluator's process, over a pipe
(:mod:`recsys.heldout`); ``result.json`` carries only what is not a metric (training curve,
diagnosis, export errors). ``evorec train`` runs the same function in its own process with a local
judge, for a user's own, trusted candidate.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from offline_agent.diagnosis.report import DiagnosisReport, diagnose_trained
from recsys.candidate import Candidate, load_candidate
from recsys.data.prepared import PreparedDataset
from recsys.heldout import HeldOut, HeldOutClient
from recsys.trainer import Trainer, TrainerConfig, TrainResult

VIEW_FOLDER = "data"  # the view of the data, inside the sandbox's work dir
CANDIDATE_FOLDER = "candidate"
ARTIFACT_FOLDER = "artifact"


@dataclass(frozen=True)
class DiagnosisRequest:
    sample_size: int = 512
    list_users: tuple[int, ...] = ()
    seed: int = 0


@dataclass
class TrainedCandidate:
    """A finished training and what came of it; the diagnosis and the export may fail on their own."""

    trainer: Trainer
    result: TrainResult
    diagnosis: DiagnosisReport | None = None
    diagnosis_error: str | None = None
    artifact: Path | None = None
    export_error: str | None = None

    def to_json(self) -> dict[str, Any]:
        payload = self.result.to_json()
        if self.diagnosis is not None:
            payload["diagnosis"] = self.diagnosis.to_json()
        for name in ("diagnosis_error", "export_error"):
            if getattr(self, name) is not None:
                payload[name] = getattr(self, name)
        if self.artifact is not None:
            payload["artifact"] = str(self.artifact)
        return payload


def train_diagnose_export(
    candidate: Candidate,
    prepared: PreparedDataset,
    config: TrainerConfig,
    heldout: HeldOut | None = None,
    diagnosis: DiagnosisRequest | None = None,
    export_to: Path | None = None,
    epoch_log: TextIO | None = None,
) -> TrainedCandidate:
    """Train with early stopping (judged by ``heldout``, by default in this process), then diagnose
    the kept model and export it for serving when asked."""
    from recsys.artifacts import export_trained

    trainer = Trainer(candidate, prepared, config, epoch_log=epoch_log, heldout=heldout)
    trained = TrainedCandidate(trainer, trainer.fit())
    if not trainer.world.is_main:
        return trained
    if diagnosis is not None and trainer.world.world_size == 1:
        try:
            trained.diagnosis = diagnose_trained(
                trainer, candidate, diagnosis.sample_size, diagnosis.list_users, diagnosis.seed
            )
        except Exception as exc:  # the training result stands; the reason goes into the feedback
            trained.diagnosis_error = f"{type(exc).__name__}: {exc}"
    if export_to is not None:
        try:
            trained.artifact = export_trained(trainer, trained.result, export_to)
        except Exception as exc:  # the evaluation stands; the model just cannot be served
            trained.export_error = f"{type(exc).__name__}: {exc}"
    return trained


def main() -> None:
    """The sandboxed child's program: ``job.json`` in, ``result.json`` out, metrics judged outside."""
    job = json.loads(Path("job.json").read_text())
    diagnosis = job.pop("diagnosis", None)
    export = job.pop("export", False)
    checkpoint = job.pop("checkpoint_dir", None)
    config = TrainerConfig(
        progress=False, checkpoint_dir=checkpoint and Path(checkpoint), resume=bool(checkpoint), **job
    )
    request = DiagnosisRequest(**{**diagnosis, "list_users": tuple(diagnosis["list_users"])}) if diagnosis else None
    trained = train_diagnose_export(
        load_candidate(Path(CANDIDATE_FOLDER)),
        PreparedDataset.open(Path(VIEW_FOLDER), verify=False),
        config,
        heldout=HeldOutClient.from_environment(),
        diagnosis=request,
        export_to=Path(ARTIFACT_FOLDER) if export else None,
    )
    Path("result.json").write_text(json.dumps(trained.to_json()))


if __name__ == "__main__":
    main()
