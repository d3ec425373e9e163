"""Running the diagnosis of a trained candidate: built-in probes, the candidate's own probes, the report.

The candidate's probes (its ``diagnosis.py``) are verified before their numbers count (see
:mod:`offline_agent.diagnosis.references`); a probe that fails, raises or is not a probe is
recorded with its reason and left out. The report is JSON (for the program database and the
rulebook) and Markdown (for prompts and people).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any, cast

import numpy as np

from offline_agent.diagnosis.context import DiagnosisContext, RankingModel, item_years, sample_users
from offline_agent.diagnosis.probes import BUILTIN_PROBES, Measurement, Probe, severity
from offline_agent.diagnosis.references import Verification, verify_probe
from recsys.candidate import Candidate
from recsys.sequences import SPLIT_CODES
from recsys.trainer import Trainer


@dataclass(frozen=True)
class Finding:
    probe: str
    measures: str
    values: dict[str, float]
    signal: float
    severity: str
    interpretation: str
    source: str  # "builtin" or "candidate"


@dataclass
class DiagnosisReport:
    findings: list[Finding]
    verifications: list[Verification] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    lists: dict[int, list[int]] = field(default_factory=dict)
    seconds: float = 0.0

    def signals(self) -> dict[str, float]:
        """The strongest signal per measured property: what the rulebook's preconditions read."""
        out: dict[str, float] = {}
        for finding in self.findings:
            out[finding.measures] = round(max(out.get(finding.measures, 0.0), finding.signal), 4)
        return out

    def without(self, probes: set[str]) -> DiagnosisReport:
        """The report with the findings of the candidate's own ``probes`` left out (the run dropped them as
        redundant: :mod:`offline_agent.probe_review`); built-in probes always count."""
        kept = [f for f in self.findings if f.source == "builtin" or f.probe not in probes]
        return replace(self, findings=kept)

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "lists": {str(u): items for u, items in self.lists.items()}}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> DiagnosisReport:
        return cls(
            [Finding(**f) for f in data["findings"]],
            [Verification(**v) for v in data.get("verifications", [])],
            list(data.get("failures", [])),
            {int(u): list(items) for u, items in data.get("lists", {}).items()},
            float(data.get("seconds", 0.0)),
        )

    def to_markdown(self) -> str:
        lines = ["| probe | severity | signal | finding |", "|---|---|---|---|"]
        ordered = sorted(self.findings, key=lambda f: -f.signal)
        lines += [f"| {f.probe} | {f.severity} | {f.signal:.2f} | {f.interpretation} |" for f in ordered]
        for check in self.verifications:
            verdict = "kept" if check.verified else "dropped"
            lines.append(f"- candidate probe `{check.probe}` ({check.measures}): {verdict}, {check.reason}")
        lines += [f"- probe failure: {failure}" for failure in self.failures]
        return "\n".join(lines)

    def prompt_text(self, limit: int = 5) -> str:
        """The most severe findings, one line each: what the proposer reads."""
        ordered = [f for f in sorted(self.findings, key=lambda f: -f.signal) if f.severity != "none"][:limit]
        return "\n".join(f"- {f.measures} ({f.severity}, {f.signal:.2f}): {f.interpretation}" for f in ordered)


def _finding(probe: Probe, measured: Measurement, source: str) -> Finding:
    values = {k: round(float(v), 6) for k, v in measured.values.items()}
    signal = round(float(np.clip(np.nan_to_num(measured.signal), 0.0, 1.0)), 4)
    return Finding(probe.name, probe.measures, values, signal, severity(signal), measured.interpretation, source)


def candidate_probes(values: Sequence[Any]) -> tuple[list[Probe], list[str]]:
    """The entries of a candidate's ``PROBES`` that are probes, and a reason for each that is not."""
    probes, failures = [], []
    for index, value in enumerate(values):
        if isinstance(value, Probe):
            probes.append(value)
        else:
            failures.append(f"PROBES[{index}] is a {type(value).__name__}, not a probe (decorate it with @probe)")
    return probes, failures


def run_diagnosis(
    ctx: DiagnosisContext, extra_probes: Sequence[Any] = (), list_users: Sequence[int] = ()
) -> DiagnosisReport:
    """Every built-in probe, then each verified candidate probe; plus the top-10 of ``list_users``."""
    started = time.monotonic()
    findings, failures = [], []
    for builtin in BUILTIN_PROBES:
        try:
            findings.append(_finding(builtin, builtin(ctx), "builtin"))
        except Exception as exc:  # a probe must not end the diagnosis; the reason is reported
            failures.append(f"{builtin.name}: {type(exc).__name__}: {exc}")
    probes, rejected = candidate_probes(extra_probes)
    failures += rejected
    verifications = []
    for extra in probes:
        try:
            verification, measured = verify_probe(extra, ctx)
        except Exception as exc:  # candidate code: record and go on
            verification, measured = Verification(extra.name, extra.measures, False, f"raised {exc!r}"), None
        verifications.append(verification)
        if measured is not None:
            findings.append(_finding(extra, measured, "candidate"))
    lists = {}
    if len(list_users):
        users = np.asarray(sorted(set(int(u) for u in list_users)), dtype=np.int64)
        sub = DiagnosisContext(ctx.model, ctx.sequences, ctx.catalog, ctx.years, users, ctx.max_len, ctx.stage)
        lists = {int(u): [int(i) for i in row] for u, row in zip(users, sub.top().tolist(), strict=True)}
    return DiagnosisReport(findings, verifications, failures, lists, round(time.monotonic() - started, 2))


def diagnose_trained(
    trainer: Trainer, candidate: Candidate, sample_size: int, list_users: Sequence[int], seed: int
) -> DiagnosisReport:
    """Diagnose the best epoch's model of a finished :class:`Trainer` with the candidate's own probes too.

    Probes need targets. On a view of the data without the held-out ones (the sandbox) each user's
    last training event stands in for the validation target: the probes are candidate code and see
    what the model sees, never the real held-out items."""
    if trainer.model is None:
        raise ValueError("the trainer has not been fit")
    model = cast(RankingModel, trainer.model.eval())
    sequences = trainer.sequences
    if not (sequences.split == SPLIT_CODES["valid"]).any():  # a view without held-out targets (the sandbox)
        sequences = sequences.last_train_event_as("valid")
    users = sample_users(sequences, "valid", sample_size, seed)
    years = item_years(trainer.prepared)
    ctx = DiagnosisContext(model, sequences, trainer.catalog, years, users, trainer.plan.max_len, seed=seed)
    return run_diagnosis(ctx, list(getattr(candidate.modules["diagnosis"], "PROBES", [])), list_users)
