"""Run untrusted candidate code in a child process that can hurt nothing but its work dir.

Isolation, strongest available first (the outcome lists what applied):

- ``netns``: a new network namespace with no interfaces, so no connection leaves the process;
- ``readonly-fs``: a private mount namespace where every mount but the work dir is read-only;
- ``cgroup-pids`` / ``cgroup-memory``: a cgroup capping processes (fork bombs) and memory;
- ``rlimit-as``: an address-space limit; ``session``: the child leads its own process group,
  killed whole on a timeout;
- ``scrubbed-env``: only an allowlist of variables, never a secret (``*KEY*``, ``*TOKEN*``, ...);
- ``audit-hook``: inside the child, Python refuses sockets and writes outside the work dir (the
  fallback where the OS refuses namespaces).

The child applies the isolation itself (:mod:`offline_agent.sandbox_child`) before it runs
``entry.py``, so that sandboxes can start from several threads at once (no ``preexec_fn``);
the parent keeps the clock and the kill. The child reports through ``result.json``.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

CGROUP_ROOT = Path("/sys/fs/cgroup")
ENV_ALLOWED = ("PATH", "LANG", "LC_ALL", "TZ", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_CORETYPE")
SECRET = re.compile(r"KEY|TOKEN|SECRET|PASSWORD|CREDENTIAL|AUTH", re.IGNORECASE)
RESULT_FILE = "result.json"
MAX_RESULT_BYTES = 16 * 2**20

Status = Literal["ok", "timeout", "out_of_memory", "crashed", "failed"]


@dataclass(frozen=True)
class SandboxLimits:
    wall_seconds: float = 900.0
    memory_bytes: int = 8 * 2**30
    max_processes: int = 256


@dataclass(frozen=True)
class SandboxOutcome:
    """What happened: a typed status, a one-line reason, and the child's result when it gave one."""

    status: Status
    reason: str
    returncode: int | None
    seconds: float
    output: dict[str, Any] | None
    stderr_tail: str
    isolation: tuple[str, ...]


def scrubbed_environment(workdir: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    """The child's whole environment: an allowlist, a private HOME and TMPDIR, never a secret."""
    env = {name: os.environ[name] for name in ENV_ALLOWED if name in os.environ}
    env.update({k: v for k, v in (extra or {}).items() if not SECRET.search(k)})
    env.update(HOME=str(workdir), TMPDIR=str(workdir / "tmp"), PYTHONDONTWRITEBYTECODE="1")
    return env


class _Cgroups:
    """Per-run cgroup v1 ``pids`` and ``memory`` groups, when this machine lets us make them."""

    def __init__(self, limits: SandboxLimits) -> None:
        name = f"evorec-{uuid.uuid4().hex[:12]}"
        self.paths: dict[str, Path] = {}
        settings = {"pids": ("pids.max", str(limits.max_processes)),
                    "memory": ("memory.limit_in_bytes", str(limits.memory_bytes))}  # fmt: skip
        for controller, (knob, value) in settings.items():
            path = CGROUP_ROOT / controller / name
            try:
                path.mkdir()
                (path / knob).write_text(value)
                if controller == "memory":
                    with contextlib.suppress(OSError):
                        (path / "memory.memsw.limit_in_bytes").write_text(value)
            except OSError:
                with contextlib.suppress(OSError):
                    path.rmdir()
                continue
            self.paths[controller] = path

    def out_of_memory(self) -> bool:
        path = self.paths.get("memory")
        try:
            return path is not None and int((path / "memory.failcnt").read_text()) > 0
        except OSError:
            return False

    def kill_and_remove(self) -> None:
        for path in self.paths.values():
            for _ in range(50):
                try:
                    pids = [int(p) for p in (path / "cgroup.procs").read_text().split()]
                except OSError:
                    break
                if not pids:
                    break
                for pid in pids:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                time.sleep(0.02)
            with contextlib.suppress(OSError):
                path.rmdir()


def run_sandboxed(
    entry_source: str,
    workdir: Path,
    limits: SandboxLimits | None = None,
    env: dict[str, str] | None = None,
) -> SandboxOutcome:
    """Run ``entry_source`` as ``workdir/entry.py`` in the sandbox and collect its ``result.json``."""
    limits = limits or SandboxLimits()
    workdir = workdir.resolve()
    (workdir / "tmp").mkdir(parents=True, exist_ok=True)
    (workdir / "entry.py").write_text(entry_source)
    applied_path = workdir / ".isolation"
    cgroups = _Cgroups(limits)
    started = time.monotonic()
    command = [
        sys.executable, "-m", "offline_agent.sandbox_child", str(workdir), str(limits.memory_bytes),
        *(str(path) for path in cgroups.paths.values()),
    ]  # fmt: skip
    stderr_path = workdir / "stderr.log"
    try:
        with stderr_path.open("wb") as stderr:
            child = subprocess.Popen(
                command,
                cwd=workdir,
                env=scrubbed_environment(workdir, env),
                stdin=subprocess.DEVNULL,
                stdout=stderr,
                stderr=stderr,
                start_new_session=True,
            )
            try:
                returncode: int | None = child.wait(timeout=limits.wall_seconds)
                timed_out = False
            except subprocess.TimeoutExpired:
                timed_out, returncode = True, None
            with contextlib.suppress(ProcessLookupError):
                os.killpg(child.pid, signal.SIGKILL)
            child.wait()
    finally:
        out_of_memory = cgroups.out_of_memory()
        cgroups.kill_and_remove()
    seconds = time.monotonic() - started
    stderr_tail = stderr_path.read_bytes()[-4000:].decode("utf-8", errors="replace")
    isolation = tuple(applied_path.read_text().split(",")) if applied_path.exists() else ()
    last_line = stderr_tail.strip().splitlines()[-1] if stderr_tail.strip() else ""

    def outcome(status: Status, reason: str, output: dict[str, Any] | None = None) -> SandboxOutcome:
        return SandboxOutcome(status, reason, returncode, round(seconds, 3), output, stderr_tail, isolation)

    if timed_out:
        return outcome("timeout", f"wall-clock limit of {limits.wall_seconds:g} s exceeded; process group killed")
    if out_of_memory or "MemoryError" in stderr_tail or returncode == -signal.SIGKILL:
        return outcome("out_of_memory", f"memory limit of {limits.memory_bytes / 2**30:g} GiB exceeded")
    if returncode != 0:
        return outcome("crashed", last_line or f"exited with code {returncode}")
    result = workdir / RESULT_FILE
    if not result.exists():
        return outcome("failed", f"exited cleanly without writing {RESULT_FILE}")
    if result.stat().st_size > MAX_RESULT_BYTES:
        return outcome("failed", f"{RESULT_FILE} is larger than {MAX_RESULT_BYTES} bytes")
    try:
        output = json.loads(result.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        return outcome("failed", f"{RESULT_FILE} is not valid JSON: {exc}")
    if not isinstance(output, dict):
        return outcome("failed", f"{RESULT_FILE} must hold a JSON object")
    return outcome("ok", "", output)
