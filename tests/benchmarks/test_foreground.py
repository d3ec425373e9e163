"""benchmarks/foreground.sh: the command runs in a session of its own, its exit status passes through, and the
other sessions' priorities are what they were once it is done."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.common import machine

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "foreground.sh"
AUTOGROUP = Path("/proc/self/autogroup")

pytestmark = pytest.mark.skipif(not AUTOGROUP.exists(), reason="the kernel has no autogroups")


def _nice_of(pid: int) -> int:
    return int(Path(f"/proc/{pid}/autogroup").read_text().split()[-1])


def test_the_command_gets_the_foreground_and_the_others_get_their_priority_back() -> None:
    other = subprocess.Popen(["sleep", "60"], start_new_session=True)  # another session, as a benchmark's neighbour
    try:
        before = _nice_of(other.pid)
        probe = "import time, pathlib; print(pathlib.Path('/proc/self/autogroup').read_text().split()[-1]); "
        probe += f"print(pathlib.Path('/proc/{other.pid}/autogroup').read_text().split()[-1])"
        done = subprocess.run([str(SCRIPT), sys.executable, "-c", probe], capture_output=True, text=True, check=True)
        own, neighbour = (int(v) for v in done.stdout.split())
        if os.geteuid() == 0:  # the rights to raise its own weight and lower the others'
            assert (own, neighbour) == (-10, 19)
        assert _nice_of(other.pid) == before
    finally:
        other.kill()
        other.wait()


def test_the_exit_status_passes_through() -> None:
    assert subprocess.run([str(SCRIPT), "sh", "-c", "exit 7"], check=False).returncode == 7


def test_results_record_the_priority_they_were_measured_at() -> None:
    priority = machine()["priority"]
    assert priority["nice"] == os.nice(0)
    assert priority["autogroup_nice"] == int(AUTOGROUP.read_text().split()[-1])
