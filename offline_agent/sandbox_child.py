"""The first code the sandboxed child runs: install the audit-hook guard, then run ``entry.py``.

The guard refuses sockets and any write, rename or deletion outside the work dir. It backs up the
kernel-level isolation of :mod:`offline_agent.sandbox` and stands alone where the OS refuses it.
Python audit hooks cannot be removed once installed.
"""

from __future__ import annotations

import os
import runpy
import sys
from typing import Any

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


def main() -> None:
    workdir = sys.argv[1]
    install_guard(workdir)
    os.chdir(workdir)
    sys.argv = [os.path.join(workdir, "entry.py")]
    runpy.run_path(sys.argv[0], run_name="__main__")


if __name__ == "__main__":
    main()
