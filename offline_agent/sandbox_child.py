"""The first code the sandboxed child runs: isolate itself, install the audit-hook guard, then run ``entry.py``.

The guard refuses sockets; any write, rename or deletion outside the work dir; any read inside the
hidden folders (outside the work dir) and of other processes' ``/proc`` entries. It backs up the
kernel-level isolation of :mod:`offline_agent.sandbox` and stands alone where the OS refuses it.
Python audit hooks cannot be removed once installed.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import re
import resource
import runpy
import signal
import stat
import sys
from typing import Any

from recsys.channel import CHANNEL_ENV

CLONE_NEWNS, CLONE_NEWNET, CLONE_NEWPID = 0x00020000, 0x40000000, 0x20000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 32, 4096, 16384, 1 << 18
PR_CAPBSET_DROP, PR_SET_NO_NEW_PRIVS, LAST_CAPABILITY = 24, 38, 63
CAPABILITY_VERSION_3 = 0x20080522
READ_ONLY_ALWAYS = ("/sys",)  # mounts under it too: cgroups cannot be joined or left from inside
O_PATH = 0o10000000
PROC_ENTRY = re.compile(r"^/proc/(\d+)(/|$)")
LISTING_EVENTS = {"os.listdir", "os.scandir"}
WRITABLE_DEVICES = {"/dev/null"}  # discards what it is given: torch.compile sends its compiler's output there
SANDBOX_UID_BASE = 1 << 24  # + the child's pid: a uid of its own, owning nothing outside its work dir
NOBODY = 65534  # where the OS maps no such uid (a user namespace with a short map)
SANDBOX_USER = "evorec-sandbox"  # what getpass and the like find in the environment: the uid has no passwd entry

WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
BLOCKED_NETWORK = {"socket.connect", "socket.bind", "socket.sendto", "socket.sendmsg"}
PATH_EVENTS = {"os.remove", "os.rmdir", "os.rename", "os.link", "os.symlink", "os.truncate", "shutil.rmtree",
               "os.chmod", "os.chown", "os.mkdir"}  # fmt: skip


def _within(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def install_guard(workdir: str, hidden: list[str]) -> None:
    root = os.path.realpath(workdir)
    own = str(os.getpid())

    def inside(path: Any) -> bool:
        if isinstance(path, int):
            return True  # an already open descriptor: its opening was checked
        resolved = os.path.realpath(os.fsdecode(path))
        return _within(resolved, root) or resolved in WRITABLE_DEVICES

    def readable(path: Any) -> bool:
        if isinstance(path, int) or path is None:
            return True
        literal = os.path.abspath(os.fsdecode(path))
        entry = PROC_ENTRY.match(literal)
        if entry and entry.group(1) != own:  # another process: its environment, memory, root, open files
            return False
        resolved = os.path.realpath(literal)
        return _within(resolved, root) or not any(_within(resolved, folder) for folder in hidden)

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
            if not readable(path):
                raise PermissionError(f"sandbox: reading {path} is not allowed")
        elif event in LISTING_EVENTS:
            if args and not readable(args[0]):
                raise PermissionError(f"sandbox: listing {args[0]} is not allowed")
        elif event in PATH_EVENTS:
            paths = [a for a in args[:2] if isinstance(a, str | bytes | os.PathLike)]
            if not all(inside(p) for p in paths):
                raise PermissionError(f"sandbox: {event} outside the work dir is not allowed: {paths}")

    sys.addaudithook(guard)


def _hide(libc: Any, workdir: str, hidden: list[str]) -> bool:
    """An empty read-only tmpfs over each hidden folder; the work dir, where it lies inside one, is
    bound back through a descriptor opened before it was covered. False if any mount was refused."""
    outermost = [p for p in sorted(set(hidden), key=len) if not any(_within(p, q) and p != q for q in hidden)]
    for folder in outermost:
        if not os.path.isdir(folder):
            continue
        holds_workdir = _within(workdir, folder)
        fd = os.open(workdir, O_PATH) if holds_workdir else -1
        try:
            if libc.mount(b"tmpfs", folder.encode(), b"tmpfs", 0, b"size=64k,mode=0755") != 0:
                return False
            if holds_workdir:
                os.makedirs(workdir, exist_ok=True)
                if libc.mount(f"/proc/self/fd/{fd}".encode(), workdir.encode(), None, MS_BIND, None) != 0:
                    return False
            libc.mount(None, folder.encode(), None, MS_REMOUNT | MS_RDONLY, None)
        finally:
            if fd >= 0:
                os.close(fd)
    return True


ADDRESS_SPACE_PER_MEMORY = 4
"""Where a memory cgroup caps what is resident (and swapped), the address space is capped at this many times the
memory limit, as a backstop: PyTorch reserves far more than it uses (allocator arenas, thread stacks, compile
workers), and a long training hit an address-space cap equal to the memory limit while resident at half of it.
Without a memory cgroup the address space is the only cap, at the memory limit itself."""


def isolate(workdir: str, setup: dict[str, Any], hidden: list[str]) -> list[str]:
    """Join the run's cgroups, cap the address space, cut the network, make all but ``workdir``
    read-only, hide the ``hidden`` folders. Returns what applied; what the OS refuses is left to the
    audit hook."""
    applied = ["session", "scrubbed-env"]
    uid = SANDBOX_UID_BASE + os.getpid()  # taken before a PID namespace makes every child pid 1
    for path in setup.get("cgroups", []):
        with open(os.path.join(path, "cgroup.procs"), "w") as handle:
            handle.write(str(os.getpid()))
        applied.append("cgroup-" + os.path.basename(os.path.dirname(path)))
    memory, disk, files = int(setup["memory_bytes"]), int(setup["disk_bytes"]), int(setup["max_open_files"])
    capped_by_cgroup = any(os.path.basename(os.path.dirname(path)) == "memory" for path in setup.get("cgroups", []))
    address_space = memory * ADDRESS_SPACE_PER_MEMORY if capped_by_cgroup else memory
    resource.setrlimit(resource.RLIMIT_AS, (address_space, address_space))
    resource.setrlimit(resource.RLIMIT_FSIZE, (disk, disk))  # Python ignores SIGXFSZ: a write past it fails
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    files = files if hard == resource.RLIM_INFINITY else min(files, hard)
    resource.setrlimit(resource.RLIMIT_NOFILE, (files, files))
    applied += ["rlimit-as", "rlimit-fsize", "rlimit-nofile"]
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
            if point != workdir and not point.startswith(("/proc", "/dev")):
                libc.mount(None, point.encode(), None, MS_REMOUNT | MS_BIND | MS_RDONLY, None)
        applied.append("readonly-fs")
        if all(_read_only(point) for point in points if _within(point, "/sys")):
            applied.append("readonly-sys")
        if hidden and _hide(libc, workdir, hidden):
            applied.append("hidden-paths")
        applied += _enter_pid_namespace(libc)
    _drop_bounding_set(libc)
    if _become_unprivileged(libc, workdir, uid, "readonly-fs" in applied, int(setup["max_processes"])):
        applied += ["non-root", "rlimit-nproc"] if uid != NOBODY else ["non-root"]
    if _drop_capabilities(libc):
        applied.append("no-capabilities")
    return [*applied, "audit-hook"]


def _read_only(point: str) -> bool:
    try:
        return bool(os.statvfs(point).f_flag & os.ST_RDONLY)
    except OSError:
        return True  # gone from view


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]


def _drop_bounding_set(libc: Any) -> None:
    """No program run from here on can gain a capability (dropping needs ``CAP_SETPCAP``: before the
    uid changes; the capabilities held now stay until then)."""
    for capability in range(LAST_CAPABILITY + 1):
        libc.prctl(PR_CAPBSET_DROP, capability, 0, 0, 0)  # unknown numbers fail harmlessly


def _drop_capabilities(libc: Any) -> bool:
    """Give up every capability for good and any way to gain one: whoever runs on can no longer
    mount, unshare, change cgroups, trace or signal outside its own files' rights."""
    header, data = _CapHeader(CAPABILITY_VERSION_3, 0), (_CapData * 2)()
    if libc.capset(ctypes.byref(header), data) != 0:
        return False
    libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
    with open("/proc/self/status") as handle:
        status = dict(line.split(":", 1) for line in handle if ":" in line)
    return all(int(status.get(name, "1").strip(), 16) == 0 for name in ("CapEff", "CapPrm", "CapBnd"))


def _needed_paths(workdir: str) -> list[str]:
    """What the unprivileged child must still reach: the interpreter and its libraries, this
    project's code, the import path and the work dir (outermost folders only)."""
    project = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    interpreter = os.path.dirname(os.path.realpath(sys.executable))
    paths = {sys.prefix, sys.base_prefix, sys.exec_prefix, interpreter, project, workdir, *sys.path}
    found = sorted({os.path.realpath(p) for p in paths if p and os.path.isdir(p)}, key=len)
    return [p for p in found if not any(_within(p, q) and p != q for q in found)]


def _closed_ancestors(path: str) -> list[str]:
    """The folders above ``path`` that other users may not pass through (no ``o+x``)."""
    closed, current = [], "/"
    for part in path.strip("/").split("/")[:-1]:
        current = os.path.join(current, part)
        if not os.stat(current).st_mode & stat.S_IXOTH:
            closed.append(current)
    return closed


def _open_the_way(libc: Any, needed: list[str], workdir: str) -> bool:
    """In this mount namespace, cover each closed folder above a needed path (``/root`` holding the
    interpreter, a private temp folder holding the work dir) with an empty read-only tmpfs that
    others may pass, and bind the needed paths back: read-only, but for the work dir. Whatever else
    the closed folder held stays out of sight. False if a mount was refused."""
    covered: set[str] = set()
    os.umask(0o022)  # the folders made for the binds: passable by others
    while closed := sorted({a for p in needed for a in _closed_ancestors(p)}, key=len):
        cover = closed[0]
        if cover in covered:
            return False  # covered, yet still closed: the mount did not take
        covered.add(cover)
        inside = [p for p in needed if _within(p, cover)]
        fds = {p: os.open(p, O_PATH) for p in inside}  # opened before the cover hides them
        try:
            if libc.mount(b"tmpfs", cover.encode(), b"tmpfs", MS_NOSUID | MS_NODEV, b"size=64k,mode=0755") != 0:
                return False
            for path in inside:
                os.makedirs(path, exist_ok=True)
                if libc.mount(f"/proc/self/fd/{fds[path]}".encode(), path.encode(), None, MS_BIND | MS_REC, None):
                    return False
                if path != workdir:
                    libc.mount(None, path.encode(), None, MS_REMOUNT | MS_BIND | MS_RDONLY, None)
            libc.mount(None, cover.encode(), None, MS_REMOUNT | MS_RDONLY, None)
        finally:
            for fd in fds.values():
                os.close(fd)
    return True


def _become_unprivileged(libc: Any, workdir: str, uid: int, own_mounts: bool, max_processes: int) -> bool:
    """Run on as ``uid`` (no passwd entry, no groups), owner of the work dir and of nothing else, with
    at most ``max_processes`` processes and threads of its own; ``nobody`` where the OS maps no such
    uid. Only root can do this, and only where the interpreter stays reachable (``own_mounts``: in a
    private mount namespace a closed ``/root`` can be opened up). False where not done."""
    needed = _needed_paths(workdir)
    if os.geteuid() != 0 or any(not os.stat(p).st_mode & stat.S_IXOTH for p in needed if p != workdir):
        return False
    if any(_closed_ancestors(p) for p in needed) and not (own_mounts and _open_the_way(libc, needed, workdir)):
        return False
    for candidate in (uid, NOBODY):
        try:
            os.lchown(workdir, candidate, candidate)  # EINVAL where the uid is not mapped here
        except OSError:
            continue
        for root, folders, files in os.walk(workdir):
            for name in folders + files:
                os.lchown(os.path.join(root, name), candidate, candidate)
        if candidate != NOBODY:  # nobody's count is shared with other programs on the machine
            resource.setrlimit(resource.RLIMIT_NPROC, (max_processes, max_processes))
        os.setgroups([])
        os.setresgid(candidate, candidate, candidate)
        os.setresuid(candidate, candidate, candidate)
        os.environ.update(USER=SANDBOX_USER, LOGNAME=SANDBOX_USER)
        return True
    return False


def _enter_pid_namespace(libc: Any) -> list[str]:
    """Run on as PID 1 of a new PID namespace with its own ``/proc``: no other process (the
    evaluator's environment, memory, root or open files) is visible, and when PID 1 ends the kernel
    ends everything left in the namespace. This process stays outside, waits and mirrors the exit."""
    if libc.unshare(CLONE_NEWPID) != 0:
        return []
    child = os.fork()
    if child == 0:
        fresh = libc.mount(b"proc", b"/proc", b"proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, None) == 0
        return ["pidns", "private-proc"] if fresh else ["pidns"]
    for fd in os.environ.get(CHANNEL_ENV, "").split(","):  # the pipe ends are the namespace's alone
        if fd.isdigit():
            with contextlib.suppress(OSError):
                os.close(int(fd))
    _, status = os.waitpid(child, 0)
    if os.WIFSIGNALED(status):
        number = os.WTERMSIG(status)
        if number != signal.SIGKILL:  # its handler cannot be set (the memory cgroup's OOM killer sends it)
            signal.signal(number, signal.SIG_DFL)
        os.kill(os.getpid(), number)
    os._exit(os.waitstatus_to_exitcode(status))


def main() -> None:
    workdir, setup = sys.argv[1], json.loads(sys.argv[2])
    hidden = [str(path) for path in setup.get("hidden", [])]
    applied = isolate(workdir, setup, hidden)
    with open(os.path.join(workdir, ".isolation"), "w") as handle:
        handle.write(",".join(applied))
    install_guard(workdir, hidden)
    os.chdir(workdir)
    sys.argv = [os.path.join(workdir, "entry.py")]
    runpy.run_path(sys.argv[0], run_name="__main__")


if __name__ == "__main__":
    main()
