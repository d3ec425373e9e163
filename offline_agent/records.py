"""What the evolution loop records of a candidate beyond its fitness: the typed ``Program.feedback``.

One flat :class:`Feedback` per candidate, written in three steps: the proposal (rationale, rule,
proposer, edit kind, tuned values) when the candidate is added, then the evaluation (stage, training
history, test metrics, timings) and the directional feedback (diagnosis, simulated users' critiques,
reward alignment) when it is evaluated. The program database stores it as JSON (``model_dump_json``)
and reads it back with ``model_validate_json``; the keys are those earlier versions wrote, so their
databases still load.

Every model keeps keys it does not know (``extra="allow"``): a row written by a newer version survives
being read and rewritten by an older one, and the diagnosis and simulator reports, which evolve on
their own, are kept whole while only what the loop reads is typed. NaN and infinity are written as
JSON constants, as the standard library writes them, so a diverged metric reads back as NaN.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

RECORD = ConfigDict(extra="allow", frozen=True, ser_json_inf_nan="constants")


class Epoch(BaseModel):
    """One line of the trainer's history: an epoch's loss and validation scores, and the time spent so far."""

    model_config = ConfigDict(**RECORD, validate_by_name=True, validate_by_alias=True, serialize_by_alias=True)

    epoch: int
    loss: float
    steps: int
    valid_ndcg10: float = Field(validation_alias="valid_ndcg@10", serialization_alias="valid_ndcg@10")
    valid_hr10: float = Field(validation_alias="valid_hr@10", serialization_alias="valid_hr@10")
    best_epoch: int
    seconds: float = Field(description="training time since the run began, in seconds")


class Assessment(BaseModel):
    """The simulated users' verdict on a candidate, as the loop reads it (the simulator's report has more)."""

    model_config = RECORD

    status: str = Field(description="CRITICAL, NEEDS_IMPROVEMENT or STABLE")
    summary: str = ""


class Critiques(BaseModel):
    """What the simulated users said of a candidate's lists: the simulator's report and its Markdown."""

    model_config = RECORD

    assessment: Assessment
    markdown: str = Field(default="", description="what the proposer reads")
    signals: dict[str, float] = Field(default_factory=dict, description="share of users raising each complaint")
    personas: list[dict[str, Any]] = Field(default_factory=list)
    critiques: list[dict[str, Any]] = Field(default_factory=list, description="one per simulated user")
    failures: list[str] = Field(default_factory=list, description="why the simulator fell back to measured critiques")


class RewardAlignment(BaseModel):
    """How well the candidate's reward agrees with the north-star on simulated A/B logs, or why it was not measured."""

    model_config = RECORD

    reward: str | None = None
    alignment: float | None = Field(default=None, description="the objective: weighted mean of the three below")
    retention: float | None = None
    satisfaction: float | None = None
    arm_agreement: float | None = None
    error: str | None = Field(default=None, description="why there is no alignment")


class ArmGains(BaseModel):
    """What one kind of edit brought in the run when the bandit chose: the ground of its choice."""

    model_config = RECORD

    children: int = Field(description="children of this kind, those still in evaluation included")
    gain: float = Field(description="fitness its evaluated children added over their parents, each floored at 0")
    cpu_seconds: float = Field(description="their evaluation time times the threads each used")
    score: float | None = Field(default=None, description="the UCB1 score, when the choice was made by it")


class EditChoice(BaseModel):
    """Which kind of edit made a child, why, and each kind's gains then."""

    model_config = RECORD

    kind: Literal["structural", "tune"]
    reason: str
    arms: dict[str, ArmGains] = Field(default_factory=dict)


class FeedbackCheck(BaseModel):
    """Whether a flagged signal a child's edit targeted moved the right way in the child
    (:mod:`offline_agent.feedback_checks`)."""

    model_config = RECORD

    signal: str
    parent: float = Field(description="the signal's strength in the parent, at least the flagged threshold")
    child: float | None = Field(default=None, description="its strength in the child; None: not measured")
    fixed: bool | None = Field(default=None, description="it fell by at least the minimum move; None: not measured")


class Feedback(BaseModel):
    """Everything recorded of one candidate besides its code, validation metrics and failure reason.

    Test metrics are kept apart here: never shown to proposers, never ranked on.
    """

    model_config = RECORD

    # the proposal
    rationale: str = Field(default="", description="why the edit was made; empty for the seed")
    rule: str | None = Field(default=None, description="the rulebook rule that wrote the edit")
    proposer: str | None = None
    edit_kind: Literal["structural", "tune"] | None = Field(
        default=None, description="which kind of edit made it; None for a seed or a record older than edit kinds"
    )
    edit_choice: EditChoice | None = Field(default=None, description="the bandit's choice of the edit kind")
    tuned: dict[str, bool | int | float | str | None] | None = Field(
        default=None, description="a tune child's drawn values, by block.CONSTANT"
    )
    # the evaluation
    stage: Literal["static", "smoke", "train"] | None = Field(default=None, description="where the cascade ended")
    history: list[Epoch] = Field(default_factory=list)
    stopped: str | None = Field(default=None, description='why training ended: "budget", "epochs" or "patience"')
    best_epoch: int | None = None
    test_metrics: dict[str, float] | None = None
    isolation: tuple[str, ...] = Field(default=(), description="the sandbox's isolation layers that were in force")
    seconds: float | None = Field(default=None, description="the evaluation's wall time")
    evaluated_at: float | None = Field(default=None, description="UNIX time the evaluation was stored")
    # the directional feedback
    diagnosis: dict[str, Any] | None = Field(default=None, description="the diagnosis report's JSON")
    diagnosis_error: str | None = None
    signals: dict[str, float] = Field(default_factory=dict, description="strongest diagnosis signal per property")
    critiques: Critiques | None = None
    complaints: dict[str, float] = Field(default_factory=dict, description="share of simulated users per complaint")
    probe_checks: list[str] = Field(default_factory=list, description="which new probes were verified, and why")
    feedback_checks: list[FeedbackCheck] = Field(
        default_factory=list, description="the flagged signals the edit targeted, and whether the child fixed them"
    )
    reward_alignment: RewardAlignment | None = None

    def merged(self, **changes: Any) -> Feedback:
        """This record with ``changes`` validated and applied (``model_copy(update=...)`` validates nothing)."""
        unknown = sorted(set(changes) - set(type(self).model_fields))
        if unknown:
            raise TypeError(f"Feedback has no field {', '.join(unknown)}")
        return type(self).model_validate({**self.model_dump(), **changes})

    def headline(self, width: int) -> str:
        """The first line of the rationale, at most ``width`` characters: how lists and tables name the edit."""
        return self.rationale.split("\n", 1)[0][:width]
