"""Tune children: new values for a parent's declared numbers, drawn by Optuna's TPE from its relatives' trials.

Relatives are the run's programs whose code is the parent's once the declared constants' values are masked
(:func:`~offline_agent.search_space.structure`): ancestors and siblings that changed only numbers, earlier tune
children, rule edits that set a constant. Each is one trial of an in-memory study: its values read from its
code, its validation fitness from the program database; a failed evaluation is a failed trial. TPE, seeded by
the run, draws the next values, which are spliced into the parent's code; the child passes the evaluator's
static check before it is written. No candidate code runs in this process.

:class:`EditScheduler` is what the evolution loop calls: the bandit's choice of the edit kind
(:mod:`offline_agent.bandit`), then a tune child when tuning was chosen.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import optuna
from optuna.trial import TrialState, create_trial
from pydantic import BaseModel, ConfigDict, Field

from offline_agent import bandit
from offline_agent.evaluator import static_check
from offline_agent.program_db import Program
from offline_agent.proposers import NoProposal
from offline_agent.records import EditChoice, Feedback
from offline_agent.search_space import SpaceError, Tunable, current_values, declared_space, structure, with_values

log = logging.getLogger(__name__)


class TuningConfig(BaseModel):
    """Tuning inside evolution, and the bandit that shares the run's budget between it and structural edits."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = Field(default=True, description="off: every edit is structural, as before tuning existed")
    startup_trials: int = Field(default=4, ge=1, description="TPE draws at random until it holds this many trials")
    attempts: int = Field(default=8, ge=1, description="draws before giving up when each repeats known values")
    exploration: float = Field(default=1.0, ge=0, description="UCB1's weight on the confidence term")
    cold_start: int = Field(default=1, ge=1, description="children of each kind before UCB1 chooses")


class NoTuning(NoProposal):
    """No tune child can be drawn for this parent; the message says why."""


def relatives(parent: Program, programs: Sequence[Program], space: tuple[Tunable, ...]) -> list[Program]:
    """The programs with the parent's structure, one per distinct code (migrants and twins are one trial)."""
    shape = structure(parent.blocks, space)
    found: dict[str, Program] = {}
    for program in [parent, *programs]:
        if program.content_hash not in found and structure(program.blocks, space) == shape:
            found[program.content_hash] = program
    return list(found.values())


def study_of(family: Sequence[Program], space: tuple[Tunable, ...], seed: int, startup_trials: int) -> optuna.Study:
    """An in-memory TPE study holding one trial per finished relative whose values lie in the parent's space."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # the study is rebuilt for every child: no banner each time
    study = optuna.create_study(
        direction="maximize", sampler=optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup_trials)
    )
    distributions = {tunable.key: tunable.domain.distribution() for tunable in space}
    trials = []
    for program in family:
        values = current_values(program.blocks, space)
        if program.status == "pending" or values is None:
            continue
        try:
            if program.status == "evaluated":
                trials.append(create_trial(params=values, distributions=distributions, value=program.fitness))
            else:
                trials.append(create_trial(params=values, distributions=distributions, state=TrialState.FAIL))
        except ValueError:
            continue  # a value outside the declared space: the study cannot hold it
    study.add_trials(trials)
    return study


def _shown(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else repr(value)


def tune(
    parent: Program, programs: Sequence[Program], config: TuningConfig, seed: int
) -> tuple[dict[str, str], Feedback]:
    """A tune child of ``parent``: its blocks and the proposal's record; raises :class:`NoTuning` saying why not."""
    try:
        space = declared_space(parent.blocks)
    except SpaceError as exc:
        raise NoTuning(f"no tune child of {parent.key[:12]}: {exc}") from None
    if not space:
        raise NoTuning(f"no tune child of {parent.key[:12]}: it declares no SEARCH_SPACE")
    family = relatives(parent, programs, space)
    known = [current_values(program.blocks, space) for program in family]
    before = current_values(parent.blocks, space) or {}
    study = study_of(family, space, seed, config.startup_trials)
    distributions = {tunable.key: tunable.domain.distribution() for tunable in space}
    for _ in range(config.attempts):
        drawn = study.ask(distributions).params
        values = {tunable.key: tunable.domain.written(drawn[tunable.key]) for tunable in space}
        if values not in known:
            break
    else:
        raise NoTuning(f"no tune child of {parent.key[:12]}: {config.attempts} draws all repeated known values")
    sources = with_values(parent.blocks, space, values)
    problem = static_check(sources) or (None if current_values(sources, space) == values else "values not written")
    if problem:
        raise NoTuning(f"the tune child of {parent.key[:12]} does not load: {problem}")
    changes = ", ".join(
        f"{key} {_shown(before.get(key))} -> {_shown(value)}"
        for key, value in values.items()
        if before.get(key) != value
    )
    failed = sum(trial.state == TrialState.FAIL for trial in study.trials)
    finished = len([t for t in study.trials if t.state != TrialState.RUNNING])
    rationale = f"tune: {changes} (TPE over {finished} trials of relatives, {failed} failed)"
    feedback = Feedback(rationale=rationale, rule="tune", proposer="tune", edit_kind="tune", tuned=values)
    return sources, feedback


def untunable(parent: Program) -> str | None:
    """Why ``parent`` cannot have tune children (logged when its declaration is malformed), or None."""
    try:
        if declared_space(parent.blocks):
            return None
    except SpaceError as exc:
        log.warning("%s: the SEARCH_SPACE is malformed: %s", parent.key[:12], exc)
        return f"the parent's SEARCH_SPACE is malformed: {exc}"
    return "the parent declares no SEARCH_SPACE"


class EditScheduler:
    """Chooses each edit's kind with the bandit and draws the tune children.

    Example::

        scheduler = EditScheduler(TuningConfig(), threads=2)
        choice = scheduler.choose(parent, db.programs())
        if choice is not None and choice.kind == "tune":
            sources, feedback = scheduler.tune(parent, db.programs(), choice, seed=7)
    """

    def __init__(self, config: TuningConfig, threads: int) -> None:
        self.config = config
        self.threads = threads

    def choose(self, parent: Program, programs: Sequence[Program]) -> EditChoice | None:
        """The kind of the next edit of ``parent``; None when tuning is off."""
        if not self.config.enabled:
            return None
        found = bandit.pulls(programs, self.threads)
        why = untunable(parent)
        if why is None:
            choice = bandit.choose(found, self.config.exploration, self.config.cold_start)
        else:
            choice = EditChoice(kind="structural", reason=why, arms=bandit.arm_gains(found))
        log.info("%s: %s edit (%s)", parent.key[:12], choice.kind, choice.reason)
        return choice

    def fallback(self, parent: Program, choice: EditChoice | None, why: str) -> EditChoice | None:
        """A tune edit instead of the structural one chosen, when the proposer has none for this parent (the
        rulebook tried every rule that applies to it) and the parent can be tuned; else None."""
        if choice is None or choice.kind != "structural" or untunable(parent) is not None:
            return None
        log.info("%s: tune edit instead (%s)", parent.key[:12], why)
        return EditChoice(kind="tune", reason=f"no structural edit ({why}); tuning instead", arms=choice.arms)

    def tune(
        self, parent: Program, programs: Sequence[Program], choice: EditChoice, seed: int
    ) -> tuple[dict[str, str], Feedback]:
        """A tune child of ``parent`` (:func:`tune`), its record holding the choice that asked for it."""
        sources, feedback = tune(parent, programs, self.config, seed)
        return sources, feedback.merged(edit_choice=choice)
