"""Hostile candidates: each is contained, recorded with its reason, and the caller goes on."""

from __future__ import annotations

import json
import time

import pytest

from offline_agent.sandbox import SandboxLimits, run_sandboxed, scrubbed_environment

pytestmark = pytest.mark.integration
FAST = SandboxLimits(wall_seconds=20, memory_bytes=2 * 2**30, max_processes=64)


def _running(pid: int) -> bool:
    """Alive and not a zombie (a killed orphan may wait for this container's init to reap it)."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


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
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)'])\n"
        "open('grandchild.pid', 'w').write(str(child.pid))\n"
        "while True:\n    pass\n"
    )
    started = time.monotonic()
    outcome = _run(tmp_path, source, SandboxLimits(wall_seconds=3, memory_bytes=2 * 2**30))
    assert outcome.status == "timeout" and "wall-clock limit of 3 s" in outcome.reason
    assert time.monotonic() - started < 15
    grandchild = int((tmp_path / "work" / "grandchild.pid").read_text())
    time.sleep(0.2)
    assert not _running(grandchild)


def test_a_memory_bomb_is_stopped_as_out_of_memory(tmp_path):
    outcome = _run(tmp_path, "blocks = []\nwhile True:\n    blocks.append(bytearray(100 * 2**20))\n")
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


def test_a_syntax_error_is_recorded_with_its_reason(tmp_path):
    outcome = _run(tmp_path, "def broken(:\n    pass\n")
    assert outcome.status == "crashed" and "SyntaxError" in outcome.reason


def test_nan_metrics_come_back_as_nan_for_the_caller_to_reject(tmp_path):
    outcome = _run(tmp_path, _write_result("{'ndcg@10': float('nan')}"))
    assert outcome.status == "ok" and outcome.output["ndcg@10"] != outcome.output["ndcg@10"]


def test_an_entry_that_writes_no_result_fails_with_a_reason(tmp_path):
    outcome = _run(tmp_path, "x = 1\n")
    assert outcome.status == "failed" and "without writing result.json" in outcome.reason
