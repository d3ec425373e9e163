"""Full-softmax cross-entropy over the whole catalogue without a ``rows X items`` float32 logit matrix.

The plain loss (``F.cross_entropy`` on ``hidden @ table.T``) keeps the logits and their softmax for
the backward pass: with 15,000 target positions and 3,400 items that is 200 MB written and read
several times a step, and on a CPU the log-softmax then costs more than the matrix products. Under
bfloat16 autocast a custom autograd function walks the rows in chunks instead: the forward keeps
only each row's log-sum-exp, the backward recomputes each chunk's logits and turns them into
gradients at once. The matrix products run in bfloat16 (the CPU's matrix units); the log-sum-exp,
the softmax and the loss are float32. Each chunk's element-wise work (conversion, exp, scaling)
is one loop fused by ``torch.compile``, since run eagerly those passes cost more than the products
on a CPU; where compiling fails the same code runs eagerly. Sandboxed trainings start from a warm
compile cache (:mod:`recsys.compile_cache`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import cache
from typing import Any

import torch
import torch.nn.functional as F

log = logging.getLogger(__name__)

CHUNK_ROWS = 4096
"""Rows per chunk: large enough for efficient products, small enough that a chunk's logits stay modest."""


def _forward_chunk(hidden: torch.Tensor, table: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Each row's log-sum-exp and loss, stacked as ``2 X rows`` float32."""
    logits = (hidden @ table.T).float()
    lse = torch.logsumexp(logits, dim=1)
    return torch.stack((lse, lse - logits.gather(1, targets[:, None]).squeeze(1)))


def _backward_chunk(
    hidden: torch.Tensor, table: torch.Tensor, targets: torch.Tensor, lse: torch.Tensor, grad: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Gradients of ``grad . losses`` for one chunk: (softmax - one-hot) scaled, times the other factor."""
    logits = (hidden @ table.T).float()
    columns = torch.arange(table.shape[0], device=hidden.device)
    delta = (logits - lse[:, None]).exp() - (columns[None, :] == targets[:, None]).float()
    delta = (delta * grad[:, None]).to(table.dtype)
    return (delta @ table).float(), (delta.T @ hidden).float()


Kernels = tuple[Callable[..., torch.Tensor], Callable[..., tuple[torch.Tensor, torch.Tensor]]]


@cache
def _compiled() -> Kernels:
    return torch.compile(_forward_chunk, dynamic=True), torch.compile(_backward_chunk, dynamic=True)


_eager: Kernels = (_forward_chunk, _backward_chunk)
_failed: list[str] = []


def _kernels() -> Kernels:
    return _eager if _failed else _compiled()


def compile_failure() -> str | None:
    """Why the kernels run eagerly in this process (compiling failed), or None."""
    return _failed[0] if _failed else None


def _run(index: int, *args: torch.Tensor) -> Any:
    """The compiled kernel, or the eager one once compiling has failed (logged once)."""
    try:
        return _kernels()[index](*args)
    except Exception as exc:  # inductor needs a C++ compiler; without one the eager code is still right
        if _failed:
            raise
        _failed.append(f"{type(exc).__name__}: {exc}")
        log.warning("torch.compile of the cross-entropy kernels failed, running them eagerly: %s", _failed[0])
        return _eager[index](*args)


class _ChunkedCrossEntropy(torch.autograd.Function):
    """Per-row ``logsumexp(h W^T) - h . W[target]``, recomputed chunk by chunk in the backward pass."""

    @staticmethod
    def forward(
        ctx: Any, hidden: torch.Tensor, table: torch.Tensor, targets: torch.Tensor, dtype: torch.dtype, chunk: int
    ) -> torch.Tensor:
        low_hidden, low_table = hidden.to(dtype), table.to(dtype)
        parts = [
            _run(0, low_hidden[start : start + chunk], low_table, targets[start : start + chunk])
            for start in range(0, len(hidden), chunk)
        ]
        lse, losses = torch.cat(parts, dim=1) if parts else torch.zeros(2, 0, device=hidden.device)
        ctx.save_for_backward(low_hidden, low_table, targets, lse)
        ctx.dtypes = (hidden.dtype, table.dtype)
        ctx.chunk = chunk
        return losses

    @staticmethod
    def backward(ctx: Any, grad_losses: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        low_hidden, low_table, targets, lse = ctx.saved_tensors
        grad_hidden = torch.empty(low_hidden.shape, dtype=torch.float32, device=low_hidden.device)
        grad_table = torch.zeros(low_table.shape, dtype=torch.float32, device=low_table.device)
        grad_losses = grad_losses.float().contiguous()
        for start in range(0, len(low_hidden), ctx.chunk):
            rows = slice(start, start + ctx.chunk)
            chunk_hidden, chunk_table = _run(
                1, low_hidden[rows], low_table, targets[rows], lse[rows], grad_losses[rows]
            )
            grad_hidden[rows] = chunk_hidden
            grad_table += chunk_table
        hidden_dtype, table_dtype = ctx.dtypes
        return grad_hidden.to(hidden_dtype), grad_table.to(table_dtype), None, None, None


def full_softmax_cross_entropy(
    hidden: torch.Tensor,
    item_table: torch.Tensor,
    targets: torch.Tensor,
    weights: torch.Tensor,
    chunk_rows: int = CHUNK_ROWS,
) -> torch.Tensor:
    """Weighted mean cross-entropy of each row's target among all items (row 0 of the table pads).

    Args:
        hidden: ``R X D`` states at the positions that have a target (padding already dropped).
        item_table: ``(N+1) X D`` output embeddings of every item, row 0 the padding id (never scored).
        targets: ``R`` target item ids in ``1..N``.
        weights: ``R`` training weights.

    Under bfloat16 autocast the chunked function runs; in float32 the materialised logits are kept
    (recomputing them costs more than it saves there), so the float32 path computes what it always did.
    """
    device = hidden.device.type
    weights = weights.float()
    if torch.is_autocast_enabled(device) and torch.get_autocast_dtype(device) != torch.float32:
        items = item_table[1:]  # drop the padding row: targets index the real items from 0
        dtype = torch.get_autocast_dtype(device)
        losses = _ChunkedCrossEntropy.apply(hidden, items, targets - 1, dtype, chunk_rows)  # type: ignore[no-untyped-call]
    else:
        logits = hidden @ item_table.T
        logits[:, 0] = float("-inf")
        losses = F.cross_entropy(logits, targets, reduction="none")
    return (losses * weights).sum() / weights.sum().clamp(min=1e-12)
