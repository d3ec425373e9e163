"""Proposers: where the next edit comes from. The rulebook (offline default) or a language model.

Both answer a :class:`ProposalRequest` with reply text in the SEARCH/REPLACE format, so the
controller parses and applies every proposal the same way.
"""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from typing import Protocol

import jinja2

from offline_agent import bandit
from offline_agent.api_text import candidate_api_text
from offline_agent.diagnosis.report import DiagnosisReport
from offline_agent.llm.base import LLM, LLMError, LLMReply, Spend
from offline_agent.program_db import Program
from offline_agent.rulebook.catalogue import RULES
from offline_agent.rulebook.engine import Rule, RuleContext, applicable, reply_for
from recsys.errors import EvorecError

log = logging.getLogger(__name__)
SHOWN_METRICS = ("ndcg@10", "hr@10", "mrr@10", "coverage@10", "novelty@10", "popularity_lift@10", "gini@10",
                 "ild@10", "calibration_kl@10", "ndcg@10_light", "ndcg@10_medium", "ndcg@10_heavy")  # fmt: skip


class NoProposal(EvorecError):
    """The proposer has nothing to offer for this parent (e.g. no rule applies)."""


@dataclass(frozen=True)
class ProposalRequest:
    parent: Program
    inspirations: list[Program]
    journal: list[str]
    rejections: list[str]
    tried_rules: set[str] = field(default_factory=set)
    fitness: str = "ndcg@10"
    directional: bool = True  # False: the proposer sees the fitness only (the scalar-feedback ablation)
    rule_gains: dict[str, tuple[float, ...]] = field(default_factory=dict)  # rule -> its children's relative gains
    rule_checks: dict[str, tuple[int, int]] = field(default_factory=dict)  # rule -> (fixed, checked) flagged problems

    def context(self) -> RuleContext:
        """What the rulebook may look at: everything, or only the fitness when feedback is scalar."""
        parent = self.parent
        if not self.directional:
            return RuleContext(parent.blocks, {self.fitness: parent.fitness or 0.0})
        return RuleContext(parent.blocks, parent.metrics, parent.feedback.history, parent.feedback)


@dataclass(frozen=True)
class Proposal:
    text: str
    proposer: str
    rule: str | None = None
    reply: LLMReply | None = None


class Proposer(Protocol):
    name: str

    def propose(self, request: ProposalRequest, rng: random.Random) -> Proposal: ...


def feedback_text(program: Program) -> str:
    """The directional feedback of a program as prompt text (diagnosis and critiques, when present)."""
    parts = []
    feedback = program.feedback
    if feedback.diagnosis:
        findings = DiagnosisReport.from_json(feedback.diagnosis).prompt_text()
        parts.append("Diagnosis probes (most severe first):\n" + (findings or "- nothing above mild"))
    if feedback.critiques:
        parts.append("User-simulator critiques:\n" + feedback.critiques.markdown)
    alignment = feedback.reward_alignment
    if alignment:
        parts.append(
            f"Reward alignment of reward.py ({alignment.reward}) with the north-star on simulated A/B logs: "
            f"{alignment.alignment:.4f} (per-user Spearman with later retention {alignment.retention:.4f} and "
            f"satisfaction {alignment.satisfaction:.4f}; arm agreement {alignment.arm_agreement:.2f})"
            if alignment.alignment is not None
            else f"Reward alignment not measured: {alignment.error}"
        )
    if feedback.history:
        curve = ", ".join(f"{epoch.valid_ndcg10:.4f}" for epoch in feedback.history[-10:])
        parts.append(f"Validation NDCG@10 over the last epochs: {curve} (best epoch {feedback.best_epoch})")
    return "\n".join(parts)


def build_prompt(request: ProposalRequest) -> str:
    template = jinja2.Template(
        resources.files("offline_agent").joinpath("prompts/proposal.j2").read_text(), undefined=jinja2.StrictUndefined
    )
    shown = SHOWN_METRICS if request.directional else (request.fitness,)
    metrics = [(name, request.parent.metrics[name]) for name in shown if name in request.parent.metrics]
    return template.render(
        parent=request.parent,
        parent_metrics=metrics,
        fitness=request.fitness,
        candidate_api=candidate_api_text(),
        feedback=feedback_text(request.parent) if request.directional else "",
        journal=request.journal,
        inspirations=request.inspirations,
        rejections=request.rejections,
    )


def system_prompt() -> str:
    return resources.files("offline_agent").joinpath("prompts/system.txt").read_text()


class RulebookProposer:
    """Picks a rule whose precondition holds and that was not yet tried on this parent.

    Order: the rule's expected value (its known gain, updated by what it brought other parents in this
    run, plus the worth of the problem the feedback points at, weighed by how often the rule's earlier
    answers to flagged problems fixed them: :meth:`Rule.expected_value`). With
    probability ``explore`` another applicable rule, drawn with Boltzmann weights ``exp(value /
    temperature)``: exploration still reaches every rule, but an edit expected to lose a third of the
    score is drawn far less often than a near-tie, since each evaluation is expensive.
    """

    name = "rulebook"

    def __init__(self, explore: float = 0.3, temperature: float = 0.1) -> None:
        self.explore = explore
        self.temperature = temperature

    @staticmethod
    def ranked(request: ProposalRequest) -> list[tuple[Rule, float]]:
        """The applicable untried rules with their expected values, best first."""
        context = request.context()
        gains, checks = request.rule_gains, request.rule_checks
        valued = [
            (rule, rule.expected_value(context, gains.get(rule.name, ()), checks.get(rule.name, (0, 0))))
            for rule in applicable(RULES, context, request.tried_rules)
        ]
        return sorted(valued, key=lambda pair: -pair[1])

    def propose(self, request: ProposalRequest, rng: random.Random) -> Proposal:
        ranked = self.ranked(request)
        if not ranked:
            raise NoProposal(f"no rule applies to {request.parent.key[:12]} that was not tried on it already")
        rule = ranked[0][0]
        if len(ranked) > 1 and rng.random() < self.explore:
            others = ranked[1:]
            best = others[0][1]
            weights = [math.exp((value - best) / self.temperature) for _, value in others]
            rule = rng.choices([other for other, _ in others], weights)[0]
        return Proposal(reply_for(rule, request.context()), self.name, rule=rule.name)


class LLMProposer:
    """Asks a language model, within the run's spend budget (:meth:`Spend.ask`)."""

    def __init__(self, llm: LLM, spend: Spend) -> None:
        self.llm = llm
        self.spend = spend
        self.name = llm.name

    def propose(self, request: ProposalRequest, rng: random.Random) -> Proposal:
        reply = self.spend.ask(self.llm, system_prompt(), build_prompt(request))
        return Proposal(reply.text, self.name, reply=reply)


class MixedProposer:
    """Structural edits from the rulebook and from a language model in one run.

    Each proposal's origin is chosen by the bandit that chooses edit kinds (:func:`offline_agent.bandit.ucb1`),
    over the structural children of each origin: the fitness they added over their parents per CPU-second.
    When the chosen origin has nothing to offer (no rule applies to the parent, the model's call failed),
    the other is asked. Every child records the origin that wrote it (``Feedback.proposer``); a spent LLM
    budget still ends the run.
    """

    name = "mixed"

    def __init__(
        self,
        rulebook: RulebookProposer,
        llm: LLMProposer,
        pulls: Callable[[], list[bandit.Pull]],
        exploration: float = 1.0,
        cold_start: int = 1,
    ) -> None:
        self.proposers: dict[str, Proposer] = {rulebook.name: rulebook, llm.name: llm}
        self.pulls = pulls
        self.exploration = exploration
        self.cold_start = cold_start

    def propose(self, request: ProposalRequest, rng: random.Random) -> Proposal:
        origins = list(self.proposers)
        chosen, reason, _ = bandit.ucb1(self.pulls(), origins, self.exploration, self.cold_start)
        log.info("%s: structural edit from %s (%s)", request.parent.key[:12], chosen, reason)
        failures = []
        for origin in sorted(origins, key=lambda o: o != chosen):
            try:
                return self.proposers[origin].propose(request, rng)
            except (NoProposal, LLMError) as exc:
                failures.append(f"{origin}: {exc}")
        raise NoProposal("; ".join(failures))
