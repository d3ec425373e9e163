"""The race's rivals of evorec: what an engineer would run instead, Optuna over the seed's numbers.

An arm is one Optuna study over the seed's declared ``SEARCH_SPACE`` (the numbers evorec's tune children
draw too), with Optuna's ``HyperbandPruner`` on the rungs evorec uses (its reduction factor evorec's
``1 / promote_fraction``): with the TPE sampler it is what an engineer with Optuna and a day of CPU would
run; with the random sampler it is Hyperband proper. Every trial is trained by the same sandboxed,
judged evaluator as evorec's candidates; at each rung its training goes on from its own checkpoint up to
the rung's epochs, and its validation NDCG@10 is reported to the pruner.

Resumable: the study lives in SQLite beside the checkpoints (the evaluator keeps one per code under the
evaluation's ``checkpoint_dir``); a trial left running by a killed invocation is picked up where its last
reported rung ended. The CPU time of every rung evaluation (seconds × threads) is kept on its trial, so
arms can be held to equal compute.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from benchmarks.arms import TopRung
from offline_agent.evaluator import EvaluationConfig, EvaluationOutcome, content_key, evaluate_candidate
from offline_agent.rungs import RungConfig, kendall_tau
from offline_agent.search_space import declared_space, with_values
from recsys.evaluation import SELECTION_METRIC

log = logging.getLogger(__name__)
CPU_SECONDS = "cpu_seconds"  # a trial's user attribute: the CPU time its rung evaluations spent
TEST_AT = "test_ndcg10_at_"  # + epochs: a trial's user attribute, the test NDCG@10 measured with that rung's validation


class HyperbandArm:
    """Example::

    arm = HyperbandArm("optuna", optuna.samplers.TPESampler(seed=0), seed_sources, evaluation, rungs, folder)
    while arm.cpu_seconds() < budget:
        arm.step()  # one rung evaluation
    arm.finalists()  # what to train to convergence
    """

    def __init__(
        self,
        name: str,
        sampler: optuna.samplers.BaseSampler,
        seed_sources: dict[str, str],
        evaluation: EvaluationConfig,
        rungs: RungConfig,
        folder: Path,
    ) -> None:
        self.name, self.seed_sources, self.rungs = name, seed_sources, rungs
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.space = declared_space(seed_sources)
        self.evaluation = evaluation.model_copy(
            update={"diagnose": False, "list_users": (), "alignment_logs": (), "export_dir": None}
        )
        pruner = optuna.pruners.HyperbandPruner(
            min_resource=rungs.epochs[0],
            max_resource=rungs.epochs[-1],
            reduction_factor=round(1 / rungs.promote_fraction),
        )
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self.study = optuna.create_study(
            study_name=name, storage=f"sqlite:///{self.folder / 'study.db'}", load_if_exists=True,
            direction="maximize", sampler=sampler, pruner=pruner,
        )  # fmt: skip

    def cpu_seconds(self) -> float:
        """CPU time of selection so far (the finals left out)."""
        return sum(float(t.user_attrs.get(CPU_SECONDS, 0.0)) for t in self.study.get_trials(deepcopy=False))

    def evaluations(self) -> int:
        """Rung evaluations so far: one per reported rung, and one per trial that failed."""
        trials = self.study.get_trials(deepcopy=False)
        return sum(len(t.intermediate_values) + (t.state == TrialState.FAIL) for t in trials)

    def step(self) -> None:
        """One rung evaluation: the next rung of the trial in progress, or a new trial's first."""
        running = self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        if running:  # left by a killed invocation, or between rungs
            frozen = running[0]
            trial = optuna.Trial(self.study, frozen._trial_id)  # Optuna's way to go on with a stored trial
            rung, spent = len(frozen.intermediate_values), float(frozen.user_attrs.get(CPU_SECONDS, 0.0))
            if rung and self._settled(trial, rung, frozen.intermediate_values[max(frozen.intermediate_values)]):
                return
        else:
            trial, rung, spent = self.study.ask(self._distributions()), 0, 0.0
        epochs = self.rungs.epochs[rung]
        outcome = self._train(self._sources(trial.params), epochs, smoke=rung == 0)
        trial.set_user_attr(CPU_SECONDS, spent + outcome.seconds * self.evaluation.threads)
        if outcome.status != "evaluated" or outcome.valid is None:
            trial.set_user_attr("reason", outcome.reason)
            self.study.tell(trial, state=TrialState.FAIL)
            return
        value = outcome.valid[SELECTION_METRIC]
        trial.set_user_attr(TEST_AT + str(epochs), (outcome.test or {}).get(SELECTION_METRIC))
        trial.report(value, epochs)
        self._settled(trial, rung + 1, value)

    def _settled(self, trial: optuna.Trial, reported: int, value: float) -> bool:
        """Tell the study a trial's end where it has one: every rung reported, or pruned by Hyperband."""
        if reported == len(self.rungs.epochs):
            self.study.tell(trial, value)
            return True
        if trial.should_prune():
            self.study.tell(trial, state=TrialState.PRUNED)
            return True
        return False

    def _ranked(self) -> list[FrozenTrial]:
        """Trials with a reported rung, best first: highest rung reached, then validation there."""
        reached = [t for t in self.study.get_trials(deepcopy=False) if t.intermediate_values]

        def rank(trial: FrozenTrial) -> tuple[int, float]:
            top = max(trial.intermediate_values)
            return top, trial.intermediate_values[top]

        return sorted(reached, key=rank, reverse=True)

    def finalists(self) -> list[dict[str, str]]:
        """The top ``finals`` distinct configurations' code. Trials can repeat a configuration (Hyperband's
        brackets, and TPE's seeded start, drew ML-1M's best three times): a repeat is the same program, so
        counting it again would leave the arm short of finalists and its finals never done."""
        distinct: dict[str, dict[str, str]] = {}
        for trial in self._ranked():
            if len(distinct) == self.rungs.finals:
                break
            sources = self._sources(trial.params)
            distinct.setdefault(content_key(sources), sources)
        return list(distinct.values())

    def best(self) -> TopRung | None:
        """The best trial at the highest rung reached, with the test NDCG@10 measured at that rung."""
        ranked = [t for t in self._ranked() if t.user_attrs.get(TEST_AT + str(max(t.intermediate_values))) is not None]
        if not ranked:
            return None
        trial = ranked[0]
        epochs = max(trial.intermediate_values)
        valid, test = trial.intermediate_values[epochs], trial.user_attrs[TEST_AT + str(epochs)]
        return TopRung(self.rungs.epochs.index(epochs), epochs, {SELECTION_METRIC: valid}, {SELECTION_METRIC: test})

    def proxy_fidelity(self) -> list[dict[str, Any]]:
        """Kendall τ between successive rungs over the trials that reached both (as evorec's report has it)."""
        trials = [t.intermediate_values for t in self.study.get_trials(deepcopy=False)]
        fidelity = []
        for lower, upper in zip(self.rungs.epochs, self.rungs.epochs[1:], strict=False):
            pairs = [(values[lower], values[upper]) for values in trials if lower in values and upper in values]
            tau = kendall_tau([a for a, _ in pairs], [b for _, b in pairs])
            fidelity.append({"epochs": [lower, upper], "pairs": len(pairs), "tau": tau})
        return fidelity

    def _distributions(self) -> dict[str, optuna.distributions.BaseDistribution]:
        return {tunable.key: tunable.domain.distribution() for tunable in self.space}

    def _sources(self, params: dict[str, Any]) -> dict[str, str]:
        written = {t.key: t.domain.written(params[t.key]) for t in self.space}
        return with_values(self.seed_sources, self.space, written)

    def _train(self, sources: dict[str, str], epochs: int, smoke: bool) -> EvaluationOutcome:
        """Train on to ``epochs`` from the configuration's kept checkpoint (the first rung runs the smoke test)."""
        return evaluate_candidate(sources, self.evaluation.model_copy(update={"max_epochs": epochs, "smoke": smoke}))
