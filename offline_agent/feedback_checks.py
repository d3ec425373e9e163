"""Feedback that is checked: did an edit that answered a flagged problem fix it in the child?

A child's edit *targets* a signal when its parent's feedback flagged it (strength at least :data:`FLAGGED`,
read as the rulebook reads it: the diagnosis probe's signal or the share of simulated users raising the
complaint, whichever is larger; ``undertrained`` from the training curve) and the edit claims to answer it:
a rule lists it in ``addresses``, a language model names it on the ``Targets:`` line of its rationale. The
child is measured the same way as its parent, at the same fidelity (rung 0), so the check compares like
with like: the edit *fixed* what it targeted when the signal fell by at least :data:`MIN_MOVE`.

Checks are recorded whatever the proposer saw: under scalar-only feedback the probes and simulated users
still run (hidden from the proposer), so that arm's edits are scored against the same signals. The run's
**feedback precision** is the share of checked targets that were fixed; per rule it sets how much the
rulebook trusts that rule's answer to a flagged problem (:func:`rule_checks`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from offline_agent.diagnosis.probes import MILD
from offline_agent.program_db import Program
from offline_agent.records import Feedback, FeedbackCheck
from offline_agent.rulebook.catalogue import RULES
from offline_agent.rulebook.engine import RuleContext

FLAGGED = MILD  # a signal the report calls at least mild is a flagged problem
MIN_MOVE = 0.02  # a smaller change of a signal is taken as none (probe signals are rounded to 1e-4)
ADDRESSES = {rule.name: rule.addresses for rule in RULES if rule.fixes}  # a rule that only measures fixes nothing
TARGETS_LINE = re.compile(r"^\s*targets?\s*:\s*(.+)$", re.IGNORECASE | re.MULTILINE)


def strength(feedback: Feedback, signal: str) -> float | None:
    """How strongly ``feedback`` points at ``signal``: what a rule reads as its evidence."""
    return RuleContext({}, history=feedback.history, feedback=feedback).signal(signal)


def claimed(feedback: Feedback) -> tuple[str, ...]:
    """The signals a child's edit says it answers: its rule's, or those a language model named."""
    if feedback.rule:
        return ADDRESSES.get(feedback.rule, ())
    found = TARGETS_LINE.search(feedback.rationale)
    if found is None:
        return ()
    names = (name.strip().strip("`.").replace(" ", "_").lower() for name in found.group(1).split(","))
    return tuple(dict.fromkeys(name for name in names if name))


def check_feedback(parent: Feedback, child: Feedback) -> list[FeedbackCheck]:
    """One check per flagged signal the child's edit targeted; ``fixed`` is None where the child's signal
    was not measured (its training or diagnosis failed)."""
    checks = []
    for signal in claimed(child):
        before = strength(parent, signal)
        if before is None or before < FLAGGED:
            continue
        after = strength(child, signal)
        fixed = None if after is None else after <= before - MIN_MOVE
        checks.append(
            FeedbackCheck(signal=signal, parent=round(before, 4), child=None if after is None else round(after, 4),
                          fixed=fixed)
        )  # fmt: skip
    return checks


@dataclass(frozen=True)
class Precision:
    """Targeted edits of one kind: how many were checked (the child measured) and how many fixed their target."""

    targeted: int = 0
    checked: int = 0
    fixed: int = 0

    @property
    def precision(self) -> float | None:
        return self.fixed / self.checked if self.checked else None

    def __add__(self, other: Precision) -> Precision:
        return Precision(self.targeted + other.targeted, self.checked + other.checked, self.fixed + other.fixed)

    def to_json(self) -> dict[str, float | int | None]:
        precision = self.precision
        return {"targeted": self.targeted, "checked": self.checked, "fixed": self.fixed,
                "precision": None if precision is None else round(precision, 4)}  # fmt: skip


def edit_kind(program: Program) -> str:
    """How the report groups a child's edit: its rule, else its proposer (a language model), else its edit kind."""
    feedback = program.feedback
    return feedback.rule or feedback.proposer or feedback.edit_kind or "seed"


def precision_by(programs: Iterable[Program], key: Callable[[Program], str] = edit_kind) -> dict[str, Precision]:
    """Feedback precision per group of children (by default per rule or proposer), over their checks."""
    groups: dict[str, Precision] = {}
    for program in programs:
        for check in program.feedback.feedback_checks:
            counted = Precision(1, int(check.fixed is not None), int(bool(check.fixed)))
            groups[key(program)] = groups.get(key(program), Precision()) + counted
    return groups


def overall(programs: Iterable[Program]) -> Precision:
    return sum(precision_by(programs, lambda _: "all").values(), Precision())


def rule_checks(programs: Iterable[Program]) -> dict[str, tuple[int, int]]:
    """Per rule, (fixed, checked) of its targeted edits in this run: what :meth:`Rule.expected_value` weighs
    the rule's answer to a flagged problem by."""
    by_rule = precision_by((p for p in programs if p.feedback.rule), lambda p: str(p.feedback.rule))
    return {rule: (found.fixed, found.checked) for rule, found in by_rule.items()}
