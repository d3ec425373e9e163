"""The local run's log: task output is written redacted, and task starts and ends are still seen."""

from __future__ import annotations

import io

from pipelines.runner import TaskWatcher


def test_the_run_log_holds_no_secret_value_a_task_printed(monkeypatch):
    monkeypatch.setenv("GEMINI_API_KEY", "AIzaSy-run-log-7c1d2e3f4a5b")
    log, seen = io.StringIO(), []
    watcher = TaskWatcher(log, lambda task, status: seen.append((task, status)))
    watcher.write("2026-12-04 - INFO - Executing task 'evaluate'\n")
    watcher.write("RuntimeError: environ({'GEMINI_API_KEY': 'AIzaSy-run-log-7c1d2e3f4a5b'})")
    watcher.write("\n")
    watcher.write("Task 'evaluate' finished with status SUCCESS\n")
    assert "AIzaSy-run-log-7c1d2e3f4a5b" not in log.getvalue() and "[REDACTED $GEMINI_API_KEY]" in log.getvalue()
    assert seen == [("evaluate", "started"), ("evaluate", "success")]
