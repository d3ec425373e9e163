"""Where a request's time goes when it is not scoring: event-loop lag and garbage-collection pauses.

A server's latency tail usually comes from something that stops every request at once: the event
loop held by work that should run elsewhere, or a full garbage collection walking every object.
Both are measured all the time (as Prometheus histograms beside the request latency), so a tail
that comes back shows its cause on ``/metrics``.

The catalogue and the exported models are millions of long-lived objects; a full collection walks
them all (about a second on the ML-1M model, every request waiting). :func:`freeze_long_lived`
moves what is alive after loading out of the collector's reach, so full collections walk only what
requests allocate.
"""

from __future__ import annotations

import asyncio
import gc
import time
from typing import Any

from prometheus_client import CollectorRegistry, Histogram

PAUSE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)


def freeze_long_lived() -> None:
    """Exempt every object alive now (catalogue, loaded models) from later garbage collections.

    Called after loading: objects freed later by reference counting still go; only reference
    cycles of a model swapped out stay in memory until the process ends.
    """
    gc.freeze()


class LoopLagMonitor:
    """Sleeps ``interval`` seconds again and again; how late each wake-up comes is the loop's lag."""

    def __init__(self, registry: CollectorRegistry, interval: float = 0.01) -> None:
        self.interval = interval
        self.lag = Histogram(
            "evorec_event_loop_lag_seconds", "How late the event loop wakes a sleeping task",
            registry=registry, buckets=PAUSE_BUCKETS,
        )  # fmt: skip
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()

    async def _run(self) -> None:
        while True:
            began = time.perf_counter()
            await asyncio.sleep(self.interval)
            self.lag.observe(max(0.0, time.perf_counter() - began - self.interval))


class GcPauses:
    """Times every garbage collection of this process, per generation."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.pauses = Histogram(
            "evorec_gc_pause_seconds", "Garbage-collection pauses", ["generation"],
            registry=registry, buckets=PAUSE_BUCKETS,
        )  # fmt: skip
        self._started = 0.0

    def _callback(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self.pauses.labels(str(info["generation"])).observe(time.perf_counter() - self._started)

    def start(self) -> None:
        gc.callbacks.append(self._callback)

    def stop(self) -> None:
        if self._callback in gc.callbacks:
            gc.callbacks.remove(self._callback)
