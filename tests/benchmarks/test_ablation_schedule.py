"""benchmarks/feedback_ablation.py's scheduler: ``parallel`` steps stay in flight, so one long step (a candidate
trained far up the rungs) does not leave the other cores idle until it ends, and the deadline stops new steps."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from benchmarks.common import cpu
from benchmarks.feedback_ablation import Run, advance
from benchmarks.processor_speed import SPEEDS, CpuMeter, ProcessorSpeeds


class Stepper:
    """An arm whose step costs ``cost`` CPU-seconds, after ``before_step`` returns."""

    def __init__(self, cost: float, before_step=lambda: None) -> None:
        self.cost, self.before_step = cost, before_step
        self.spent, self.steps = 0.0, 0

    def cpu_seconds(self) -> float:
        return self.spent

    def evaluations(self) -> int:
        return self.steps

    def step(self) -> None:
        self.before_step()
        self.spent += self.cost
        self.steps += 1


def run_of(name: str, arm: Stepper, folder: Path, budget: float) -> Run:
    speeds = ProcessorSpeeds(folder / SPEEDS, cpu(), lambda: None, lambda: 0.0)  # the reference processor
    return Run(name, 0, CpuMeter(arm, folder / name, speeds), budget)  # type: ignore[arg-type]


def test_the_other_runs_keep_stepping_while_one_step_is_long(tmp_path: Path) -> None:
    quick_done = threading.Event()
    waited: list[bool] = []
    quick = Stepper(cost=1.0)
    long = Stepper(cost=10.0, before_step=lambda: waited.append(quick_done.wait(timeout=20)))
    quick.before_step = lambda: quick_done.set() if quick.steps == 9 else None  # its tenth and last step
    runs = [run_of("long", long, tmp_path, budget=10.0), run_of("quick", quick, tmp_path, budget=10.0)]

    assert advance(runs, parallel=2, deadline=time.monotonic() + 60)
    assert waited == [True]  # all ten quick steps ran while the long one was in flight
    assert (long.steps, quick.steps) == (1, 10)


def test_after_the_deadline_no_step_starts_and_those_in_flight_end(tmp_path: Path) -> None:
    started = threading.Event()
    slow = Stepper(cost=1.0, before_step=lambda: (started.set(), time.sleep(0.5)))
    other = Stepper(cost=1.0)
    runs = [run_of("slow", slow, tmp_path, budget=100.0), run_of("other", other, tmp_path, budget=100.0)]

    assert not advance(runs, parallel=1, deadline=time.monotonic() + 0.1)
    assert started.is_set() and slow.steps == 1 and other.steps == 0  # least spent first, one at a time
