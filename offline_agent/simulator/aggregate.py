"""From many users' critiques to one assessment of the candidate, and the numbers the rulebook reads.

:func:`simulate` runs the whole simulator on a candidate's top-10 lists: personas, critiques (a
language model's when one is given and answers usably, measured otherwise), the assessment, and
the feedback signals; what failed along the way is recorded, never raised.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from offline_agent.llm.base import LLM, BudgetExhausted, LLMError, Spend
from offline_agent.simulator.cache import ReplyCache, cached_answer
from offline_agent.simulator.critiques import (
    GENRE_PREFIX,
    SIGNAL_MEANINGS,
    SIGNAL_VOCABULARY,
    Critique,
    LLMCritic,
    Signal,
    count_words,
    critique_users,
    parse_reply,
    render_prompt,
    reply_schema,
)
from offline_agent.simulator.personas import ItemFacts, Persona, build_personas
from recsys.data.prepared import PreparedDataset
from recsys.sequences import Stage, UserSequences

Status = Literal["CRITICAL", "NEEDS_IMPROVEMENT", "STABLE"]
CRITICAL_MISALIGNED = 0.7  # mean share of misaligned items from which the candidate is CRITICAL
CRITICAL_USERS = 0.6  # ...or the share of users raising one signal
NEEDS_IMPROVEMENT_MISALIGNED = 0.4
NEEDS_IMPROVEMENT_USERS = 0.3
MARKDOWN_USERS = 5
AGGREGATE_SYSTEM = (
    "You are a recommender-systems analyst. You turn simulated viewers' critiques into one assessment "
    "of a recommender. Answer with one JSON object that follows the given schema, and nothing else."
)


class FailureMode(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    share: float = Field(ge=0, le=1)
    description: str


class Assessment(BaseModel):
    """The candidate as the simulated users see it: a status, what fails and for how many."""

    model_config = ConfigDict(extra="forbid")

    status: Status
    failure_modes: list[FailureMode]
    signals_to_track: list[Signal]
    summary: str
    source: Literal["llm", "measured"]


def mean_misaligned(critiques: Sequence[Critique]) -> float:
    """Mean share of misaligned items per user, rounded so that 7 of 10 meets a 0.7 threshold exactly."""
    return round(float(np.mean([c.misaligned_share() for c in critiques])), 12) if critiques else 0.0


def signal_shares(critiques: Sequence[Critique]) -> dict[tuple[str, str], float]:
    """Share of users raising each (signal, "over" | "under"), most raised first."""
    counts = Counter((signal, "over") for c in critiques for signal in set(c.over_weighted))
    counts.update((signal, "under") for c in critiques for signal in set(c.under_weighted))
    ranked = sorted(counts.items(), key=lambda pair: (-pair[1], pair[0]))
    return {key: count / len(critiques) for key, count in ranked}


def measured_assessment(critiques: Sequence[Critique]) -> Assessment:
    """Status from the mean misaligned share and the most raised signal (thresholds above)."""
    if not critiques:
        summary = "No users were simulated; nothing to assess."
        return Assessment(status="STABLE", failure_modes=[], signals_to_track=[], summary=summary, source="measured")
    shares = signal_shares(critiques)
    misaligned = mean_misaligned(critiques)
    status = _status(misaligned, max(shares.values(), default=0.0))
    modes = [_signal_mode(signal, direction, share, len(critiques)) for (signal, direction), share in shares.items()]
    if misaligned > 0:
        description = f"{misaligned:.0%} of the recommended items miss the users' taste"
        modes.append(FailureMode(name="misaligned items", share=misaligned, description=description))
    modes.sort(key=lambda mode: (-mode.share, mode.name))
    track = list(dict.fromkeys(signal for (signal, _), share in shares.items() if share >= NEEDS_IMPROVEMENT_USERS))
    return Assessment(
        status=status,
        failure_modes=modes,
        signals_to_track=track,
        summary=_summary(status, misaligned, modes),
        source="measured",
    )


def _signal_mode(signal: str, direction: str, share: float, users: int) -> FailureMode:
    thing = SIGNAL_MEANINGS.get(signal, signal.removeprefix(GENRE_PREFIX))
    raised = count_words(round(share * users))
    description = f"{raised} of {count_words(users)} users say their list {direction}-weights {thing}"
    return FailureMode(name=f"{signal} {direction}-weighted", share=share, description=description)


def _status(misaligned: float, top_users: float) -> Status:
    if misaligned >= CRITICAL_MISALIGNED or top_users >= CRITICAL_USERS:
        return "CRITICAL"
    if misaligned >= NEEDS_IMPROVEMENT_MISALIGNED or top_users >= NEEDS_IMPROVEMENT_USERS:
        return "NEEDS_IMPROVEMENT"
    return "STABLE"


def _summary(status: Status, misaligned: float, modes: list[FailureMode]) -> str:
    text = f"{status}: {misaligned:.0%} of the recommended items miss the users' taste"
    raised = [f"{mode.name} ({mode.share:.0%})" for mode in modes if mode.name != "misaligned items"][:3]
    return text + (f"; most raised: {', '.join(raised)}." if raised else ".")


class LLMAggregator:
    """A language model reads all critiques and assesses the candidate; validated, cached and charged."""

    def __init__(self, llm: LLM, cache: ReplyCache, spend: Spend | None = None) -> None:
        self.llm = llm
        self.cache = cache
        self.spend = spend

    def assess(self, critiques: Sequence[Critique]) -> Assessment:
        prompt = render_prompt(
            "aggregate.j2",
            critiques=critiques,
            critical_misaligned=CRITICAL_MISALIGNED,
            critical_users=CRITICAL_USERS,
            needs_misaligned=NEEDS_IMPROVEMENT_MISALIGNED,
            needs_users=NEEDS_IMPROVEMENT_USERS,
            signals=SIGNAL_VOCABULARY,
            schema=reply_schema(Assessment, ("source",)),
        )

        def parse(text: str) -> Assessment:
            return parse_reply(text, Assessment, {"source": "llm"})

        return cached_answer(self.llm, self.cache, self.spend, AGGREGATE_SYSTEM, prompt, parse)


def assess_critiques(critiques: Sequence[Critique], aggregator: LLMAggregator | None) -> tuple[Assessment, list[str]]:
    """The aggregator's assessment, or the measured one when there is none, nothing to assess, its reply is
    unusable or the budget is spent (the reason is recorded in the second element)."""
    if aggregator is not None and critiques:
        try:
            return aggregator.assess(critiques), []
        except (LLMError, BudgetExhausted) as exc:
            return measured_assessment(critiques), [f"assessment: {exc}"]
    return measured_assessment(critiques), []


def feedback_signals(critiques: Sequence[Critique]) -> dict[str, float]:
    """Per complaint, the share of users (0..1) raising it: what the rulebook's preconditions read,
    under the same names as the diagnosis signals of the same property."""

    def share(raised: Any) -> float:
        return float(np.mean([bool(raised(c)) for c in critiques])) if critiques else 0.0

    return {
        "popularity_bias": share(lambda c: "popularity" in c.over_weighted),
        "obscure_lists": share(lambda c: "obscurity" in c.over_weighted),
        "low_diversity": share(lambda c: "sameness" in c.over_weighted),
        "scattered_lists": share(lambda c: "diversity" in c.over_weighted),
        "genre_calibration": share(
            lambda c: any(s.startswith(GENRE_PREFIX) for s in c.over_weighted + c.under_weighted)
        ),
        "era_mismatch": share(lambda c: {"recency", "old_films"} & set(c.over_weighted + c.under_weighted)),
    }


@dataclass
class SimulationFeedback:
    """What the simulator says of one candidate: per user, in aggregate, and what failed."""

    personas: list[Persona]
    critiques: list[Critique]
    assessment: Assessment
    signals: dict[str, float]
    failures: list[str]

    def to_json(self) -> dict[str, Any]:
        return {
            "personas": [asdict(persona) for persona in self.personas],
            "critiques": [critique.model_dump(mode="json") for critique in self.critiques],
            "assessment": self.assessment.model_dump(mode="json"),
            "signals": dict(self.signals),
            "failures": list(self.failures),
        }

    def to_markdown(self) -> str:
        lines = [f"**Status: {self.assessment.status}** ({self.assessment.source})", "", self.assessment.summary, ""]
        if self.assessment.failure_modes:
            lines += ["Failure modes:"] + [
                f"- {mode.name} ({mode.share:.0%}): {mode.description}" for mode in self.assessment.failure_modes
            ]
            lines.append("")
        lines += ["What some users say:"] + [
            f"- {_persona_line(persona)}: {critique.summary}"
            for persona, critique in zip(self.personas[:MARKDOWN_USERS], self.critiques[:MARKDOWN_USERS], strict=True)
        ]
        if self.failures:
            lines += ["", "Fell back to measured critiques:"] + [f"- {failure}" for failure in self.failures]
        return "\n".join(lines) + "\n"


def _persona_line(persona: Persona) -> str:
    genres = "/".join(persona.top_genres()) or "no genres"
    era = f", around {persona.era}" if persona.era is not None else ""
    return f"user {persona.user_id} ({persona.activity}, {persona.events} films, mostly {genres}{era})"


def simulate(
    prepared: PreparedDataset,
    sequences: UserSequences,
    lists: dict[int, list[int]],
    critic: LLMCritic | None = None,
    aggregator: LLMAggregator | None = None,
    stage: Stage = "valid",
) -> SimulationFeedback:
    """Critique each user's top-10 (``lists``: user idx → item idxs) and assess the candidate.

    Personas use the history before ``stage``, the stage the lists were made for (validation in the
    evolution loop), so the item a list is scored on never shapes its critique.
    """
    facts = ItemFacts.build(prepared, sequences)
    users = sorted(lists)
    personas = build_personas(prepared, sequences, users, stage, facts=facts)
    critiques, failures = critique_users(personas, [facts.shown(lists[user]) for user in users], critic)
    assessment, assessment_failures = assess_critiques(critiques, aggregator)
    signals = feedback_signals(critiques)
    return SimulationFeedback(personas, critiques, assessment, signals, failures + assessment_failures)
