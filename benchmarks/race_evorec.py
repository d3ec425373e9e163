"""The race's evorec arm: an evolution run with rungs, tuning and directional feedback, one evaluation a step.

The arm is an :class:`~offline_agent.evolve.Evolution` on its own database (resumable as any run): the
rulebook proposer with the diagnosis probes and simulated users' critiques, multi-fidelity selection
over the race's rungs, tune children and the bandit between edit kinds, one island, one candidate per
generation; a promotion due is trained before the next child is proposed. The race decides when selection
ends (equal CPU time for every arm) and trains the finals itself, as it does for the other arms.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from benchmarks.arms import TopRung
from offline_agent.evaluator import EvaluationConfig
from offline_agent.evolve import Evolution, EvolutionConfig, FeedbackConfig
from offline_agent.program_db import DatabaseConfig
from offline_agent.rungs import RungConfig, finalists


class EvorecArm:
    """Example::

    arm = EvorecArm(seed_folder, prepared_path, evaluation, rungs, folder, seed=0)
    arm.step()  # the seed's evaluation first, then one generation (proposal, rung 0, promotions) a step
    """

    def __init__(
        self,
        seed: Path,
        prepared: Path,
        evaluation: EvaluationConfig,
        rungs: RungConfig,
        folder: Path,
        rng_seed: int,
        feedback: FeedbackConfig | None = None,
    ) -> None:
        self.rungs = rungs
        config = EvolutionConfig(
            seed_candidate=str(seed), dataset=str(prepared), run_dir=str(folder), iterations=10**6, seed=rng_seed,
            database=DatabaseConfig(islands=1), evaluation=evaluation, rungs=rungs,
            feedback=feedback or FeedbackConfig(),
        )  # fmt: skip
        self.evolution = Evolution(config, prepared)
        self._started = False

    def cpu_seconds(self) -> float:
        assert self.evolution.rungs is not None
        return self.evolution.rungs.cpu_seconds()

    def first_evaluation_seconds(self) -> float | None:
        """CPU time of the seed's rung-0 evaluation, the run's first (None until it is done): the work a
        processor's speed is measured on (:mod:`benchmarks.processor_speed`)."""
        seeds = {p.content_hash for p in self.evolution.db.programs() if p.origin == "initial"}
        evaluated = self.evolution.db.rung_results("evaluated")
        done = [r.cpu_seconds for r in evaluated if r.rung == 0 and r.content_hash in seeds]
        return done[0] if done else None

    def evaluations(self) -> int:
        return sum(1 for r in self.evolution.db.rung_results() if r.status != "pending")

    def step(self) -> None:
        """One evaluation a step, as an Optuna arm's step is one rung evaluation, so that no step overruns the
        CPU budget by more than one training: the first step of an invocation evaluates what waits (the seed;
        children a stopped invocation left); then a promotion due if there is one, else a new child's rung 0."""
        assert self.evolution.rungs is not None
        if not self._started:
            self._started = True
            waiting = self.evolution.start()
            if waiting or not self.evolution.db.rung_results():
                self.evolution.evaluate(waiting)
                return
        if self.evolution.rungs.promote_one():
            return
        children, _ = self.evolution.propose_generation(1)
        self.evolution.evaluate(children)
        self.evolution.db.migrate(int(self.evolution.db.get_state("iteration", 0)))

    def best(self) -> TopRung | None:
        """The best of the highest rung reached: the run's result before any finals."""
        found = self.evolution.db.best_at_top_rung()
        if found is None:
            return None
        _, result = found
        return TopRung(result.rung, result.epochs, result.metrics, result.test_metrics)

    def finalists(self) -> list[dict[str, str]]:
        chosen = finalists([r for r in self.evolution.db.rung_results() if r.rung < len(self.rungs.epochs)], self.rungs)
        return [self.evolution.db.by_content(content_hash).blocks for content_hash in chosen]

    def proxy_fidelity(self) -> list[dict[str, Any]]:
        rungs = self.evolution.rungs
        assert rungs is not None
        return [
            {"epochs": [rungs.epochs(f.lower), rungs.epochs(f.lower + 1)], **f.to_json()}
            for f in rungs.stored_fidelity()
        ]
