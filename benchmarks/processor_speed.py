"""Equal CPU time on unequal processors: each step of an arm charged in the reference processor's CPU-seconds.

A search benchmark holds its arms to equal CPU-seconds, and a long one resumes on whatever machine a session gets.
A CPU-second of one processor buys less training than one of another (the race's final trained an ML-1M epoch in
about 80 s in one session and in 356-382 s on the AVX2-only EPYC of the next), so charged as measured, the steps a
run takes on a slower machine buy a fraction of the training, and arms that spent different shares of their budget
there are no longer held to equal compute. Each step is therefore charged its CPU time × the **speed** of the
processor it ran on: reference CPU-seconds per CPU-second here, the reference being the processor the run's first
invocation ran on.

A speed is measured once per processor kind (model and vector instructions, :func:`benchmarks.common.cpu`) on the
work being charged: the seed's first rung evaluation, run again here in a scratch folder and charged to no arm,
against what that evaluation cost the runs on the reference processor (their first evaluation, in their
databases). ``processor_speeds.json`` in the run's state folder keeps both, and each arm's ``charged.json`` its
running total.
"""

from __future__ import annotations

import json
import tempfile
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar

from benchmarks.common import cpu, write_json_atomically

SPEEDS = "processor_speeds.json"
LEDGER = "charged.json"


class Metered(Protocol):
    """What a meter needs of an arm: a step, and the CPU time the arm counts it spent."""

    def cpu_seconds(self) -> float: ...

    def step(self) -> None: ...


M = TypeVar("M", bound=Metered)


class UnmeasuredProcessor(RuntimeError):
    """This processor's speed cannot be measured yet: the runs have not done the measured work on the reference."""


def processor_name(found: dict[str, Any]) -> str:
    return f"{found.get('model') or 'unknown processor'} ({found.get('capability') or 'unknown capability'})"


class ProcessorSpeeds:
    """Example::

    speeds = ProcessorSpeeds(state / SPEEDS, first_cpu, reference_seconds=..., measure=...)
    speeds.speed()  # 1.0 on the reference processor; elsewhere measured the first time, then read back

    ``reference_cpu`` is the processor the run's first invocation ran on (None where that was not recorded: then
    every processor is measured, the reference's own too); ``reference_seconds`` gives what the measured work cost
    there (None until the runs did it); ``measure`` does that work here and returns its CPU-seconds.
    """

    def __init__(
        self,
        path: Path,
        reference_cpu: dict[str, Any] | None,
        reference_seconds: Callable[[], float | None],
        measure: Callable[[], float],
    ) -> None:
        self.path, self.reference_cpu = path, reference_cpu
        self.reference_seconds, self.measure = reference_seconds, measure
        self._lock = threading.Lock()
        self._speed: float | None = None

    def speed(self) -> float:
        """This processor's speed; found once, as the processor cannot change under a running process."""
        with self._lock:  # runs stepped side by side ask at once; the work is measured once
            if self._speed is None:
                self._speed = self._find()
            return self._speed

    def _find(self) -> float:
        here = cpu()
        if self.reference_cpu is not None and here == self.reference_cpu:
            return 1.0
        known = self.known()
        name = processor_name(here)
        if name not in known["processors"]:
            reference = self.reference_seconds()
            if reference is None:
                raise UnmeasuredProcessor(
                    f"the runs have not yet done on their reference processor "
                    f"({processor_name(self.reference_cpu or {})}) the work that measures the speed of "
                    f"{name}: go on there until every run has its first evaluation"
                )
            seconds = self.measure()
            known["reference"] = {"cpu": self.reference_cpu, "seconds": round(reference, 2)}
            known["processors"][name] = {
                "cpu": here, "seconds": round(seconds, 2), "speed": round(reference / seconds, 4),
                "measured": datetime.now(UTC).isoformat(timespec="seconds"),
            }  # fmt: skip
            write_json_atomically(self.path, known)
        return float(known["processors"][name]["speed"])

    def known(self) -> dict[str, Any]:
        """What the file holds: the reference's cost of the measured work and each processor measured."""
        if not self.path.exists():
            return {"reference": None, "processors": {}}
        return dict(json.loads(self.path.read_text()))


class CpuMeter(Generic[M]):
    """An arm's CPU time in reference CPU-seconds, kept in ``folder/charged.json`` across invocations.

    ``step()`` steps the arm and charges what its CPU time grew by × this processor's speed. The arm's own count
    (``raw``) is kept beside the charge, so time a killed invocation spent after its last charge is charged at the
    next step; a run that kept no ledger before counts its past time as spent on the reference processor."""

    def __init__(self, arm: M, folder: Path, speeds: ProcessorSpeeds) -> None:
        self.arm, self.speeds, self.path = arm, speeds, folder / LEDGER
        if self.path.exists():
            ledger = json.loads(self.path.read_text())
            self.raw, self.charged = float(ledger["raw"]), float(ledger["charged"])
        else:
            self.raw = self.charged = arm.cpu_seconds()
            self._save()

    def spent(self) -> float:
        """Reference CPU-seconds charged so far."""
        return self.charged

    def step(self) -> None:
        self.arm.step()
        raw = self.arm.cpu_seconds()
        if raw > self.raw:
            self.charged += (raw - self.raw) * self.speeds.speed()
        self.raw = raw
        self._save()

    def _save(self) -> None:
        write_json_atomically(self.path, {"charged": self.charged, "raw": self.raw})


def first_step_here(make: Callable[[Path], Metered], scratch_in: Path) -> float:
    """CPU-seconds of a fresh arm's first step on this processor (``make`` builds it in a scratch folder under
    ``scratch_in``, removed after, so that nothing of it reaches the runs)."""
    with tempfile.TemporaryDirectory(dir=scratch_in, prefix="speed-") as scratch:
        arm = make(Path(scratch))
        arm.step()
        return arm.cpu_seconds()
