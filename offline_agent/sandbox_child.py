"""The first code the sandboxed child runs: install the audit-hook guard, then run ``entry.py``.

The guard refuses sockets and any write, rename or deletion outside the work dir. It backs up the
kernel-level isolation of :mod:`offline_agent.sandbox` and stands alone where the OS refuses it.
Python audit hooks cannot be removed once installed.
"""

from __future__ import annotations

import ctypes
import os
import resource
import runpy
import sys
from typing import Any

CLONE_NEWNS, CLONE_NEWNET = 0x00020000, 0x40000000
MS_RDONLY, MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 1, 32, 4096, 16384, 1 << 18

WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
BLOCKED_NETWORK = {"socket.connect", "socket.bind", "socket.sendto", "socket.sendmsg"}
PATH_EVENTS = {"os.remove", "os.rmdir", "os.rename", "os.link", "os.symlink", "os.truncate", "shutil.rmtree",
               "os.chmod", "os.chown", "os.mkdir"}  # fmt: skip


def install_guard(workdir: str) -> None:
    root = os.path.realpath(workdir)

    def inside(path: Any) -> bool:
        if isinstance(path, int):
            return True  # an already open descriptor: its opening was checked
        resolved = os.path.realpath(os.fsdecode(path))
        return resolved == root or resolved.startswith(root + os.sep)

    def guard(event: str, args: tuple[Any, ...]) -> None:
        if event in BLOCKED_NETWORK:
            raise PermissionError(f"sandbox: network access ({event}) is not allowed")
        if event == "open":
            path, mode, flags = args
            writing = (isinstance(mode, str) and any(c in mode for c in "wax+")) or (
                isinstance(flags, int) and flags & WRITE_FLAGS
            )
            if writing and path is not None and not inside(path):
                raise PermissionError(f"sandbox: writing outside the work dir is not allowed: {path}")
        elif event in PATH_EVENTS:
            paths = [a for a in args[:2] if isinstance(a, str | bytes | os.PathLike)]
            if not all(inside(p) for p in paths):
                raise PermissionError(f"sandbox: {event} outside the work dir is not allowed: {paths}")

    sys.addaudithook(guard)


def isolate(workdir: str, memory_bytes: int, cgroups: list[str]) -> list[str]:
    """Join the run's cgroups, cap the address space, cut the network, make all but ``workdir``
    read-only. Returns what applied; what the OS refuses is left to the audit hook."""
    applied = ["session", "scrubbed-env"]
    for path in cgroups:
        with open(os.path.join(path, "cgroup.procs"), "w") as handle:
            handle.write(str(os.getpid()))
        applied.append("cgroup-" + os.path.basename(os.path.dirname(path)))
    resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
    applied.append("rlimit-as")
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
    if libc.unshare(CLONE_NEWNET) == 0:
        applied.append("netns")
    root = workdir.encode()
    if (
        libc.unshare(CLONE_NEWNS) == 0
        and libc.mount(None, b"/", None, MS_REC | MS_PRIVATE, None) == 0
        and libc.mount(root, root, None, MS_BIND, None) == 0
    ):
        with open("/proc/self/mountinfo") as handle:
            points = sorted({line.split()[4] for line in handle}, key=len)
        for point in points:
            if point != workdir and not point.startswith(("/proc", "/sys", "/dev")):
                libc.mount(None, point.encode(), None, MS_REMOUNT | MS_BIND | MS_RDONLY, None)
        applied.append("readonly-fs")
    return [*applied, "audit-hook"]


def main() -> None:
    workdir, memory_bytes, cgroups = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
    applied = isolate(workdir, memory_bytes, cgroups)
    with open(os.path.join(workdir, ".isolation"), "w") as handle:
        handle.write(",".join(applied))
    install_guard(workdir)
    os.chdir(workdir)
    sys.argv = [os.path.join(workdir, "entry.py")]
    runpy.run_path(sys.argv[0], run_name="__main__")


if __name__ == "__main__":
    main()
