"""Micro-batching: requests that arrive within a few milliseconds are scored in one forward pass.

One worker task drains the queue: it takes the first waiting request, waits up to ``max_wait``
for more (up to ``max_batch``), groups them by model and scores each group in a thread, so the
event loop keeps accepting requests while the CPU works.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from serving.artifacts import LoadedModel


@dataclass
class Ranking:
    items: list[int]  # item indices, best first
    scores: list[float]


@dataclass
class _Request:
    model: LoadedModel
    user: int
    history: np.ndarray
    k: int
    future: asyncio.Future[Ranking] = field(repr=False)
    enqueued: float = field(default_factory=time.perf_counter)


def top_k(model: LoadedModel, users: np.ndarray, histories: list[np.ndarray], k: int) -> torch.return_types.topk:
    """Each user's ``k`` best items (at most the catalogue), best first, with consumed items and padding masked."""
    return masked_top_k(model.scores(users, histories), histories, k)


def masked_top_k(scores: torch.Tensor, histories: list[np.ndarray], k: int) -> torch.return_types.topk:
    """The ``k`` best of ``B X (N+1)`` scores per row, padding and each row's history masked (``scores`` is changed)."""
    scores[:, 0] = -torch.inf
    rows = np.repeat(np.arange(len(histories)), [len(history) for history in histories])
    consumed = np.concatenate([*histories, np.zeros(0, dtype=np.int64)]).astype(np.int64)
    scores[torch.from_numpy(rows), torch.from_numpy(consumed)] = -torch.inf
    return torch.topk(scores, min(k, scores.shape[1] - 1), dim=1)


def rank(model: LoadedModel, users: np.ndarray, histories: list[np.ndarray], ks: list[int]) -> list[Ranking]:
    """Top-k of each user with consumed items and padding masked."""
    top = top_k(model, users, histories, max(ks))
    return [Ranking(top.indices[row, :k].tolist(), top.values[row, :k].tolist()) for row, k in enumerate(ks)]


BatchObserver = Callable[[int, float, float], None]  # (requests, oldest request's wait, scoring seconds)


class MicroBatcher:
    def __init__(
        self, max_batch: int = 32, max_wait_seconds: float = 0.002, on_batch: BatchObserver | None = None
    ) -> None:
        self.max_batch = max_batch
        self.max_wait = max_wait_seconds
        self.on_batch = on_batch
        self.queue: asyncio.Queue[_Request] = asyncio.Queue()
        self._worker: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._worker = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker

    async def submit(self, model: LoadedModel, user: int, history: np.ndarray, k: int) -> Ranking:
        future: asyncio.Future[Ranking] = asyncio.get_running_loop().create_future()
        await self.queue.put(_Request(model, user, history, k, future))
        return await future

    async def _collect(self) -> list[_Request]:
        batch = [await self.queue.get()]
        deadline = time.monotonic() + self.max_wait
        while len(batch) < self.max_batch:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                batch.append(await asyncio.wait_for(self.queue.get(), remaining))
            except TimeoutError:
                break
        return batch

    async def _run(self) -> None:
        while True:
            batch = await self._collect()
            began = time.perf_counter()
            groups: dict[int, list[_Request]] = defaultdict(list)
            for request in batch:
                groups[id(request.model)].append(request)
            for requests in groups.values():
                await self._score(requests)
            if self.on_batch is not None:
                waited = began - min(request.enqueued for request in batch)
                self.on_batch(len(batch), waited, time.perf_counter() - began)

    @staticmethod
    async def _score(requests: list[_Request]) -> None:
        model = requests[0].model
        users = np.array([r.user for r in requests], dtype=np.int64)
        try:
            rankings = await asyncio.to_thread(
                rank, model, users, [r.history for r in requests], [r.k for r in requests]
            )
        except Exception as exc:  # the requests fail with the reason; the worker keeps serving
            for request in requests:
                if not request.future.done():
                    request.future.set_exception(exc)
            return
        for request, ranking in zip(requests, rankings, strict=True):
            if not request.future.done():
                request.future.set_result(ranking)
