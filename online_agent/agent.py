"""The online agent: takes queued model versions from the registry, in order, into simulated A/B
experiments against production, writes each report, and moves the version on.

A version that the decision rule would ship goes to ``awaiting_approval`` with the report's path
in the audit reason, and waits for a person (``evorec promote approve``); it is promoted by the
agent itself only when the config names an auto-approval policy, and then the audit row says so.
A version the rule would not ship is rejected with the reasons; an experiment that breaks marks
the version ``failed`` with the error, and the agent goes on with the next one.

With ``require_calibrated_simulator`` the agent first looks up the simulator's fidelity on the
dataset (:mod:`ab_testing.fidelity`) and, when it is below the bar, runs no experiment and leaves
every version queued, with the reason: no verdict of an uncalibrated simulator reaches the queue
of versions awaiting approval. Every report states the fidelity in any case.

With ``prescreen: interleaving`` each version is first interleaved with production for a sample of
simulated users (:mod:`ab_testing.interleaving`): one they significantly prefer less is rejected
with the interleaving result as the reason, without spending an A/B test on it.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ab_testing.analysis import analyse
from ab_testing.decision import MetricSpec
from ab_testing.experiment import ArmPlan, ExperimentPlan, ServedPolicy, run_experiment
from ab_testing.fidelity import SimulatorFidelity, simulator_fidelity
from ab_testing.ground_truth import FitSettings, GroundTruth
from ab_testing.interleaving import InterleavingResult, interleave
from ab_testing.population import Population, PopulationConfig
from ab_testing.report import write_report
from recsys.data.prepared import PreparedDataset
from recsys.errors import EvorecError
from recsys.evaluation import ItemCatalog
from recsys.sequences import UserSequences
from serving.artifacts import LoadedModel, load_artifact
from serving.registry import Registry, VersionInfo

log = logging.getLogger(__name__)
ACTOR = "online-agent"


class OnlineAgentConfig(BaseModel):
    """How the agent experiments (YAML section ``online_agent``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model_name: str = "default"
    runs_dir: str = "runs/experiments"
    users: int = Field(default=20_000, ge=100)
    days: int = Field(default=14, ge=1)
    pre_period_days: int = Field(default=7, ge=0)
    alpha: float = Field(default=0.05, gt=0, lt=0.5)
    power: float = Field(default=0.8, gt=0, lt=1)
    mde: float = Field(default=0.02, gt=0)
    diversity_margin: float = Field(default=0.02, ge=0, description="relative loss of list diversity tolerated")
    coverage_margin: float = Field(default=0.10, ge=0, description="relative loss of catalogue coverage tolerated")
    latency_margin: float = Field(default=0.25, ge=0, description="relative rise of p99 scoring latency tolerated")
    seed: int = 0
    population: dict[str, Any] = Field(default_factory=dict)
    metrics: tuple[MetricSpec, ...] | None = Field(
        default=None, description="the pre-registered metrics of every experiment (none: the defaults)"
    )
    auto_approval: str | None = Field(
        default=None, description="name of a policy allowed to promote without a person (none: always ask)"
    )
    prescreen: Literal["none", "interleaving"] = Field(
        default="none",
        description="interleaving: team-draft interleave each version with production first, and reject one the "
        "simulated users significantly prefer less (sign test at alpha) without an A/B test",
    )
    prescreen_users: int = Field(default=2000, ge=100, description="simulated users shown one interleaved slate each")
    require_calibrated_simulator: bool = Field(
        default=False,
        description="run no experiment, and leave versions queued, while the simulator's fidelity on the dataset is "
        "below the bar (Spearman ρ of the simulated north stars against real held-out accuracy)",
    )


@dataclass(frozen=True)
class QueueOutcome:
    version: int
    state: Literal["awaiting_approval", "production", "rejected", "failed", "queued"]
    reason: str
    report: Path | None


def _plan(config: OnlineAgentConfig, dataset: str, production: VersionInfo, candidate: VersionInfo) -> ExperimentPlan:
    return ExperimentPlan(
        name=f"v{candidate.id}-vs-v{production.id}",
        dataset=dataset,
        arms=(ArmPlan(name="control", version=production.id), ArmPlan(name="treatment", version=candidate.id)),
        users=config.users, days=config.days, pre_period_days=config.pre_period_days, alpha=config.alpha,
        power=config.power, mde=config.mde, diversity_margin=config.diversity_margin,
        coverage_margin=config.coverage_margin, latency_margin=config.latency_margin, seed=config.seed,
        population=config.population, metrics=config.metrics,
    )  # fmt: skip


def process_queue(config: OnlineAgentConfig, registry: Registry, prepared: PreparedDataset) -> list[QueueOutcome]:
    """Experiment on every queued version of ``config.model_name``, oldest first."""
    queued = sorted(registry.versions(state="queued", name=config.model_name), key=lambda v: v.id)
    return experiment_versions(config, registry, prepared, queued)


def experiment_versions(
    config: OnlineAgentConfig, registry: Registry, prepared: PreparedDataset, versions: list[VersionInfo]
) -> list[QueueOutcome]:
    """Experiment on each of ``versions`` (queued) in turn against the production model."""
    if not versions:
        return []
    production = registry.production(config.model_name)
    if production is None:
        raise EvorecError(f"no {config.model_name} model is in production to experiment against")
    fidelity = simulator_fidelity(prepared)
    if config.require_calibrated_simulator and not fidelity.passed:
        reason = (
            f"left queued: the online agent requires a calibrated simulator and the simulator on {prepared.name} is "
            f"below the fidelity bar ({'; '.join(fidelity.shortfalls)}; {fidelity.source})"
        )
        log.warning(reason)
        return [QueueOutcome(version.id, "queued", reason, None) for version in versions]
    control = load_artifact(production.artifact_uri)
    truth = GroundTruth.fit(prepared, FitSettings(seed=config.seed))
    return [
        _experiment(config, registry, prepared, production, control, truth, fidelity, version) for version in versions
    ]


def _experiment(
    config: OnlineAgentConfig, registry: Registry, prepared: PreparedDataset, production: VersionInfo,
    control: LoadedModel, truth: GroundTruth, fidelity: SimulatorFidelity, version: VersionInfo,
) -> QueueOutcome:  # fmt: skip
    plan = _plan(config, prepared.name, production, version)
    screening = config.prescreen == "interleaving"
    steps = "interleaving pre-screen, then " if screening else ""
    registry.transition(version.id, "experimenting", actor=ACTOR, reason=f"{steps}experiment {plan.name}")
    try:
        candidate = load_artifact(version.artifact_uri)
        screen = prescreen(config, prepared, truth, control, candidate) if screening else None
    except Exception as exc:  # the version fails with the reason; the queue goes on
        return _fail(registry, version.id, f"experiment {plan.name}", exc)
    if screen is not None and screen.candidate_loses:
        reason = (
            f"rejected by the pre-screen against production v{production.id}, without an A/B test: {screen.summary()}"
        )
        registry.reject(version.id, actor=ACTOR, reason=reason)
        return QueueOutcome(version.id, "rejected", reason, None)
    try:
        models = {"control": control, "treatment": candidate}
        run = run_experiment(plan, prepared, models, Path(config.runs_dir) / plan.name, truth, fidelity=fidelity)
        [analysis] = analyse(run)
        report = write_report(run, analysis)["html"]
        registry.record_run("experiment", run.folder, report=report)  # where the console and CLI find it
        if screen is not None:  # beside the A/B report it led to
            (run.folder / "interleaving.json").write_text(json.dumps(screen.to_json(), indent=2) + "\n")
    except Exception as exc:
        return _fail(registry, version.id, f"experiment {plan.name}", exc)
    screened = f"; pre-screen passed: {screen.summary()}" if screen is not None else ""
    summary = "; ".join(analysis.reasons()[:3]) + screened + f" (report: {report})"
    if not analysis.ship:
        registry.reject(version.id, actor=ACTOR, reason=summary)
        return QueueOutcome(version.id, "rejected", summary, report)
    registry.transition(version.id, "awaiting_approval", actor=ACTOR, reason=summary)
    if config.auto_approval:
        registry.auto_approve(version.id, config.auto_approval)
        return QueueOutcome(version.id, "production", summary, report)
    return QueueOutcome(version.id, "awaiting_approval", summary, report)


def _fail(registry: Registry, version: int, what: str, exc: Exception) -> QueueOutcome:
    reason = f"{what} failed: {type(exc).__name__}: {exc}"
    log.exception("version %d: %s", version, reason)
    registry.transition(version, "failed", actor=ACTOR, reason=reason)
    return QueueOutcome(version, "failed", reason, None)


def prescreen(
    config: OnlineAgentConfig, prepared: PreparedDataset, truth: GroundTruth, production: LoadedModel,
    candidate: LoadedModel,
) -> InterleavingResult:  # fmt: skip
    """Team-draft interleave the two models for ``prescreen_users`` simulated users, served as in an A/B arm."""
    sequences = UserSequences.from_prepared(prepared)
    settings = {**config.population, "users": config.prescreen_users, "seed": config.seed, "pre_period_days": 0}
    population = Population.sample(truth, sequences, PopulationConfig(**settings))
    catalog = ItemCatalog.build(prepared, sequences)
    production_policy, candidate_policy = (
        ServedPolicy(model, population.source_user, catalog, population.config.slate_size)
        for model in (production, candidate)
    )
    return interleave(population, production_policy, candidate_policy, config.alpha)
