"""How many invocations and seconds a long benchmark took, killed ones included.

A result file written at the end of an invocation cannot count one that the OOM killer or a wall limit ended
first, so each invocation writes its line to the run's state folder when it starts (with the CPU it runs on: a
CPU-second of one model buys less training than one of another) and brings its seconds up to date every ``every``
seconds until it ends; the totals are the log's sums."""

from __future__ import annotations

import json
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from benchmarks.common import cpu, write_atomically


class InvocationLog:
    """``with InvocationLog(state / "invocations.jsonl", run, carried) as log: ... log.totals()``.

    ``run`` names the settings of the run (a benchmark restarted with other settings counts afresh);
    ``carried`` holds the sessions and seconds its result file counted before the run kept this log, written
    once, when the log has no line of the run yet."""

    def __init__(self, path: Path, run: Any = None, carried: dict[str, Any] | None = None, every: float = 30.0) -> None:
        self.path, self.run, self.every = path, run, every
        self._lines = self._read(path)
        if carried and int(carried.get("sessions", 0)) and not self._of_run():
            self._lines.append(
                {"run": run, "carried": True, "sessions": int(carried["sessions"]), "seconds": carried["seconds"]}
            )
        self._started = time.monotonic()
        self._stop, self._lock = threading.Event(), threading.Lock()
        self._beat = threading.Thread(target=self._heartbeat, name="invocation-log", daemon=True)

    @staticmethod
    def _read(path: Path) -> list[dict[str, Any]]:
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    def __enter__(self) -> Self:
        started = datetime.now(UTC).isoformat(timespec="seconds")
        self._lines.append(
            {"run": self.run, "started": started, "cpu": cpu(), "sessions": 1, "seconds": 0.0, "ended": False}
        )
        self._save()
        self._beat.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self._stop.set()
        self._beat.join()
        self._update(ended=True)

    def totals(self) -> dict[str, Any]:
        """Invocations and seconds so far, this one included, and how many ended without finishing their write."""
        self._update(ended=self._lines[-1]["ended"])
        lines = self._of_run()
        return {
            "sessions": sum(int(line["sessions"]) for line in lines),
            "seconds": round(sum(float(line["seconds"]) for line in lines), 1),
            "killed_sessions": sum(1 for line in lines[:-1] if line.get("ended") is False),
        }

    def first_cpu(self) -> dict[str, Any] | None:
        """The processor the run's first invocation ran on (None where the log did not record it yet)."""
        lines = self._of_run()
        return lines[0].get("cpu") if lines else None

    def _of_run(self) -> list[dict[str, Any]]:
        return [line for line in self._lines if line.get("run") == self.run]

    def _heartbeat(self) -> None:
        while not self._stop.wait(self.every):
            self._update(ended=False)

    def _update(self, ended: bool) -> None:
        with self._lock:
            self._lines[-1].update(seconds=round(time.monotonic() - self._started, 1), ended=ended)
            self._save()

    def _save(self) -> None:
        write_atomically(self.path, "".join(json.dumps(line) + "\n" for line in self._lines))
