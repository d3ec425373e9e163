"""The offline evolution loop: propose, apply, evaluate, store; resumable at any point.

Each iteration samples a parent (and inspirations) on one island, asks the proposer for an edit,
applies it, rejects near-duplicates, writes the child as ``pending``, runs the evaluation cascade
in the sandbox and stores the outcome. The iteration counter is saved as soon as a child is
written, so a run killed at any moment resumes by evaluating its pending children and goes on
with the next iteration: no candidate lost, none evaluated twice, the seed never added again.
Failures of the proposer, of an edit or of a candidate are recorded with their reason and the
run goes on; a spent time, CPU, token or dollar budget ends it cleanly.

With ``rungs`` (multi-fidelity selection, :mod:`offline_agent.rungs`), a candidate's evaluation is
its rung-0 training (``programs.fitness`` stays that fitness: every candidate has it, at the same
fidelity, so parents and children compare fairly); after each generation the promotions due are
trained further, and once selection ends the finals are. The run's best is then the best of the
highest rung reached.
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from offline_agent import SEEDS
from offline_agent.bandit import Pull, pulls, structural_origin
from offline_agent.diagnosis.report import DiagnosisReport
from offline_agent.edits import EditError, apply_change, behaviour_hash, parse_reply
from offline_agent.evaluator import EvaluationConfig, EvaluationOutcome, evaluate_candidate
from offline_agent.feedback_checks import check_feedback, rule_checks
from offline_agent.llm.base import BudgetExhausted, LLMConfig, LLMError, Spend
from offline_agent.llm.registry import build_llm
from offline_agent.multifidelity import MultiFidelity
from offline_agent.probe_review import dropped, review_probes
from offline_agent.program_db import DatabaseConfig, Program, ProgramDatabase
from offline_agent.proposers import (
    LLMProposer,
    MixedProposer,
    NoProposal,
    ProposalRequest,
    Proposer,
    RulebookProposer,
)
from offline_agent.records import EditChoice, Feedback
from offline_agent.rungs import RungConfig
from offline_agent.simulator.aggregate import LLMAggregator, simulate
from offline_agent.simulator.cache import ReplyCache
from offline_agent.simulator.critiques import LLMCritic
from offline_agent.simulator.personas import sample_users
from offline_agent.tuning import EditScheduler, NoTuning, TuningConfig
from recsys.candidate import load_candidate
from recsys.config_files import load_yaml_model
from recsys.data.prepared import PreparedDataset
from recsys.errors import ConfigError
from recsys.sequences import UserSequences

log = logging.getLogger(__name__)
REJECTIONS_KEPT = 8
JOURNAL_SHOWN = 12


class ProposerConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["rulebook", "llm", "mixed"] = Field(
        default="rulebook", description="mixed: the rulebook and the language model, chosen by the bandit"
    )
    llm: LLMConfig | None = None
    rulebook_explore: float = Field(default=0.3, ge=0, le=1)


class FeedbackConfig(BaseModel):
    """What the proposer learns of a candidate beyond its fitness.

    ``directional``: the diagnosis probes and the simulated users' critiques (the default);
    ``scalar``: the fitness only (an ablation). Under both the probes and simulated users run and are
    recorded, so each edit's answer to a flagged problem is checked alike
    (:mod:`offline_agent.feedback_checks`); ``scalar`` only hides them from the proposer. ``critic`` is the
    language model that writes the critiques; without one they are built from measured persona/list mismatches.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    mode: Literal["directional", "scalar"] = "directional"
    personas: int = Field(default=8, ge=0, description="simulated users who critique each candidate")
    critic: LLMConfig | None = None


class EvolutionConfig(BaseModel):
    """One evolution run, as written in its YAML file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    seed_candidate: str = "offline_agent/seeds/sasrec_bce"
    dataset: str = "ml-latest-small"
    run_dir: str = "runs/evolve"
    iterations: int = Field(default=20, ge=0)
    max_seconds: float | None = Field(default=None, gt=0)
    max_cpu_seconds: float | None = Field(
        default=None, gt=0, description="selection's CPU time: each rung evaluation's seconds × threads"
    )
    max_usd: float | None = Field(default=None, ge=0)
    max_tokens: int | None = Field(default=None, ge=0)
    seed: int = 0
    workers: int = Field(default=1, ge=1, description="candidates evaluated at once")
    proposer: ProposerConfig = ProposerConfig()
    feedback: FeedbackConfig = FeedbackConfig()
    tuning: TuningConfig = TuningConfig()
    database: DatabaseConfig = DatabaseConfig()
    evaluation: EvaluationConfig = EvaluationConfig(dataset="")
    rungs: RungConfig | None = Field(default=None, description="multi-fidelity selection; none: one budget for all")

    @model_validator(mode="after")
    def _rungs(self) -> EvolutionConfig:
        if self.rungs is not None and self.evaluation.max_epochs is not None:
            raise ValueError(
                "evaluation.max_epochs and rungs.epochs both set the epochs: with rungs, leave out max_epochs"
            )
        if self.rungs is None and self.max_cpu_seconds is not None:
            raise ValueError("max_cpu_seconds counts rung evaluations: set rungs too (or use max_seconds)")
        return self

    def database_url(self) -> str:
        return self.database.url or f"sqlite:///{Path(self.run_dir).resolve() / 'evolution.db'}"


def seed_directory(seed: str) -> Path:
    """A seed candidate's folder: a path, or the name of a shipped seed (so configs work from any directory)."""
    path = Path(seed)
    if path.is_dir():
        return path
    if (SEEDS / path.name).is_dir():
        return SEEDS / path.name
    shipped = ", ".join(sorted(p.name for p in SEEDS.iterdir() if p.is_dir()))
    raise ConfigError(f"seed_candidate {seed!r}: no such folder, and no shipped seed of that name ({shipped})")


def load_evolution_config(path: Path) -> EvolutionConfig:
    return load_yaml_model(path, EvolutionConfig, "evolution config", section="evolve")


@dataclass
class EvolutionSummary:
    iterations: int
    evaluated: int
    failed: int
    best: Program | None
    stopped: str
    seconds: float
    cpu_seconds: float  # selection's, with rungs; 0 without
    usd: float
    tokens: int


def reward_verdict(child: Program, parent: Program) -> tuple[float, str] | None:
    """A reward edit is judged by the change of its alignment with the north-star, not by loss or
    ranking metrics (a reward changes what the loss measures): (change, journal text), or None when
    the child kept its parent's reward or its alignment was not measured."""
    measured = child.feedback.reward_alignment
    if child.blocks["reward"] == parent.blocks["reward"] or measured is None:
        return None
    if measured.alignment is None:
        return -1.0, f"reward alignment not measured: {measured.error}"
    before = parent.feedback.reward_alignment.alignment if parent.feedback.reward_alignment else None
    change = measured.alignment - before if before is not None else 0.0
    shown = f" ({change:+.4f})" if before is not None else ""
    return change, f"reward alignment {measured.alignment:.4f}{shown} (judged by alignment, not loss)"


def build_proposer(
    config: ProposerConfig, spend: Spend, tuning: TuningConfig, origin_pulls: Callable[[], list[Pull]]
) -> Proposer:
    """The configured proposer; a mixed one chooses each edit's origin on ``origin_pulls`` (its structural
    children so far) with the tuning bandit's settings."""
    rulebook = RulebookProposer(config.rulebook_explore)
    if config.kind == "rulebook":
        return rulebook
    if config.llm is None:
        raise ConfigError(f"proposer.kind is {config.kind} but proposer.llm is not configured")
    llm = LLMProposer(build_llm(config.llm), spend)
    if config.kind == "llm":
        return llm
    return MixedProposer(rulebook, llm, origin_pulls, tuning.exploration, tuning.cold_start)


class Evolution:
    """Example::

    summary = Evolution(config, prepared_path).run(on_progress=print)
    """

    def __init__(self, config: EvolutionConfig, prepared_path: Path) -> None:
        self.config = config
        self.run_dir = Path(config.run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.db = ProgramDatabase(config.database.model_copy(update={"url": config.database_url()}))
        self.prepared = PreparedDataset.open(prepared_path, verify=False)
        self.sequences = UserSequences.from_prepared(self.prepared)
        self.directional = config.feedback.mode == "directional"
        rungs = config.rungs
        checkpoints = config.evaluation.checkpoint_dir or str(self.run_dir / "checkpoints")
        personas = config.feedback.personas
        list_users = tuple(int(u) for u in sample_users(self.sequences, personas, config.seed)) if personas else ()
        self.evaluation = config.evaluation.model_copy(
            update={
                "dataset": str(prepared_path),
                "work_dir": config.evaluation.work_dir or str(self.run_dir / "sandboxes"),
                "diagnose": config.evaluation.diagnose,
                "list_users": list_users,
                "hidden_paths": (*config.evaluation.hidden_paths, str(self.run_dir)),
                **({"max_epochs": rungs.epochs[0], "checkpoint_dir": checkpoints} if rungs else {}),
            }
        )  # what every candidate of this run is evaluated with, wherever the evaluation runs
        self.rungs = MultiFidelity(rungs, self.db, self.evaluation, config.workers) if rungs else None
        self.spend = Spend(config.max_usd, config.max_tokens, **self.db.get_state("spend", {}))
        self.proposer = build_proposer(
            config.proposer, self.spend, config.tuning,
            lambda: pulls(self.db.programs(), self.evaluation.threads, structural_origin),
        )  # fmt: skip
        self.edits = EditScheduler(config.tuning, self.evaluation.threads)
        self.critic, self.aggregator = self._critics(config.feedback.critic)
        self.rng = random.Random(f"{config.seed}:{self.db.get_state('iteration', 0)}")

    def _critics(self, config: LLMConfig | None) -> tuple[LLMCritic | None, LLMAggregator | None]:
        if config is None:
            return None, None
        llm, cache = build_llm(config), ReplyCache(self.run_dir / "critiques.sqlite")
        return LLMCritic(llm, cache, self.spend), LLMAggregator(llm, cache, self.spend)

    # --- bookkeeping --------------------------------------------------------------------------

    def _journal(self) -> list[str]:
        """Past edits with their outcome, best first."""
        entries = []
        for child in self.db.programs():
            if child.parent_key is None or child.origin != "proposed" or child.status == "pending":
                continue
            parent = self.db.get(child.parent_key)
            rationale = child.feedback.headline(160)
            verdict = reward_verdict(child, parent)
            if child.status == "failed":
                entries.append((-1.0, f"{rationale} -> failed: {child.reason}"))
            elif verdict is not None:
                entries.append((verdict[0], f"{rationale} -> {verdict[1]}"))
            else:
                delta = (child.fitness or 0) - (parent.fitness or 0)
                entries.append(
                    (delta, f"{rationale} -> {self.config.database.fitness} {child.fitness:.4f} ({delta:+.4f})")
                )
            if self.directional:  # the scalar-feedback ablation's proposer sees fitness only
                entries += [(0.0, check) for check in child.feedback.probe_checks]
        fidelity = self.rungs.journal_line() if self.rungs else None
        shown = [text for _, text in sorted(entries, key=lambda e: -e[0])[:JOURNAL_SHOWN]]
        return [fidelity, *shown] if fidelity else shown

    def _save_spend(self) -> None:
        self.db.set_state("spend", {"usd": self.spend.usd, "tokens": self.spend.tokens, "calls": self.spend.calls})

    def _reject(self, reason: str) -> None:
        self.db.set_state("rejections", [*self.db.get_state("rejections", []), reason])  # all, for the report
        log.info("proposal rejected: %s", reason)

    def _rule_gains(self) -> dict[str, tuple[float, ...]]:
        """Per rule, the relative fitness change of each child it produced in this run: -1 for a child that
        failed (it lost everything), at most +1 (a parent near zero makes any child look infinitely better)."""
        gains: dict[str, tuple[float, ...]] = {}
        for child in self.db.programs():
            rule = child.feedback.rule
            if not rule or child.parent_key is None or child.status == "pending":
                continue
            parent = self.db.get(child.parent_key).fitness or 0.0
            gain = (
                min(((child.fitness or 0.0) - parent) / max(parent, 1e-9), 1.0) if child.status == "evaluated" else -1.0
            )
            gains[rule] = (*gains.get(rule, ()), gain)
        return gains

    def _tried_rules(self, parent: Program) -> set[str]:
        children = [c for c in self.db.programs(island=parent.island) if c.parent_key == parent.key]
        return {c.feedback.rule for c in children if c.feedback.rule}

    def record(self, program: Program, outcome: EvaluationOutcome) -> Program:
        """Store a pending program's evaluation with its directional feedback (under rungs, code evaluated
        already on another island keeps that evaluation: see :meth:`_known`)."""
        if self.rungs is not None and self._known(program):
            return self.db.get(program.key)
        outcome = outcome.redacted()  # it may come from another process, with other secrets than this one's
        feedback = program.feedback.merged(  # on top of the proposal's rationale, rule and proposer
            stage=outcome.stage,
            history=outcome.history,
            stopped=outcome.stopped,
            best_epoch=outcome.best_epoch,
            test_metrics=outcome.test,  # kept apart: never shown to proposers, never ranked on
            isolation=outcome.isolation,
            seconds=round(outcome.seconds, 1),
            evaluated_at=time.time(),
            reward_alignment=outcome.reward_alignment,
            **self._directional_feedback(program, outcome),
        )
        if program.parent_key is not None:
            parent_feedback = self.db.get(program.parent_key).feedback
            feedback = feedback.merged(feedback_checks=check_feedback(parent_feedback, feedback))
        twins = [p for p in self.db.pending() if p.content_hash == program.content_hash and p.key != program.key]
        for twin in twins:  # the seed's copy on each island: same code, same outcome
            self.db.record_evaluation(twin.key, outcome.valid, feedback, outcome.reason)
        rung = self.rungs.result(program.content_hash, 0, outcome, outcome.seconds) if self.rungs else None
        stored = self.db.record_evaluation(program.key, outcome.valid, feedback, outcome.reason, rung)
        self._save_spend()  # the critic's calls
        log.info(
            "%s %s: %s", program.key[:12], stored.status,
            f"{stored.fitness:.4f}" if stored.fitness is not None else stored.reason,
        )  # fmt: skip
        return stored

    def _directional_feedback(self, program: Program, outcome: EvaluationOutcome) -> dict[str, Any]:
        """The diagnosis, the simulated users' critiques, and which new probes tested which complaints."""
        if outcome.diagnosis_error:
            log.warning("%s: the diagnosis failed: %s", program.key[:12], outcome.diagnosis_error)
            return {"diagnosis_error": outcome.diagnosis_error}
        if outcome.diagnosis is None:
            return {}
        report = DiagnosisReport.from_json(outcome.diagnosis).without(dropped(review_probes(self.db.programs())))
        extra: dict[str, Any] = {"diagnosis": report.to_json(), "signals": report.signals()}
        folder = self.run_dir / "candidates" / program.key[:12]
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "diagnosis.json").write_text(json.dumps(outcome.diagnosis, indent=2) + "\n")  # as measured
        (folder / "diagnosis.md").write_text(report.to_markdown() + "\n")
        if report.lists:
            simulation = simulate(self.prepared, self.sequences, report.lists, self.critic, self.aggregator)
            extra["critiques"] = {**simulation.to_json(), "markdown": simulation.to_markdown()}
            extra["complaints"] = simulation.signals
            (folder / "critiques.json").write_text(json.dumps(simulation.to_json(), indent=2) + "\n")
            (folder / "critiques.md").write_text(simulation.to_markdown())
        parent = self.db.get(program.parent_key) if program.parent_key else None
        complaints = parent.feedback.complaints if parent else {}
        extra["probe_checks"] = [
            f"probe {check.probe} ({check.measures}) {'verified' if check.verified else 'dropped'}: {check.reason}"
            + (
                f"; it tests a complaint of {complaints[check.measures]:.0%} of personas"
                if check.measures in complaints
                else ""
            )
            for check in report.verifications
        ]
        return extra

    # --- the loop -----------------------------------------------------------------------------

    def _propose(self, iteration: int) -> Program | None:
        island = iteration % self.config.database.islands
        parent, inspirations = self.db.sample(island, self.rng)
        programs = self.db.programs()
        choice = self.edits.choose(parent, programs)
        if choice is not None and choice.kind == "tune":
            return self._tune(parent, programs, iteration, choice)
        rejections = self.db.get_state("rejections", [])[-REJECTIONS_KEPT:]
        request = ProposalRequest(
            parent, inspirations, self._journal(), rejections, self._tried_rules(parent),
            self.config.database.fitness, self.directional, self._rule_gains(), rule_checks(programs),
        )  # fmt: skip
        try:
            proposal = self.proposer.propose(request, self.rng)
        except (LLMError, NoProposal) as exc:
            self._reject(f"iteration {iteration}: {exc}")
            fallback = self.edits.fallback(parent, choice, str(exc)) if isinstance(exc, NoProposal) else None
            return None if fallback is None else self._tune(parent, programs, iteration, fallback)
        finally:
            self._save_spend()
        try:
            change = parse_reply(proposal.text)
            sources = apply_change(parent.blocks, change)
        except EditError as exc:
            self._reject(f"iteration {iteration}: {exc}")
            return None
        proposed = Feedback(
            rationale=change.rationale, rule=proposal.rule, proposer=proposal.proposer,
            edit_kind="structural", edit_choice=choice,
        )  # fmt: skip
        return self._add(sources, parent, iteration, proposed)

    def _tune(self, parent: Program, programs: list[Program], iteration: int, choice: EditChoice) -> Program | None:
        try:
            sources, tuned = self.edits.tune(parent, programs, choice, self.rng.randrange(2**31))
        except NoTuning as exc:
            self._reject(f"iteration {iteration}: {exc}")
            return None
        return self._add(sources, parent, iteration, tuned)

    def _add(self, sources: dict[str, str], parent: Program, iteration: int, proposed: Feedback) -> Program | None:
        child = self.db.add(sources, behaviour_hash(sources), parent, iteration, feedback=proposed)
        if child is None:
            self._reject(
                f"iteration {iteration}: the change only repeats a candidate already on island {parent.island}"
            )
        return child

    def evaluate(self, programs: list[Program]) -> None:
        """Evaluate pending programs side by side (``workers`` at once) and store each outcome."""
        if self.rungs is not None:  # one evaluation per code: record() stores it for the twins
            distinct = {p.content_hash: p for p in reversed(programs) if not self._known(p)}
            programs = list(distinct.values())[::-1]
        with ThreadPoolExecutor(max_workers=self.config.workers) as pool:
            outcomes = list(pool.map(lambda program: evaluate_candidate(program.blocks, self.evaluation), programs))
        for program, outcome in zip(programs, outcomes, strict=True):
            self.record(program, outcome)

    def _known(self, program: Program) -> bool:
        """Under rungs, code evaluated already (on another island) takes that evaluation: its kept checkpoint
        may be past rung 0, and a rung-0 fitness read from it would be of a longer training. Pipelines
        evaluate such code in its own task; storing it is where it is caught."""
        done = [p for p in self.db.programs() if p.content_hash == program.content_hash and p.status != "pending"]
        if done:
            self.db.record_evaluation(program.key, done[0].metrics if done[0].status == "evaluated" else None,
                                      done[0].feedback, done[0].reason)  # fmt: skip
        return bool(done)

    def start(self) -> list[Program]:
        """Seed the islands on a new run; returns the programs still waiting for an evaluation (the
        seed, or the children of a run stopped mid-generation), one per distinct code: recording
        an outcome also records it for the same code waiting on other islands."""
        seed = load_candidate(seed_directory(self.config.seed_candidate))
        sources = dict(seed.sources)
        if self.db.add_initial(sources, behaviour_hash(sources)):
            log.info("seeded %d islands with %s", self.config.database.islands, seed.name)
        distinct = list({p.content_hash: p for p in reversed(self.db.pending())}.values())[::-1]
        if distinct:
            log.info("%d candidate(s) wait for an evaluation", len(distinct))
        return distinct

    def propose_generation(self, size: int) -> tuple[list[Program], str | None]:
        """Up to ``size`` new pending children (fewer when the iteration budget ends first), and
        why the run must stop after evaluating them (a spent LLM budget), if it must."""
        children: list[Program] = []
        iteration = int(self.db.get_state("iteration", 0))
        try:
            while len(children) < size and iteration < self.config.iterations:
                iteration += 1
                child = self._propose(iteration)
                self.db.set_state("iteration", iteration)
                if child is not None:
                    children.append(child)
        except BudgetExhausted as exc:
            return children, f"LLM budget: {exc}"
        return children, None

    def end_generation(self) -> None:
        """Once a generation is stored: the promotions it made due (with rungs), then the best programs
        migrate between islands."""
        if self.rungs is not None:
            self.rungs.promote()
        self.db.migrate(int(self.db.get_state("iteration", 0)))

    def generation(self) -> str | None:
        """One generation: ``workers`` children proposed and evaluated, then the promotions they made due;
        returns why the run must stop (a spent LLM budget), if it must."""
        children, budget_spent = self.propose_generation(self.config.workers)
        self.evaluate(children)
        self.end_generation()
        return budget_spent

    def end_selection(self, stopped: str) -> None:
        """With rungs: store why selection ended (a run resumed after this proposes nothing more), then
        train the finals."""
        if self.rungs is not None:
            self.db.set_state("selection_ended", stopped)
            self.rungs.finals()

    def run(self, on_progress: Callable[[int, EvolutionSummary], None] | None = None) -> EvolutionSummary:
        """Selection until a budget is spent, then (with rungs) the finals. Under rungs the end of selection is
        stored before the finals start, so a run resumed during them finishes them and proposes nothing more."""
        started = time.monotonic()
        self.evaluate(self.start())
        if self.rungs is not None:
            self.rungs.promote()  # those a stopped run left pending
        stopped = self.db.get_state("selection_ended") or self._select(started, on_progress)
        self.end_selection(stopped)
        return self.summary(stopped, started)

    def _select(self, started: float, on_progress: Callable[[int, EvolutionSummary], None] | None) -> str:
        """Generations until a budget is spent; returns which one."""
        while int(self.db.get_state("iteration", 0)) < self.config.iterations:
            if self.config.max_seconds is not None and time.monotonic() - started >= self.config.max_seconds:
                return "time budget"
            if self.rungs and self.config.max_cpu_seconds and self.rungs.cpu_seconds() >= self.config.max_cpu_seconds:
                return "CPU budget"
            budget_spent = self.generation()
            if budget_spent is not None:
                return budget_spent
            if on_progress is not None:
                on_progress(int(self.db.get_state("iteration", 0)), self.summary("running", started))
        return "iterations"

    def summary(self, stopped: str, started: float) -> EvolutionSummary:
        counts = self.db.counts()
        return EvolutionSummary(
            iterations=int(self.db.get_state("iteration", 0)),
            evaluated=counts.get("evaluated", 0),
            failed=counts.get("failed", 0),
            best=self.db.result(),
            stopped=stopped,
            seconds=round(time.monotonic() - started, 1),
            cpu_seconds=round(self.rungs.cpu_seconds(), 1) if self.rungs else 0.0,
            usd=round(self.spend.usd, 6),
            tokens=self.spend.tokens,
        )
