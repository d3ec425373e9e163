"""benchmarks/invocations.py: an invocation killed before it could write its result still counts, with the
seconds it ran until its last heartbeat; a result's earlier counts are carried once; other settings count afresh."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.common import cpu
from benchmarks.invocations import InvocationLog

ROOT = Path(__file__).resolve().parents[2]


def test_an_invocation_killed_before_its_write_is_counted_with_the_seconds_it_ran(tmp_path: Path) -> None:
    log_path = tmp_path / "invocations.jsonl"
    script = (
        "import time, pathlib; from benchmarks.invocations import InvocationLog\n"
        f"with InvocationLog(pathlib.Path({str(log_path)!r}), 'run', every=0.05):\n"
        "    print('started', flush=True); time.sleep(60)\n"
    )
    child = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None and child.stdout.readline().strip() == "started"
    time.sleep(0.6)
    os.kill(child.pid, signal.SIGKILL)
    child.wait()

    with InvocationLog(log_path, "run") as log:
        totals = log.totals()
    assert totals["sessions"] == 2
    assert totals["killed_sessions"] == 1
    assert 0.4 <= totals["seconds"] < 10


def test_the_counts_of_a_result_written_before_the_log_are_carried_once(tmp_path: Path) -> None:
    log_path = tmp_path / "invocations.jsonl"
    carried = {"sessions": 3, "seconds": 100.0}
    for _ in range(2):
        with InvocationLog(log_path, "run", carried) as log:
            totals = log.totals()
    assert totals["sessions"] == 5
    assert 100.0 <= totals["seconds"] < 101.0
    assert totals["killed_sessions"] == 0
    lines = [json.loads(line) for line in log_path.read_text().splitlines()]
    assert "cpu" not in lines[0]  # the carried counts ran on a machine nobody recorded
    assert lines[1]["cpu"] == lines[2]["cpu"] == cpu() and cpu()["model"]  # each invocation names its processor
    assert cpu()["capability"] in ("DEFAULT", "AVX2", "AVX512", "Z VECTOR", "VSX", "SVE256")


def test_a_run_with_other_settings_counts_afresh(tmp_path: Path) -> None:
    log_path = tmp_path / "invocations.jsonl"
    with InvocationLog(log_path, {"budget": 1}, {"sessions": 4, "seconds": 50.0}):
        pass
    with InvocationLog(log_path, {"budget": 2}) as log:
        assert log.totals()["sessions"] == 1
