"""Run untrusted candidate code in a child process that can hurt nothing but its work dir.

Isolation, strongest available first (the outcome lists what applied):

- ``netns``: a new network namespace with no interfaces, so no connection leaves the process;
- ``readonly-fs``: a private mount namespace where every mount but the work dir is read-only;
- ``cgroup-pids`` / ``cgroup-memory``: a cgroup capping processes (fork bombs) and memory;
- ``rlimit-as``: an address-space limit; ``session``: the child leads its own process group,
  killed whole on a timeout;
- ``non-root``: the child runs as a uid of its own (``nobody`` where the OS maps none), owner of its
  work dir only, with ``rlimit-nproc`` capping that uid's processes; a closed ``/root`` holding the
  interpreter is covered and only the interpreter bound back;
- ``no-capabilities``: every capability dropped, the bounding set too, and ``no_new_privs``;
- ``scrubbed-env``: only an allowlist of variables, never a secret (``*KEY*``, ``*TOKEN*``, ...);
- ``hidden-paths``: in the child's mount namespace, an empty read-only tmpfs over each folder it
  must not read (the prepared data with its held-out targets, other candidates' work dirs, the
  run's database), the work dir bound back where it lies inside one;
- ``audit-hook``: inside the child, Python refuses sockets, writes outside the work dir, reads of
  the hidden folders and of other processes' ``/proc`` entries (the fallback where the OS refuses
  namespaces).

With a ``service``, the child gets the end of a pipe pair (fds named in ``EVOREC_JUDGE_FDS``) and the
parent answers its requests from a thread while it runs: the evaluator's judge of held-out data.

The child applies the isolation itself (:mod:`offline_agent.sandbox_child`) before it runs
``entry.py``, so that sandboxes can start from several threads at once (no ``preexec_fn``);
the parent keeps the clock and the kill. The child reports through ``result.json``.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from recsys.channel import CHANNEL_ENV, serve
from recsys.redaction import SECRET_NAME

CGROUP_ROOT = Path("/sys/fs/cgroup")
ENV_ALLOWED = ("PATH", "LANG", "LC_ALL", "TZ", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_CORETYPE")

RESULT_FILE = "result.json"
MAX_RESULT_BYTES = 16 * 2**20

Status = Literal["ok", "timeout", "out_of_memory", "out_of_disk", "crashed", "failed"]
WATCH_SECONDS = 0.25


@dataclass(frozen=True)
class SandboxLimits:
    wall_seconds: float = 900.0
    memory_bytes: int = 8 * 2**30
    max_processes: int = 256
    disk_bytes: int = 4 * 2**30  # the work dir's size, and any one file's (RLIMIT_FSIZE)
    max_files: int = 100_000  # files in the work dir
    max_open_files: int = 4096  # RLIMIT_NOFILE


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
    service_error: str | None = None  # why the service stopped answering early (a malformed request)


def scrubbed_environment(workdir: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    """The child's whole environment: an allowlist, a private HOME and TMPDIR, never a secret."""
    env = {name: os.environ[name] for name in ENV_ALLOWED if name in os.environ}
    env.update({k: v for k, v in (extra or {}).items() if not SECRET_NAME.search(k)})
    env.update(HOME=str(workdir), TMPDIR=str(workdir / "tmp"), PYTHONDONTWRITEBYTECODE="1")
    return env


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep_stale_cgroups() -> list[Path]:
    """Remove the cgroups of sandboxes whose evaluating process died (a crash, ``kill -9``) before it
    could; their processes are killed first. Returns what was removed."""
    removed = []
    for path in CGROUP_ROOT.glob("*/evorec-*"):
        parts = path.name.split("-")
        owner = int(parts[1]) if len(parts) == 3 and parts[1].isdigit() else None  # evorec-<pid>-<id>
        if owner is not None and _alive(owner):
            continue
        if owner is not None:  # a cgroup of another naming may belong to a live evaluation: only removed if empty
            _kill_members(path)
        with contextlib.suppress(OSError):
            path.rmdir()
            removed.append(path)
    return removed


def _kill_members(path: Path) -> None:
    for _ in range(50):
        try:
            pids = [int(p) for p in (path / "cgroup.procs").read_text().split()]
        except OSError:
            return
        if not pids:
            return
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.02)


OUT_OF_MEMORY_SIGNS = ("MemoryError", "DefaultCPUAllocator: can't allocate memory")
"""What Python and PyTorch print when an allocation is refused: the run ran out of memory, it did not crash."""


class _Cgroups:
    """Per-run cgroup v1 ``pids`` and ``memory`` groups, when this machine lets us make them; named
    after the evaluating process, so that a later run can tell and sweep those it left behind."""

    def __init__(self, limits: SandboxLimits) -> None:
        name = f"evorec-{os.getpid()}-{uuid.uuid4().hex[:12]}"
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
            _kill_members(path)
            with contextlib.suppress(OSError):
                path.rmdir()


def _disk_use(folder: Path, max_files: int) -> tuple[int, int]:
    """Bytes allocated and files under ``folder`` (counting stops past ``max_files``)."""
    used, files = 0, 0
    for root, _, names in os.walk(folder):
        for name in names:
            with contextlib.suppress(OSError):
                used += os.lstat(os.path.join(root, name)).st_blocks * 512
            files += 1
            if files > max_files:
                return used, files
    return used, files


def _wait(child: subprocess.Popen[bytes], workdir: Path, limits: SandboxLimits) -> tuple[int | None, str | None]:
    """Wait for the child within the wall clock, watching the work dir's size and file count.
    Returns the exit code (None when stopped) and why it was stopped."""
    deadline = time.monotonic() + limits.wall_seconds
    while True:
        try:
            return child.wait(timeout=max(0.0, min(WATCH_SECONDS, deadline - time.monotonic()))), None
        except subprocess.TimeoutExpired:
            pass
        if time.monotonic() >= deadline:
            return None, "timeout"
        used, files = _disk_use(workdir, limits.max_files)
        if used > limits.disk_bytes or files > limits.max_files:
            return None, "out_of_disk"


class _Channel:
    """The pipe pair of a service, answered from a thread of the parent while the child runs."""

    def __init__(self, service: Callable[[dict[str, Any]], dict[str, Any]]) -> None:
        self.requests, child_writes = os.pipe()
        child_reads, self.replies = os.pipe()
        self.child_fds: tuple[int, ...] = (child_reads, child_writes)
        self.error: str | None = None
        self._service = service
        self._open = True
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def _serve(self) -> None:
        self.error = serve(self.requests, self.replies, self._answer)

    def _answer(self, message: dict[str, Any]) -> dict[str, Any]:
        # a process that escaped the kill may still hold the pipe: after close() nothing reaches the service
        return self._service(message) if self._open else {"error": "the evaluation has ended"}

    def started(self) -> None:
        """The child holds its ends now: close ours of them, so its exit ends the stream."""
        for fd in self.child_fds:
            os.close(fd)
        self.child_fds = ()
        self._thread.start()

    def close(self) -> None:
        self._open = False
        for fd in self.child_fds:  # the child never started
            os.close(fd)
        if self._thread.is_alive():
            self._thread.join(timeout=10)
        with contextlib.suppress(OSError):
            os.close(self.replies)
        if not self._thread.is_alive():
            os.close(self.requests)


def run_sandboxed(
    entry_source: str,
    workdir: Path,
    limits: SandboxLimits | None = None,
    env: dict[str, str] | None = None,
    service: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
    hidden: Sequence[Path] = (),
) -> SandboxOutcome:
    """Run ``entry_source`` as ``workdir/entry.py`` in the sandbox and collect its ``result.json``.

    ``service`` answers the child's requests (see the module's docstring); ``hidden`` are folders the
    child must not read (the work dir may lie inside one)."""
    limits = limits or SandboxLimits()
    workdir = workdir.resolve()
    (workdir / "tmp").mkdir(parents=True, exist_ok=True)
    (workdir / "entry.py").write_text(entry_source)
    applied_path = workdir / ".isolation"
    sweep_stale_cgroups()
    cgroups = _Cgroups(limits)
    channel = _Channel(service) if service is not None else None
    child_env = scrubbed_environment(workdir, env)
    if channel is not None:
        child_env[CHANNEL_ENV] = ",".join(str(fd) for fd in channel.child_fds)
    setup = {
        "memory_bytes": limits.memory_bytes,
        "disk_bytes": limits.disk_bytes,
        "max_open_files": limits.max_open_files,
        "max_processes": limits.max_processes,
        "cgroups": [str(path) for path in cgroups.paths.values()],
        "hidden": [str(Path(path).resolve()) for path in hidden],
    }
    command = [sys.executable, "-m", "offline_agent.sandbox_child", str(workdir), json.dumps(setup)]
    started = time.monotonic()
    stderr_path = workdir / "stderr.log"
    try:
        with stderr_path.open("wb") as stderr:
            child = subprocess.Popen(
                command,
                cwd=workdir,
                env=child_env,
                stdin=subprocess.DEVNULL,
                stdout=stderr,
                stderr=stderr,
                start_new_session=True,
                pass_fds=channel.child_fds if channel is not None else (),
            )
            if channel is not None:
                channel.started()
            returncode, stopped = _wait(child, workdir, limits)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(child.pid, signal.SIGKILL)
            child.wait()
    finally:
        out_of_memory = cgroups.out_of_memory()
        cgroups.kill_and_remove()
        if channel is not None:
            channel.close()
    seconds = time.monotonic() - started
    stderr_tail = stderr_path.read_bytes()[-4000:].decode("utf-8", errors="replace")
    isolation = tuple(applied_path.read_text().split(",")) if applied_path.exists() else ()
    last_line = stderr_tail.strip().splitlines()[-1] if stderr_tail.strip() else ""

    service_error = channel.error if channel is not None else None

    def outcome(status: Status, reason: str, output: dict[str, Any] | None = None) -> SandboxOutcome:
        return SandboxOutcome(
            status, reason, returncode, round(seconds, 3), output, stderr_tail, isolation, service_error
        )

    if stopped == "timeout":
        return outcome("timeout", f"wall-clock limit of {limits.wall_seconds:g} s exceeded; process group killed")
    if stopped == "out_of_disk" or "File too large" in stderr_tail:
        return outcome(
            "out_of_disk", f"disk quota of {limits.disk_bytes / 2**30:g} GiB or {limits.max_files} files exceeded"
        )
    if out_of_memory or any(sign in stderr_tail for sign in OUT_OF_MEMORY_SIGNS) or returncode == -signal.SIGKILL:
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
