"""benchmarks/processor_speed.py: a step is charged its CPU time × the speed of the processor it ran on, the speed
is measured once per processor, the ledger outlives an invocation (a killed one's uncharged time included), and a
processor that cannot be measured yet says why."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks.common import cpu
from benchmarks.processor_speed import SPEEDS, CpuMeter, ProcessorSpeeds, UnmeasuredProcessor, processor_name

ELSEWHERE = {"model": "a processor the run began on", "capability": "AVX512"}


class Spender:
    """An arm whose every step costs ``cost`` CPU-seconds by its own count, as a rung evaluation does."""

    def __init__(self, cost: float, spent: float = 0.0) -> None:
        self.cost, self.spent, self.steps = cost, spent, 0

    def cpu_seconds(self) -> float:
        return self.spent

    def step(self) -> None:
        self.spent += self.cost
        self.steps += 1


def speeds_at(path: Path, reference: float | None, measured: float, calls: list[float]) -> ProcessorSpeeds:
    def measure() -> float:
        calls.append(measured)
        return measured

    return ProcessorSpeeds(path / SPEEDS, ELSEWHERE, lambda: reference, measure)


def test_a_step_on_a_slower_processor_is_charged_its_time_times_the_speed_measured_once(tmp_path: Path) -> None:
    calls: list[float] = []
    speeds = speeds_at(tmp_path, reference=100.0, measured=400.0, calls=calls)  # a quarter as fast here
    meter = CpuMeter(Spender(cost=80.0), tmp_path / "run", speeds)
    meter.step()
    meter.step()
    assert meter.spent() == pytest.approx(40.0) and calls == [400.0]

    stored = json.loads((tmp_path / SPEEDS).read_text())
    assert stored["reference"] == {"cpu": ELSEWHERE, "seconds": 100.0}
    assert stored["processors"][processor_name(cpu())]["speed"] == 0.25
    again = speeds_at(tmp_path, reference=100.0, measured=1.0, calls=calls)
    assert again.speed() == 0.25 and calls == [400.0]  # read back, not measured again

    (tmp_path / SPEEDS).write_text("{")  # a process finds its speed once, not at every step
    meter.step()
    assert meter.spent() == pytest.approx(60.0)


def test_on_the_reference_processor_a_step_is_charged_as_measured_without_measuring(tmp_path: Path) -> None:
    def never() -> float:
        raise AssertionError("the reference processor is not measured")

    speeds = ProcessorSpeeds(tmp_path / SPEEDS, cpu(), lambda: None, never)
    meter = CpuMeter(Spender(cost=30.0), tmp_path / "run", speeds)
    meter.step()
    assert meter.spent() == 30.0 and not (tmp_path / SPEEDS).exists()


def test_the_ledger_outlives_its_invocation_and_charges_a_killed_ones_time_at_the_next_step(tmp_path: Path) -> None:
    calls: list[float] = []
    speeds = speeds_at(tmp_path, reference=50.0, measured=100.0, calls=calls)
    arm = Spender(cost=10.0, spent=200.0)  # spent before the run kept a ledger: on the reference processor
    meter = CpuMeter(arm, tmp_path / "run", speeds)
    assert meter.spent() == 200.0 and calls == []
    meter.step()
    assert meter.spent() == pytest.approx(205.0)

    arm.spent += 30.0  # an invocation killed after its evaluation was stored and before its charge was
    resumed = CpuMeter(arm, tmp_path / "run", speeds)
    assert resumed.spent() == pytest.approx(205.0)
    resumed.step()
    assert resumed.spent() == pytest.approx(205.0 + (30.0 + 10.0) * 0.5)


def test_a_processor_the_runs_have_not_yet_given_a_reference_for_says_where_to_go_on(tmp_path: Path) -> None:
    speeds = speeds_at(tmp_path, reference=None, measured=100.0, calls=[])
    meter = CpuMeter(Spender(cost=10.0), tmp_path / "run", speeds)
    with pytest.raises(UnmeasuredProcessor, match="a processor the run began on"):
        meter.step()
