"""Co-evolved probes earn their place: a probe the loop added is kept only if it tells something new.

Each candidate's diagnosis verifies the probes of its own ``diagnosis.py`` against a reference pair (a model
pushed towards what the probe claims to measure and one pushed away, :mod:`offline_agent.diagnosis.references`);
a probe that does not separate its pair is dropped there. A probe that does separate it may still say what an
existing probe already says. So, over the run's evaluated candidates, every added probe's signal is set
against every probe that was there before it (the built-in ones, and those added earlier); once it has been
measured on :data:`MIN_CANDIDATES` candidates shared with another probe and its signal is nearly collinear
with that probe's (``|Pearson r| >= COLLINEAR``), it is dropped as redundant. Until then it is on trial and
counts. A dropped probe's findings are left out of every later candidate's signals, prompts and report.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Literal

import numpy as np

from offline_agent.program_db import Program

COLLINEAR = 0.95
MIN_CANDIDATES = 8
Status = Literal["on trial", "kept", "dropped"]


@dataclass(frozen=True)
class ProbeVerdict:
    probe: str
    measures: str
    added_by: str  # the first candidate whose diagnosis ran it (key prefix)
    status: Status
    reason: str
    candidates: int  # evaluated candidates it was measured on

    def to_json(self) -> dict[str, object]:
        return asdict(self)


@dataclass
class _Series:
    measures: str
    first: int  # iteration of the first candidate that measured it
    added_by: str
    signals: dict[str, float]  # candidate key -> signal
    builtin: bool
    rejected: str | None = None  # why its verification failed, when it never passed


def _series(programs: Iterable[Program]) -> dict[str, _Series]:
    found: dict[str, _Series] = {}
    for program in sorted(programs, key=lambda p: p.iteration):
        diagnosis = program.feedback.diagnosis
        if program.status != "evaluated" or not diagnosis:
            continue
        for finding in diagnosis.get("findings", []):
            entry = found.setdefault(
                finding["probe"],
                _Series(finding["measures"], program.iteration, program.key[:12], {}, finding["source"] == "builtin"),
            )
            entry.signals[program.key] = float(finding["signal"])
        for check in diagnosis.get("verifications", []):
            if not check["verified"] and check["probe"] not in found:
                found[check["probe"]] = _Series(
                    check["measures"], program.iteration, program.key[:12], {}, False, check["reason"]
                )
    return found


def _correlation(first: dict[str, float], second: dict[str, float]) -> tuple[float | None, int]:
    """Pearson r over the candidates both were measured on (None where either is constant there), and their count."""
    shared = sorted(set(first) & set(second))
    a, b = np.array([first[k] for k in shared]), np.array([second[k] for k in shared])
    if len(shared) < 2 or a.std() == 0 or b.std() == 0:
        return None, len(shared)
    return float(np.corrcoef(a, b)[0, 1]), len(shared)


def review_probes(programs: Iterable[Program]) -> list[ProbeVerdict]:
    """A verdict for every probe the loop added to a candidate, in the order they appeared."""
    series = _series(programs)
    verdicts = []
    for name, probe in series.items():
        if probe.builtin:
            continue
        measured = len(probe.signals)
        if probe.rejected is not None and not measured:
            verdicts.append(ProbeVerdict(name, probe.measures, probe.added_by, "dropped", probe.rejected, 0))
            continue
        earlier = [(other, entry) for other, entry in series.items()
                   if other != name and entry.signals and (entry.builtin or entry.first < probe.first)]  # fmt: skip
        closest: tuple[float, str, int] | None = None
        for other, entry in earlier:
            r, shared = _correlation(probe.signals, entry.signals)
            if r is not None and shared >= MIN_CANDIDATES and (closest is None or abs(r) > abs(closest[0])):
                closest = (r, other, shared)
        if closest is not None and abs(closest[0]) >= COLLINEAR:
            r, other, shared = closest
            reason = f"redundant: its signal is nearly collinear with {other}'s (r {r:+.3f} over {shared} candidates)"
            verdicts.append(ProbeVerdict(name, probe.measures, probe.added_by, "dropped", reason, measured))
        elif closest is not None:
            r, other, shared = closest
            reason = f"adds information: closest is {other} (r {r:+.3f} over {shared} candidates, below {COLLINEAR})"
            verdicts.append(ProbeVerdict(name, probe.measures, probe.added_by, "kept", reason, measured))
        elif measured >= MIN_CANDIDATES:
            reason = f"over its {measured} candidates its signal varied with no earlier probe's (one was constant)"
            verdicts.append(ProbeVerdict(name, probe.measures, probe.added_by, "kept", reason, measured))
        else:
            reason = f"measured on {measured} candidate(s); judged for redundancy from {MIN_CANDIDATES} on"
            verdicts.append(ProbeVerdict(name, probe.measures, probe.added_by, "on trial", reason, measured))
    return verdicts


def dropped(verdicts: Iterable[ProbeVerdict]) -> set[str]:
    return {verdict.probe for verdict in verdicts if verdict.status == "dropped"}
