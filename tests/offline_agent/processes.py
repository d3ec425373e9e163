"""Runs killed on cue for tests: watch a live run's evolution database, then SIGKILL the run at the moment chosen."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from offline_agent.program_db import DatabaseConfig, ProgramDatabase


def run_database(run_dir: Path, islands: int = 1) -> ProgramDatabase:
    """The evolution database a run keeps in ``run_dir``."""
    return ProgramDatabase(DatabaseConfig(url=f"sqlite:///{run_dir / 'evolution.db'}", islands=islands))


def kill_when(
    run: subprocess.Popen[bytes] | subprocess.Popen[str],
    run_dir: Path,
    reached: Callable[[ProgramDatabase], bool],
    *,
    islands: int = 1,
    timeout: float,
    failure: str,
) -> None:
    """Poll the run's database until ``reached`` holds, then SIGKILL the run's whole process group (it was started
    in a session of its own) and reap it, so the database is left exactly as a crash at that moment leaves it.
    Fails the test with ``failure`` if the moment does not come within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (run_dir / "evolution.db").exists() and reached(run_database(run_dir, islands)):
            break
        time.sleep(0.3)
    else:
        pytest.fail(failure)
    os.killpg(run.pid, signal.SIGKILL)
    run.wait()
