"""The bandit between kinds of edit: a structural edit (the configured proposer) or a tune child; and, when
a run mixes proposers, between the origins of structural edits (the rulebook or a language model).

Both kinds spend the run's one compute budget, so a kind is worth what it brought per CPU-second: the
fitness its children added over their parents (floored at 0: a worse child costs its evaluation but
takes nothing away, since selection keeps the parent) divided by their evaluation seconds times the
threads each used. UCB1 (Auer et al. 2002) picks the kind with the highest such rate plus
``exploration * sqrt(2 ln n / n_kind)``. The rate's scale depends on the dataset and the stage of the
run (gains shrink as the population improves), so it is divided by the leading kind's: the leader
scores 1, the other its share of the leader's rate (normalised by the best single child's rate, the
means of skewed gains stay small and the choice stays near round-robin for a run's length).
Each kind is tried ``cold_start`` times first. The state is the program database itself, so a resumed
run chooses as the uninterrupted one would, and a choice is a function of the records alone: the same
records, the same choice.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

from offline_agent.program_db import Program
from offline_agent.records import ArmGains, EditChoice

KINDS: tuple[Literal["structural", "tune"], ...] = ("structural", "tune")
MIN_SECONDS = 1.0  # an evaluation that failed at once still cost its start-up


@dataclass(frozen=True)
class Pull:
    """One child of a kind: the gain it brought (None while it waits for its evaluation) and its CPU time."""

    kind: str
    gain: float | None
    cpu_seconds: float


def edit_kind(child: Program) -> str:
    """A child's kind of edit (children from before edit kinds were recorded count as structural)."""
    return child.feedback.edit_kind or "structural"


def structural_origin(child: Program) -> str | None:
    """Which proposer wrote a structural child (None for a tune child): the arms of a mixed run's origins."""
    return None if edit_kind(child) == "tune" else child.feedback.proposer


def pulls(
    programs: Sequence[Program], threads: int, kind_of: Callable[[Program], str | None] = edit_kind
) -> list[Pull]:
    """The proposed children of the run as pulls of their kind (``kind_of``; None leaves a child out)."""
    by_key = {program.key: program for program in programs}
    found = []
    for child in programs:
        parent = by_key.get(child.parent_key or "")
        kind = kind_of(child)
        if child.origin != "proposed" or parent is None or kind is None:
            continue
        if child.status == "pending":
            found.append(Pull(kind, None, 0.0))
            continue
        gain = max((child.fitness or 0.0) - (parent.fitness or 0.0), 0.0) if child.status == "evaluated" else 0.0
        found.append(Pull(kind, gain, max(child.feedback.seconds or 0.0, MIN_SECONDS) * threads))
    return found


def arm_gains(found: Sequence[Pull], kinds: Sequence[str] = KINDS) -> dict[str, ArmGains]:
    finished = [pull for pull in found if pull.gain is not None]
    return {
        kind: ArmGains(
            children=sum(pull.kind == kind for pull in found),
            gain=sum(pull.gain or 0.0 for pull in finished if pull.kind == kind),
            cpu_seconds=sum(pull.cpu_seconds for pull in finished if pull.kind == kind),
        )
        for kind in kinds
    }


def ucb1(
    found: Sequence[Pull], kinds: Sequence[str], exploration: float = 1.0, cold_start: int = 1
) -> tuple[str, str, dict[str, ArmGains]]:
    """The arm to pull among ``kinds``, why, and each arm's gains (with its score when UCB1 chose)."""
    arms = arm_gains(found, kinds)
    untried = [kind for kind in kinds if arms[kind].children < cold_start]
    if untried:
        first = untried[0]
        return first, f"cold start: {arms[first].children} of {cold_start} {first}", arms
    rates = {kind: arms[kind].gain / arms[kind].cpu_seconds if arms[kind].cpu_seconds else 0.0 for kind in kinds}
    best_rate = max(rates.values())
    total = sum(arms[kind].children for kind in kinds)
    scored: dict[str, ArmGains] = {}
    for kind in kinds:
        arm = arms[kind]
        rate = rates[kind] / best_rate if best_rate > 0 else 0.0
        scored[kind] = arm.model_copy(
            update={"score": rate + exploration * math.sqrt(2 * math.log(total) / arm.children)}
        )
    kind = max(kinds, key=lambda k: scored[k].score or 0.0)  # ties: the first kind
    scores = ", ".join(f"{k} {scored[k].score:.3f}" for k in kinds)
    return kind, f"UCB1: {scores}", scored


def choose(found: Sequence[Pull], exploration: float = 1.0, cold_start: int = 1) -> EditChoice:
    """The kind of the next edit, with the gains it was chosen on."""
    kind, reason, arms = ucb1(found, KINDS, exploration, cold_start)
    return EditChoice(kind="tune" if kind == "tune" else "structural", reason=reason, arms=arms)
