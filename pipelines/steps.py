"""The stages of both loops as plain functions of folders and values: what the KFP components run.

Each stage reads its inputs from folders (KFP input artifacts, never written to), writes its
outputs into fresh folders (KFP output artifacts) and returns the small values the pipeline
branches on. The evolution's state (program database, diagnoses, critiques, report) travels as a
folder from one generation to the next, so every generation is an artifact that can be looked
at, and candidate evaluations run as separate tasks side by side. Candidate code runs only in the
sandbox, as everywhere else.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from offline_agent.evaluator import EvaluationOutcome, content_key, evaluate_candidate
from offline_agent.evolve import Evolution, EvolutionConfig
from offline_agent.program_db import Program
from offline_agent.report import write_report as write_evolution_report
from online_agent.agent import OnlineAgentConfig, experiment_versions
from recsys.data.lookup import prepared_dataset
from recsys.data.prepared import PreparedDataset
from recsys.errors import EvorecError
from recsys.settings import get_settings
from serving.registry import Registry, default_registry_url

log = logging.getLogger(__name__)
ACTOR = "pipeline"
OUTCOME = "outcome.json"
CHECKPOINTS = "checkpoints"  # beside an outcome: the candidate's kept training checkpoint, under rungs
TRAINING = "training.json"
ROLES = ("seed", "best")


class PipelineStepError(EvorecError):
    """A stage cannot produce its output; the message says which stage and why."""


def prepare(dataset: str, out: Path) -> dict[str, Any]:
    """The prepared dataset (reusing an up-to-date preparation in the cache) copied into ``out``."""
    prepared = prepared_dataset(dataset, get_settings())
    shutil.copytree(prepared.path, out, dirs_exist_ok=True)
    return {key: prepared.manifest[key] for key in ("users", "items", "interactions")}


@contextmanager
def _evolution(config: EvolutionConfig, prepared: Path, state: Path) -> Iterator[Evolution]:
    """The evolution whose run folder is ``state``; sandboxes run in a temporary folder."""
    with tempfile.TemporaryDirectory(prefix="evorec-sandboxes-") as work:
        run = config.model_copy(
            update={
                "run_dir": str(state),
                "dataset": str(prepared),
                "database": config.database.model_copy(update={"url": None}),
                "evaluation": config.evaluation.model_copy(update={"work_dir": work}),
            }
        )
        yield Evolution(run, prepared)


@contextmanager
def _reading(state: Path) -> Iterator[Path]:
    """A private copy of an input state folder: opening its database must not touch the original."""
    with tempfile.TemporaryDirectory(prefix="evorec-state-") as copy:
        yield Path(shutil.copytree(state, Path(copy) / "state"))


def start_evolution(config: EvolutionConfig, prepared: Path, state_out: Path) -> list[str]:
    """A new evolution state in ``state_out``; returns the keys waiting for evaluation (the seed)."""
    with _evolution(config, prepared, state_out) as evolution:
        return [program.key for program in evolution.start()]


def evaluate_program(config: EvolutionConfig, prepared: Path, state: Path, key: str, out: Path) -> str:
    """Evaluate one pending program of ``state`` (sandboxed) into ``out``; returns its status. Under rungs
    the training's checkpoint goes into ``out`` too, for the next rung to resume.

    A candidate that fails is an outcome like any other (recorded with its reason), not an error.
    """
    out.mkdir(parents=True, exist_ok=True)
    with _reading(state) as copy, _evolution(config, prepared, copy) as evolution:
        program = evolution.db.get(key)
        outcome = evaluate_candidate(program.blocks, evolution.evaluation)
        folder = evolution.evaluation.checkpoint_dir
        kept = Path(folder) / content_key(program.blocks) if folder else None
        if kept is not None and kept.is_dir():
            shutil.copytree(kept, out / CHECKPOINTS / kept.name)
    (out / OUTCOME).write_text(json.dumps({"key": key, "outcome": outcome.to_json()}, default=str) + "\n")
    log.info("%s: %s %s", key[:12], outcome.status, outcome.reason or "")
    return outcome.status


def record_generation(
    config: EvolutionConfig, prepared: Path, state_in: Path, outcomes: list[Path], state_out: Path, propose: int
) -> list[str]:
    """Store a generation's outcomes in a copy of the state (under rungs, train the promotions due in this
    task), write the run's report, and propose up to ``propose`` children for the next generation; returns
    their keys. With ``propose`` 0 selection ends: under rungs the finals train here."""
    shutil.copytree(state_in, state_out, dirs_exist_ok=True)
    with _evolution(config, prepared, state_out) as evolution:
        for folder in outcomes:
            data = json.loads((folder / OUTCOME).read_text())
            if (folder / CHECKPOINTS).is_dir() and evolution.evaluation.checkpoint_dir:
                shutil.copytree(folder / CHECKPOINTS, evolution.evaluation.checkpoint_dir, dirs_exist_ok=True)
            evolution.record(evolution.db.get(data["key"]), EvaluationOutcome.from_json(data["outcome"]))
        evolution.end_generation()
        stopped = evolution.db.get_state("stopped")
        children: list[Program] = []
        if propose and stopped is None:
            children, stopped = evolution.propose_generation(propose)
            if stopped is not None:
                evolution.db.set_state("stopped", stopped)
        if not propose:
            evolution.end_selection(stopped or "generations")
        write_evolution_report(evolution.db, state_out, config.database.fitness, stopped or "generations")
        return [child.key for child in children]


def finalists(config: EvolutionConfig, prepared: Path, state: Path, registry_url: str, model_name: str) -> list[str]:
    """Which programs get a full training: the seed when nothing is in production yet (it becomes
    the first production model), and the best unless its code is already what production (or,
    with nothing in production, the seed) is."""
    with _reading(state) as copy, _evolution(config, prepared, copy) as evolution:
        best, seed = evolution.db.result(), _seed(evolution)
    with Registry(registry_url or default_registry_url(get_settings())) as registry:
        production = registry.production(model_name)
    baseline = production.content_hash if production is not None else seed.content_hash
    roles = (["seed"] if production is None else []) + (["best"] if best and best.content_hash != baseline else [])
    log.info("finalists: %s", ", ".join(roles) or "none (production already serves the best code)")
    return roles


def _seed(evolution: Evolution) -> Program:
    return next(p for p in evolution.db.programs() if p.origin == "initial")


def final_training(
    config: EvolutionConfig, prepared: Path, state: Path, role: str, train_seconds: float, out: Path,
    max_epochs: int = 0,
) -> dict[str, float]:  # fmt: skip
    """Train the ``role`` program (``seed`` or ``best``) with the final budget (sandboxed; ``max_epochs``
    0: its plan's) and export it into ``out`` for serving; returns its validation and test metrics. Under
    rungs the training goes on from the program's kept checkpoint (the best's: its finals')."""
    if role not in ROLES:
        raise PipelineStepError(f"final training: role must be one of {', '.join(ROLES)}, not {role!r}")
    with _reading(state) as copy, _evolution(config, prepared, copy) as evolution:
        program = _seed(evolution) if role == "seed" else evolution.db.result()
        assert program is not None, "finalists() names the best only when one was evaluated"
        with tempfile.TemporaryDirectory(prefix="evorec-export-") as export:
            evaluation = evolution.evaluation.model_copy(
                update={
                    "train_seconds": train_seconds,
                    "max_epochs": max_epochs or None,
                    "diagnose": False,
                    "list_users": (),
                    "export_dir": export,
                }
            )
            outcome = evaluate_candidate(program.blocks, evaluation)
            if outcome.status != "evaluated" or outcome.artifact is None:
                why = outcome.reason or outcome.export_error or "no artifact was exported"
                raise PipelineStepError(f"final training of the {role} ({program.key[:12]}) failed: {why}")
            shutil.copytree(outcome.artifact, out, dirs_exist_ok=True)
    assert outcome.valid is not None and outcome.test is not None
    record: dict[str, Any] = {
        "role": role,
        "key": program.key,
        "content_hash": program.content_hash,
        "rationale": program.feedback.rationale or "the seed",
        "epochs": len(outcome.history),
        "seconds": round(outcome.seconds, 1),
        "valid": outcome.valid,
        "test": outcome.test,
    }
    (out / TRAINING).write_text(json.dumps(record, indent=2) + "\n")
    return {f"{split}_{name}": value for split in ("valid", "test") for name, value in record[split].items()}


def register_finalists(
    models: list[tuple[Path, str]], registry_url: str, model_name: str, first_production_policy: str | None
) -> int:
    """Register each finalist (folder, URI): the seed becomes the first production model under
    the policy, the best is queued for an experiment. Returns the queued version's id, or 0."""
    trained = sorted(((json.loads((path / TRAINING).read_text()), uri) for path, uri in models), key=_seed_first)
    queued = 0
    with Registry(registry_url or default_registry_url(get_settings())) as registry:
        for record, uri in trained:
            version = registry.register(
                candidate_id=f"{record['role']}-{record['key'][:12]}", content_hash=record["content_hash"],
                artifact_uri=uri, metrics={"valid": record["valid"], "test": record["test"]}, actor=ACTOR,
                reason=f"final training of the {record['role']}: {record['rationale'][:200]}", name=model_name,
            )  # fmt: skip
            if record["role"] == "seed":
                if first_production_policy is None:
                    raise PipelineStepError(
                        f"nothing of {model_name!r} is in production and no first_production_policy is set: "
                        f"promote a first version by hand (evorec promote approve) or set the policy"
                    )
                registry.bootstrap(version.id, first_production_policy)
                log.info("version %d (the seed) is the first production model", version.id)
            else:
                valid = record["valid"].get("ndcg@10", float("nan"))
                registry.transition(
                    version.id, "queued", actor=ACTOR, reason=f"best of the evolution run (valid NDCG@10 {valid:.4f})"
                )
                queued = version.id
    return queued


def _seed_first(item: tuple[dict[str, Any], str]) -> int:
    return 0 if item[0]["role"] == "seed" else 1


@dataclass(frozen=True)
class ExperimentResult:
    version: int  # 0: no experiment ran
    state: str
    reason: str
    report: Path | None


def experiment(
    config: OnlineAgentConfig, prepared: Path, registry_url: str, version: int, runs: Path
) -> ExperimentResult:
    """The simulated A/B experiment of a queued ``version`` (0: the oldest queued) against
    production, run in ``runs``."""
    with Registry(registry_url or default_registry_url(get_settings())) as registry:
        if version:
            candidate = registry.get(version)
        else:
            queued = sorted(registry.versions(state="queued", name=config.model_name), key=lambda v: v.id)
            if not queued:
                return ExperimentResult(0, "none", f"no version of {config.model_name!r} is queued", None)
            candidate = queued[0]
        online = config.model_copy(update={"runs_dir": str(runs)})
        [outcome] = experiment_versions(online, registry, PreparedDataset.open(prepared), [candidate])
    return ExperimentResult(candidate.id, outcome.state, outcome.reason, outcome.report)


def approval_gate(registry_url: str, version: int, wait_seconds: float, poll_seconds: float = 5.0) -> str:
    """Where the candidate stands for a person; with ``wait_seconds``, wait that long for a decision."""
    if not version:
        return "nothing to approve: no new candidate went into an experiment"
    with Registry(registry_url or default_registry_url(get_settings())) as registry:
        deadline = time.monotonic() + wait_seconds
        state = registry.get(version).state
        while state == "awaiting_approval" and time.monotonic() < deadline:
            time.sleep(min(poll_seconds, max(deadline - time.monotonic(), 0)))
            state = registry.get(version).state
        last = registry.audit(version)[-1]
    if state == "awaiting_approval":
        return (
            f"version {version} awaits approval; to promote it: "
            f"evorec promote approve {version} --reason '<why>'  (or reject: evorec promote reject {version} ...)"
        )
    return f"version {version} is {state} ({last.actor}: {last.reason})"
