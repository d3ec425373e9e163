"""Hostile candidates: each is contained, recorded with its reason, and the caller goes on."""

from __future__ import annotations

import json
import os
import pathlib
import time

import pytest

from offline_agent.sandbox import (
    CGROUP_ROOT,
    SandboxLimits,
    run_sandboxed,
    scrubbed_environment,
    sweep_stale_cgroups,
)

pytestmark = pytest.mark.integration
FAST = SandboxLimits(wall_seconds=20, memory_bytes=2 * 2**30, max_processes=64)


def _running(pid: int) -> bool:
    """Alive and not a zombie (a killed orphan may wait for this container's init to reap it)."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def _pids_running(marker: bytes) -> list[int]:
    """Host pids of processes whose command line holds ``marker`` (a sandbox's own pids are its
    namespace's, so its processes are found by what they run)."""
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                cmdline = pathlib.Path(f"/proc/{entry}/cmdline").read_bytes()
            except OSError:
                continue
            if marker in cmdline and b"time.sleep(600)" in cmdline:
                pids.append(int(entry))
    return pids


def _run(tmp_path, source, limits=FAST, **kw):
    return run_sandboxed(source, tmp_path / "work", limits, **kw)


def _write_result(expression: str) -> str:
    return f"import json\nresult = {expression}\nopen('result.json', 'w').write(json.dumps(result))\n"


def test_a_well_behaved_entry_reports_its_result_and_the_isolation_used(tmp_path):
    outcome = _run(tmp_path, _write_result("{'ndcg@10': 0.12}"))
    assert outcome.status == "ok" and outcome.output == {"ndcg@10": 0.12}
    assert {"session", "scrubbed-env", "rlimit-as", "audit-hook"} <= set(outcome.isolation)


def test_an_infinite_loop_is_stopped_and_its_whole_process_group_killed(tmp_path):
    source = (
        "import subprocess, sys\n"
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)  # grandchild-of-loop'])\n"
        "open('grandchild.pid', 'w').write(str(child.pid))\n"
        "while True:\n    pass\n"
    )
    started = time.monotonic()
    outcome = _run(tmp_path, source, SandboxLimits(wall_seconds=6, memory_bytes=2 * 2**30))
    assert outcome.status == "timeout" and "wall-clock limit of 6 s" in outcome.reason
    assert time.monotonic() - started < 20
    assert (tmp_path / "work" / "grandchild.pid").exists()  # it was started (its pid is the namespace's own)
    time.sleep(0.2)
    assert not any(_running(pid) for pid in _pids_running(b"grandchild-of-loop"))


def test_a_memory_bomb_is_stopped_as_out_of_memory(tmp_path):
    outcome = _run(tmp_path, "blocks = []\nwhile True:\n    blocks.append(bytearray(100 * 2**20))\n")
    assert outcome.status == "out_of_memory" and "2 GiB" in outcome.reason


def test_address_space_reserved_beyond_the_memory_limit_is_no_failure_where_a_cgroup_caps_what_is_resident(tmp_path):
    """PyTorch reserves far more address space than it uses; what counts is resident memory (the memory bomb above
    is still stopped). Without a memory cgroup the address space is the only cap and stays at the limit."""
    reserve = _write_result("{'reserved': len(__import__('mmap').mmap(-1, 3 * 2**30))}")  # 3 GiB, not touched
    outcome = _run(tmp_path, reserve)
    if "cgroup-memory" in outcome.isolation:
        assert outcome.status == "ok" and outcome.output == {"reserved": 3 * 2**30}, outcome.reason
    else:
        assert outcome.status != "ok"


def test_a_refused_torch_allocation_is_out_of_memory_not_a_crash(tmp_path):
    source = 'raise RuntimeError("DefaultCPUAllocator: can\'t allocate memory: you tried to allocate 27983872 bytes")'
    outcome = _run(tmp_path, source)
    assert outcome.status == "out_of_memory" and "2 GiB" in outcome.reason


def test_a_fork_bomb_is_contained(tmp_path):
    source = "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n"
    outcome = _run(tmp_path, source, SandboxLimits(wall_seconds=4, memory_bytes=2 * 2**30, max_processes=32))
    assert outcome.status in ("timeout", "crashed")
    assert outcome.seconds < 15


def test_secrets_never_reach_the_child(tmp_path, monkeypatch):
    monkeypatch.setenv("GEMINI_API_KEY", "sk-do-not-leak")
    monkeypatch.setenv("MY_SERVICE_TOKEN", "t0ken")
    outcome = _run(tmp_path, _write_result("dict(__import__('os').environ)"), env={"OPENAI_API_KEY": "x", "OK": "1"})
    assert outcome.status == "ok"
    assert not any("KEY" in k or "TOKEN" in k for k in outcome.output)
    assert "sk-do-not-leak" not in json.dumps(outcome.output) and outcome.output["OK"] == "1"
    assert "GEMINI_API_KEY" not in scrubbed_environment(tmp_path)


def test_network_is_unreachable(tmp_path):
    source = (
        "import socket\ntry:\n    socket.create_connection(('127.0.0.1', 22), timeout=2)\n    result = 'connected'\n"
        "except OSError as exc:\n    result = type(exc).__name__ + ': ' + str(exc)\n"
        "open('result.json', 'w').write(__import__('json').dumps({'network': result}))\n"
    )
    outcome = _run(tmp_path, source)
    assert outcome.status == "ok" and outcome.output["network"] != "connected"


def test_writes_and_deletions_outside_the_work_dir_are_refused(tmp_path):
    victim = tmp_path / "precious.txt"
    victim.write_text("keep me")
    source = (
        "import os, json\nreport = {}\n"
        f"for name, action in [('write', lambda: open({str(tmp_path / 'evil.txt')!r}, 'w').write('x')),\n"
        f"                     ('delete', lambda: os.remove({str(victim)!r}))]:\n"
        "    try:\n        action()\n        report[name] = 'done'\n"
        "    except OSError as exc:\n        report[name] = type(exc).__name__\n"
        "open('result.json', 'w').write(json.dumps(report))\n"
    )
    outcome = _run(tmp_path, source)
    assert outcome.status == "ok" and outcome.output == {"write": "PermissionError", "delete": "PermissionError"}
    assert victim.read_text() == "keep me" and not (tmp_path / "evil.txt").exists()


def test_only_dev_null_is_writable_among_the_devices(tmp_path):
    source = _attempts({
        "dev_null": "open('/dev/null', 'w').write('discarded')",
        "dev_shm": "open('/dev/shm/planted', 'w').write('x')",
        "dev_via_link": "os.symlink('/dev/shm/planted', 'link'); open('link', 'w').write('x')",
    })  # fmt: skip
    outcome = _run(tmp_path, source)
    assert outcome.status == "ok", outcome.reason
    assert outcome.output["dev_null"] == "done"
    assert outcome.output["dev_shm"] != "done" and outcome.output["dev_via_link"] != "done", outcome.output
    assert not pathlib.Path("/dev/shm/planted").exists()


def test_a_sandbox_compiles_from_the_warm_cache_it_is_given(tmp_path):
    """The trainer's fused loss compiles inside the sandbox (no refused write breaks inductor) and its
    private copy of the machine's warm cache serves it: no compile from scratch."""
    from recsys.compile_cache import CACHE_ENV, copy_cache, warm_cache

    warm = warm_cache(1)
    assert warm is not None
    work = tmp_path / "work"
    copy_cache(warm, work / "compile-cache")
    source = (
        "import json, torch\nfrom torch._dynamo.utils import counters\n"
        "from recsys.fast_losses import CHUNK_ROWS, compile_failure, full_softmax_cross_entropy\n"
        "rows = CHUNK_ROWS + 100\n"
        "hidden, table = torch.randn(rows, 48, requires_grad=True), torch.randn(2001, 48, requires_grad=True)\n"
        "with torch.autocast('cpu', dtype=torch.bfloat16):\n"
        "    loss = full_softmax_cross_entropy(hidden, table, torch.randint(1, 2001, (rows,)), torch.ones(rows))\n"
        "loss.backward()\n"
        "json.dump({'failure': compile_failure(), **counters['inductor']}, open('result.json', 'w'))\n"
    )
    env = {"OMP_NUM_THREADS": "1", CACHE_ENV: str(work / "compile-cache")}
    outcome = run_sandboxed(source, work, SandboxLimits(wall_seconds=300, memory_bytes=4 * 2**30), env)
    assert outcome.status == "ok", outcome.reason
    assert outcome.output["failure"] is None
    hits, misses = outcome.output.get("fxgraph_cache_hit", 0), outcome.output.get("fxgraph_cache_miss", 0)
    assert hits >= 2 and misses == 0, outcome.output


def test_a_syntax_error_is_recorded_with_its_reason(tmp_path):
    outcome = _run(tmp_path, "def broken(:\n    pass\n")
    assert outcome.status == "crashed" and "SyntaxError" in outcome.reason


def test_nan_metrics_come_back_as_nan_for_the_caller_to_reject(tmp_path):
    outcome = _run(tmp_path, _write_result("{'ndcg@10': float('nan')}"))
    assert outcome.status == "ok" and outcome.output["ndcg@10"] != outcome.output["ndcg@10"]


def test_an_entry_that_writes_no_result_fails_with_a_reason(tmp_path):
    outcome = _run(tmp_path, "x = 1\n")
    assert outcome.status == "failed" and "without writing result.json" in outcome.reason


def _attempts(attempts: dict[str, str]) -> str:
    """An entry that runs each named statement and records 'done' or the error it met."""
    lines = ["import ctypes, json, os\nlibc = ctypes.CDLL(None, use_errno=True)\nreport = {}\n"]
    for name, statement in attempts.items():
        lines.append(
            f"try:\n    {statement}\n    report[{name!r}] = 'done'\n"
            f"except Exception as exc:\n    report[{name!r}] = type(exc).__name__\n"
        )
    lines.append("open('result.json', 'w').write(json.dumps(report))\n")
    return "".join(lines)


def test_hidden_folders_and_other_processes_cannot_be_read_by_any_route(tmp_path):
    secret = tmp_path / "secret"
    secret.mkdir()
    (secret / "targets.csv").write_text("held out")
    root = tmp_path / "sandboxes"
    (root / "other-candidate").mkdir(parents=True)
    (root / "other-candidate" / "result.json").write_text("{}")

    def raw(path: str) -> str:  # open(2) through ctypes: no Python audit event is raised
        return f"assert libc.open({path}.encode(), 0) >= 0"

    source = _attempts({
        "open": f"open({str(secret / 'targets.csv')!r}).read()",
        "list": f"os.listdir({str(secret)!r})",
        "sibling": f"open({str(root / 'other-candidate' / 'result.json')!r}).read()",
        "parent_environ": "open(f'/proc/{os.getppid()}/environ').read()",
        "raw_open": raw(repr(str(secret / "targets.csv"))),
        "raw_parent_root": raw(f"f'/proc/{{os.getppid()}}/root{secret / 'targets.csv'}'"),
        "raw_parent_environ": raw("f'/proc/{os.getppid()}/environ'"),
    })  # fmt: skip
    outcome = run_sandboxed(source, root / "work", FAST, hidden=[secret, root])
    assert outcome.status == "ok", outcome.reason
    assert "done" not in outcome.output.values(), outcome.output
    assert {"hidden-paths", "pidns", "private-proc"} <= set(outcome.isolation)


def test_no_capability_is_left_to_change_mounts_namespaces_or_cgroups(tmp_path):
    source = _attempts({
        "remount": "assert libc.mount(None, b'/sys/fs/cgroup', None, 32 | 4096, None) == 0",
        "unshare": "assert libc.unshare(0x00020000) == 0",
        "join_root_cgroup": "open('/sys/fs/cgroup/pids/cgroup.procs', 'w').write(str(os.getpid()))",
        "raw_join_root_cgroup": "assert libc.open(b'/sys/fs/cgroup/pids/cgroup.procs', 1) >= 0",
    })  # fmt: skip
    outcome = _run(tmp_path, source)
    assert outcome.status == "ok" and "done" not in outcome.output.values(), outcome.output
    assert {"no-capabilities", "readonly-sys"} <= set(outcome.isolation)


@pytest.mark.skipif(os.geteuid() != 0, reason="only root can hand the child a uid of its own")
def test_the_child_runs_as_a_uid_of_its_own_that_can_take_no_root_right_back(tmp_path):
    home = pathlib.Path(os.path.expanduser("~"))
    source = _attempts({
        "is_root": "assert os.getuid() == 0 or os.geteuid() == 0",
        "raw_setuid_root": "assert libc.setuid(0) == 0",
        "raw_read_root_only_file": "assert libc.open(b'/etc/shadow', 0) >= 0",
        "see_the_home_of_root": f"assert set(os.listdir({str(home)!r})) - {{'.pyenv', '.local'}}",
        "raw_chmod_system_file": "assert libc.chmod(b'/etc/passwd', 0o666) == 0",
    })  # fmt: skip
    source += "import torch\nopen('torch.txt', 'w').write(torch.__version__)\n"  # the interpreter still works
    outcome = _run(tmp_path, source)
    assert outcome.status == "ok", outcome.reason
    assert "done" not in outcome.output.values(), outcome.output
    assert {"non-root", "rlimit-nproc", "no-capabilities"} <= set(outcome.isolation)
    work = tmp_path / "work"
    assert (work / "torch.txt").read_text() and work.stat().st_uid != 0


def test_a_grandchild_that_tries_to_leave_the_cgroups_does_not_outlive_the_run(tmp_path):
    source = (
        "import subprocess, sys\n"
        'escape = \'import os, time\\nfor c in ("pids", "memory"):\\n    try:\\n'
        '        open(f"/sys/fs/cgroup/{c}/cgroup.procs", "w").write(str(os.getpid()))\\n'
        "    except OSError:\\n        pass\\ntime.sleep(600)\\n'\n"
        "child = subprocess.Popen([sys.executable, '-c', escape], start_new_session=True)\n"
        "open('grandchild.pid', 'w').write(str(child.pid))\n"
        "open('result.json', 'w').write('{}')\n"
    )
    outcome = _run(tmp_path, source, SandboxLimits(wall_seconds=60, memory_bytes=2 * 2**30))
    assert outcome.status == "ok"
    time.sleep(0.5)
    leftovers = [p for p in CGROUP_ROOT.glob(f"*/evorec-{os.getpid()}-*")]
    assert leftovers == []
    assert not any(_running(pid) for pid in _pids_running(b"cgroup.procs"))


def test_a_writer_that_fills_the_disk_is_stopped(tmp_path):
    writer = "chunk = b'x' * 2**20\nwith open('big.bin', 'wb') as f:\n    while True:\n        f.write(chunk)\n"
    limits = SandboxLimits(wall_seconds=60, memory_bytes=2 * 2**30, disk_bytes=64 * 2**20)
    outcome = _run(tmp_path, writer, limits)
    assert outcome.status == "out_of_disk" and "disk quota" in outcome.reason
    assert outcome.seconds < 30


def test_a_writer_of_many_small_files_is_stopped(tmp_path):
    writer = "i = 0\nwhile True:\n    open(f'f{i}', 'w').write('x')\n    i += 1\n"
    limits = SandboxLimits(wall_seconds=60, memory_bytes=2 * 2**30, max_files=2_000)
    outcome = _run(tmp_path, writer, limits)
    assert outcome.status == "out_of_disk" and "2000 files" in outcome.reason


def test_cgroups_left_by_a_dead_evaluator_are_swept(tmp_path):
    stale = [CGROUP_ROOT / c / "evorec-999999999-deadbeef0000" for c in ("pids", "memory")]
    made = []
    for path in stale:
        try:
            path.mkdir()
            made.append(path)
        except OSError:
            continue
    if not made:
        pytest.skip("this machine does not let us make cgroups")
    removed = sweep_stale_cgroups()
    assert set(made) <= set(removed) and not any(p.exists() for p in made)
