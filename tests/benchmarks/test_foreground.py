"""benchmarks/foreground.sh: the command runs in a session of its own, its exit status passes through, and the
other sessions' priorities are what they were once it is done."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from benchmarks.common import autogroup_nice

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "foreground.sh"


def _shown_in_a_session_of_its_own() -> bool:
    """Whether a new session's autogroup shows. Asking this process itself would mislead: the session a
    container's init began is in the kernel's root autogroup, whose file is empty, while every session started
    later (as foreground.sh starts one) gets an autogroup of its own that shows."""
    probe = [sys.executable, "-c", "from benchmarks.common import autogroup_nice; print(autogroup_nice('self'))"]
    shown = subprocess.run(probe, cwd=ROOT, capture_output=True, text=True, check=True, start_new_session=True)
    return shown.stdout.strip() != "None"


SHOWS_AUTOGROUPS = _shown_in_a_session_of_its_own()
MAY_SET_AUTOGROUPS = SHOWS_AUTOGROUPS and os.geteuid() == 0  # the rights to raise its own weight, lower the others'
OUTER = pytest.mark.skipif(
    "EVOREC_FOREGROUND" in os.environ,
    reason="these tests run inside foreground.sh, which settles the same processes as the one under test",
)


def _nice_of(pid: int) -> int:
    nice = autogroup_nice(str(pid))
    assert nice is not None
    return nice


@OUTER
@pytest.mark.skipif(not SHOWS_AUTOGROUPS, reason="the kernel has no autogroups or does not show them")
def test_the_command_gets_the_foreground_and_the_others_get_their_priority_back() -> None:
    other = subprocess.Popen(["sleep", "60"], start_new_session=True)  # another session, as a benchmark's neighbour
    try:
        before = _nice_of(other.pid)
        probe = "import time, pathlib; print(pathlib.Path('/proc/self/autogroup').read_text().split()[-1]); "
        probe += f"print(pathlib.Path('/proc/{other.pid}/autogroup').read_text().split()[-1])"
        done = subprocess.run([str(SCRIPT), sys.executable, "-c", probe], capture_output=True, text=True, check=True)
        own, neighbour = (int(v) for v in done.stdout.split())
        if MAY_SET_AUTOGROUPS:
            assert (own, neighbour) == (-10, 19)
        assert _nice_of(other.pid) == before
    finally:
        other.kill()
        other.wait()


@OUTER
@pytest.mark.skipif(not MAY_SET_AUTOGROUPS, reason="needs the rights to set autogroups")
def test_sessions_started_during_the_run_are_settled_and_given_back(tmp_path: Path) -> None:
    """A sandbox the command starts runs in a session of its own and gets the foreground too; a session someone
    else starts meanwhile gets 19, and its own value back at the end."""
    started_by_us = (
        "import subprocess, sys; subprocess.run([sys.executable, '-c', "
        "\"import time, pathlib; time.sleep(5); print(pathlib.Path('/proc/self/autogroup').read_text().split()[-1])\""
        "], start_new_session=True, check=True)"
    )
    foreground = subprocess.Popen([str(SCRIPT), sys.executable, "-c", started_by_us], stdout=subprocess.PIPE, text=True)
    time.sleep(1)
    neighbour = subprocess.Popen(["sleep", "60"], start_new_session=True)
    try:
        before = _nice_of(neighbour.pid)
        time.sleep(3)
        assert _nice_of(neighbour.pid) == 19
        out, _ = foreground.communicate(timeout=60)
        assert int(out.split()[-1]) == -10
        assert _nice_of(neighbour.pid) == before
    finally:
        neighbour.kill()
        neighbour.wait()


def test_a_second_foreground_benchmark_waits_for_the_first(tmp_path: Path) -> None:
    timed = "import time; print(time.monotonic()); time.sleep(1.5); print(time.monotonic())"
    outside = {k: v for k, v in os.environ.items() if not k.startswith("EVOREC_FOREGROUND")}  # as if run by hand
    runs = [
        subprocess.Popen([str(SCRIPT), sys.executable, "-c", timed], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True, env={**outside, "TMPDIR": str(tmp_path)})
        for _ in range(2)
    ]  # fmt: skip
    outputs = [run.communicate(timeout=60) for run in runs]
    (_, first_end), (second_start, _) = sorted(tuple(float(v) for v in out.split()) for out, _ in outputs)
    assert second_start >= first_end
    assert any("waiting for another foreground benchmark" in err for _, err in outputs)


def test_the_exit_status_passes_through() -> None:
    assert subprocess.run([str(SCRIPT), "sh", "-c", "exit 7"], check=False).returncode == 7


def test_results_record_the_priority_they_were_measured_at() -> None:
    probe = "import json; from benchmarks.common import machine; print(json.dumps(machine()['priority']))"
    done = subprocess.run(
        [str(SCRIPT), "nice", "-n", "3", sys.executable, "-c", probe],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    recorded = json.loads(done.stdout)
    assert recorded["nice"] == min(os.nice(0) + 3, 19)
    if MAY_SET_AUTOGROUPS:
        assert recorded["autogroup_nice"] == -10
    elif not SHOWS_AUTOGROUPS:
        assert recorded["autogroup_nice"] is None


@pytest.mark.parametrize(
    ("shown", "nice"), [("/autogroup-4650 nice 0\n", 0), ("/autogroup-7 nice -10\n", -10), ("", None), ("x y z", None)]
)
def test_an_autogroup_file_the_kernel_leaves_empty_or_odd_reads_as_none(
    shown: str, nice: int | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(Path, "read_text", lambda self, *args, **kwargs: shown)
    assert autogroup_nice("self") == nice
