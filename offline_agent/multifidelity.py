"""The rungs of :mod:`offline_agent.rungs` run on the program database: promotions after each
generation, the finals once selection ends, and the CPU time they spent.

A rung's training goes on from the candidate's kept checkpoint (the evaluation's ``checkpoint_dir``,
one subfolder per code), so it trains only the epochs the rung below did not. Promotions and finals
are written ``pending`` before they are evaluated: a run killed at any point evaluates the pending
ones on resuming, none lost, none twice. A promoted candidate skips the smoke run (it passed it)
and the diagnosis (the proposers read its rung-0 record).
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import ThreadPoolExecutor

from offline_agent.evaluator import (
    EvaluationConfig,
    EvaluationOutcome,
    content_key,
    evaluate_candidate,
    judged_progress,
    kept_epochs,
    killed_from_outside,
)
from offline_agent.program_db import ProgramDatabase, RungResult
from offline_agent.rungs import Fidelity, RungConfig, finalists, promotions, proxy_fidelity

log = logging.getLogger(__name__)
FIDELITY_STATE = "proxy_fidelity"
MIN_TRAIN_SECONDS = 60  # an invocation with less time than this before its deadline is not started


class MultiFidelity:
    """Example::

    rungs = MultiFidelity(RungConfig(epochs=(2, 6)), db, evaluation, workers=2)
    rungs.promote()  # after each generation's rung-0 evaluations are stored
    rungs.finals()  # once selection ends
    """

    def __init__(self, config: RungConfig, db: ProgramDatabase, evaluation: EvaluationConfig, workers: int) -> None:
        self.config = config
        self.db = db
        self.evaluation = evaluation
        self.workers = workers

    def epochs(self, rung: int) -> int:
        return self.config.epochs[rung] if rung < self.config.final_rung else self.config.final_epochs

    def result(self, content_hash: str, rung: int, outcome: EvaluationOutcome, seconds: float) -> RungResult:
        """What is stored of one rung evaluation; ``seconds`` is its wall time (the CPU time is that × threads)."""
        return RungResult(
            content_hash, rung, self.epochs(rung), outcome.status, metrics=outcome.valid or {},
            test_metrics=outcome.test or {}, trained_epochs=len(outcome.history) or None, stopped=outcome.stopped,
            seconds=round(seconds, 2), cpu_seconds=round(seconds * self.evaluation.threads, 2), reason=outcome.reason,
        )  # fmt: skip

    def promote(self) -> list[Fidelity]:
        """Evaluate every promotion due, rung after rung, until none is; store and return the proxy fidelity."""
        while pending := self._due():
            log.info("%d candidate(s) promoted to a higher rung", len(pending))
            self._evaluate(pending)
        return self._fidelity()

    def promote_one(self) -> bool:
        """Evaluate one promotion due (the others stay pending, for later calls), if any; whether one was.
        For callers that account compute one evaluation at a time, such as a benchmark holding searchers
        to equal CPU time."""
        pending = self._due()
        if pending:
            self._evaluate(pending[:1])
            self._fidelity()
        return bool(pending)

    def _due(self) -> list[RungResult]:
        """The promotions due written as pending, with those left pending before: what waits for training."""
        results = self.db.rung_results()
        due = promotions(results, self.config, proxy_fidelity(results, self.config))
        self.db.add_rungs([(content_hash, rung, self.epochs(rung)) for content_hash, rung in due])
        return [r for r in self.db.rung_results("pending") if r.rung < self.config.final_rung]

    def finals(self) -> list[Fidelity]:
        """Train the top ``finals`` of the highest rung to convergence, once: the finals are chosen (and
        written pending) the first time only, so a resumed run finishes the same ones."""
        final = self.config.final_rung
        results = self.db.rung_results()
        if not any(r.rung == final for r in results):
            self.db.add_rungs([(h, final, self.config.final_epochs) for h in finalists(results, self.config)])
        self._evaluate([r for r in self.db.rung_results("pending") if r.rung == final])
        return self._fidelity()

    def cpu_seconds(self) -> float:
        """CPU time of selection: every rung evaluation's seconds × threads, the finals left out."""
        return sum(r.cpu_seconds for r in self.db.rung_results() if r.rung < self.config.final_rung)

    def journal_line(self) -> str | None:
        """One line for the proposer: how far the short trainings it is judged by predict longer ones."""
        shown = [self._describe(f) for f in self.stored_fidelity() if f.pairs]
        return "proxy fidelity (Kendall τ between successive rungs): " + "; ".join(shown) if shown else None

    def stored_fidelity(self) -> list[Fidelity]:
        return [Fidelity(**f) for f in self.db.get_state(FIDELITY_STATE, [])]

    def _describe(self, fidelity: Fidelity) -> str:
        tau = "—" if fidelity.tau is None else f"{fidelity.tau:+.2f}"
        upper = self.epochs(fidelity.lower + 1)
        return f"{self.epochs(fidelity.lower)}→{upper} epochs τ {tau} over {fidelity.pairs}"

    def _fidelity(self) -> list[Fidelity]:
        fidelity = proxy_fidelity(self.db.rung_results(), self.config)
        self.db.set_state(FIDELITY_STATE, [f.to_json() for f in fidelity])
        for f in fidelity:
            if f.pairs:
                log.info("proxy fidelity %s; rung %d promotes %.2f", self._describe(f), f.lower, f.fraction)
        return fidelity

    def _evaluate(self, pending: list[RungResult]) -> None:
        with ThreadPoolExecutor(max_workers=self.workers) as pool:
            for stored in pool.map(self._train, pending):
                log.info(
                    "%s rung %d: %s", stored.content_hash[:12], stored.rung,
                    f"{stored.fitness:.4f}" if stored.fitness is not None else stored.reason,
                )  # fmt: skip

    def _train(self, pending: RungResult) -> RungResult:
        """Train one candidate on to its rung's cap (see ``train_on``)."""
        sources = self.db.by_content(pending.content_hash).blocks
        config = self.evaluation.model_copy(
            update={"diagnose": False, "list_users": (), "alignment_logs": (), "export_dir": None}
        )
        trained = train_on(sources, config, pending.epochs, final=pending.rung >= self.config.final_rung)
        assert trained is not None  # without a deadline the first invocation always runs
        outcome, seconds = trained
        return self.db.record_rung(self.result(pending.content_hash, pending.rung, outcome, seconds))


def train_on(
    sources: dict[str, str], config: EvaluationConfig, epochs: int, final: bool, deadline: float | None = None
) -> tuple[EvaluationOutcome, float] | None:
    """Train a candidate on from its kept checkpoint up to ``epochs``, without the smoke run it passed before.

    A rung below the finals is one invocation. A final goes on over as many invocations as its per-invocation time
    budget needs (each resumes from the checkpoint the last one kept), until early stopping, the epoch cap or a
    failure ends it. A final its sandbox stopped at a limit (wall clock, memory: a slow leak in candidate code
    shows only after hours) after keeping more epochs goes on too, from its checkpoint, in a fresh process; one
    stopped with nothing more kept, or failed otherwise, ends. With a monotonic ``deadline``, each invocation's
    ``train_seconds`` is the time left before it less ``config.overhead_seconds``, and none starts with under
    ``MIN_TRAIN_SECONDS`` left; a final the deadline stops between a kill and its going on returns the epochs kept
    (``judged_progress``: a ``budget`` stop without test metrics), not the kill.

    Returns:
        The last invocation's outcome and the wall seconds of all of them; None when the deadline left too little
        time for the first.
    """
    config = config.model_copy(update={"max_epochs": epochs, "smoke": False})
    outcome: EvaluationOutcome | None = None
    seconds = 0.0
    going_on = False  # the last sandbox was killed at a limit after keeping more epochs
    for _ in range(epochs):  # each invocation trains at least one epoch
        if deadline is not None:
            remaining = deadline - time.monotonic() - config.overhead_seconds
            if remaining < MIN_TRAIN_SECONDS:
                if going_on:  # paused between sandboxes: the kept epochs stand, not the kill
                    outcome = judged_progress(sources, config, seconds) or outcome
                break
            config = config.model_copy(update={"train_seconds": remaining})
        kept = kept_epochs(sources, config)
        outcome = evaluate_candidate(sources, config)
        seconds += outcome.seconds
        going_on = final and killed_from_outside(outcome) and kept_epochs(sources, config) > kept
        if going_on:
            log.warning("final %s: %s; going on from its checkpoint", content_key(sources), outcome.reason)
            continue
        if not final or outcome.status == "failed" or outcome.stopped != "budget":
            break
    return None if outcome is None else (outcome, seconds)
