"""Incremental scoring of a served SASRec: a history that grew by one item costs one position, not all of them.

A served model is an opaque exported program that runs every position of a history for every
request; a simulated user comes back with one more item, so almost all of that work repeats the
last request's. A causal transformer's keys and values at a position never change once computed
(later items cannot reach it), so this scorer keeps them per user and computes only the new
position: about the cost of the final item product instead of a full forward pass.

It runs the program's own weights, read from its parameters by the layout of the SASRec seeds
(pre-norm blocks of causal attention and a feed-forward network, tied item table, learned
positions). Whether the artifact really is that model is not assumed: ``attach`` scores a check
batch both ways, a full pass and a pass grown one item at a time, and returns None unless both
agree with the program (a candidate whose code computes otherwise keeps the program). Histories
longer than the model reads slide their window, which moves every position: those are scored in
full, with nothing cached.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F

from serving.artifacts import LoadedModel

PREFIX = "model."
AGREEMENT = 1e-4
"""Largest gap between this scorer's and the program's scores on the check batch, relative to the scores' spread."""
BLOCK_PARTS = ("attention_norm", "attention.qkv", "attention.out", "feed_forward_norm", "feed_forward.layers.0",
               "feed_forward.layers.3")  # fmt: skip
ROOM = 32  # positions a cached user's buffer holds beyond their history, for the items still to come
CHECK_LENGTHS = (2, 3, 8, 31)  # histories of the check batch, plus ones of the longest length read and longer


@dataclass(frozen=True)
class _Block:
    """One pre-norm block's weights: attention then feed-forward, each with its layer norm."""

    attention_norm: tuple[torch.Tensor, torch.Tensor]
    qkv: tuple[torch.Tensor, torch.Tensor]
    out: tuple[torch.Tensor, torch.Tensor]
    feed_forward_norm: tuple[torch.Tensor, torch.Tensor]
    hidden: tuple[torch.Tensor, torch.Tensor]
    output: tuple[torch.Tensor, torch.Tensor]

    def feed_forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` plus the block's feed-forward network of its normalised ``x`` (any leading shape X D)."""
        h = F.layer_norm(x, x.shape[-1:], *self.feed_forward_norm)
        return x + F.linear(F.relu(F.linear(h, *self.hidden)), *self.output)


@dataclass(frozen=True)
class SASRecWeights:
    """A SASRec's weights, read from an exported program's parameters.

    Args:
        items: ``(N+1) X D`` item table (row 0 pads), which also scores the output.
        positions: ``max_len X D`` learned position embeddings.
        blocks: the transformer blocks, first to last.
        final_norm: weight and bias of the last layer norm.
        heads: attention heads (not a parameter: ``attach`` finds it by the check batch).
    """

    items: torch.Tensor
    positions: torch.Tensor
    blocks: tuple[_Block, ...]
    final_norm: tuple[torch.Tensor, torch.Tensor]
    heads: int

    @classmethod
    def read(cls, parameters: dict[str, torch.Tensor], heads: int) -> SASRecWeights | None:
        """The weights under the SASRec seeds' parameter names; None when any is missing or misshapen."""

        def pair(name: str) -> tuple[torch.Tensor, torch.Tensor]:
            return parameters[f"{PREFIX}{name}.weight"].float(), parameters[f"{PREFIX}{name}.bias"].float()

        try:
            items = parameters[f"{PREFIX}item_table.embeddings.item_table.weight"].float()
            count = 1 + max(int(name.split(".")[2]) for name in parameters if name.startswith(f"{PREFIX}blocks."))
            blocks = tuple(_Block(*(pair(f"blocks.{index}.{part}") for part in BLOCK_PARTS)) for index in range(count))
            weights = cls(items, parameters[f"{PREFIX}positions.weight"].float(), blocks, pair("final_norm"), heads)
        except (KeyError, ValueError, IndexError):
            return None
        dim = items.shape[1]
        shapes_agree = weights.positions.shape[1] == dim and all(
            block.qkv[0].shape == (3 * dim, dim) and block.out[0].shape == (dim, dim) for block in blocks
        )
        return weights if shapes_agree and dim % heads == 0 else None

    @property
    def dim(self) -> int:
        return int(self.items.shape[1])

    @property
    def max_len(self) -> int:
        return int(self.positions.shape[0])

    def embed(self, items: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """The first block's input: scaled item embeddings plus position embeddings (same shape X D)."""
        return self.items[items] * math.sqrt(self.dim) + self.positions[positions]


class IncrementalScorer:
    """Scores of one served SASRec, each user's keys and values kept for the next request.

    Keys identify users; a key's history may only grow by appending (the simulation's histories
    do), so a cached key whose history is one item longer is scored from its cache. Threads may score
    batches side by side when no key is in two of them at once. Memory: per
    cached user and position, ``4 X blocks X D`` bytes per key and value (ML-1M's SASRec: 1 KiB).

    Example::

        scorer = IncrementalScorer.attach(model)  # None: not a SASRec, score with model.scores
        scores = scorer.scores(np.array([7]), [np.array([3, 9, 4])])  # 1 X (N+1)
    """

    def __init__(self, weights: SASRecWeights) -> None:
        self.weights = weights
        # key -> (blocks*2 X heads X room X D/heads keys and values per position, positions filled)
        self._cache: dict[int, tuple[torch.Tensor, int]] = {}
        self._local = threading.local()  # each thread's workspace: batches of other users score side by side
        self._counting = threading.Lock()
        self.steps = 0  # requests scored from the cache (one new position)
        self.full = 0  # requests scored over their whole history

    @classmethod
    def attach(cls, model: LoadedModel) -> IncrementalScorer | None:
        """A scorer for ``model`` when it is a SASRec that scores exactly as its program does, else None."""
        weights = SASRecWeights.read(dict(model.program.state_dict()), heads=1)
        if weights is None or weights.max_len != model.manifest.max_len:
            return None
        rng = np.random.default_rng(0)
        lengths = (*CHECK_LENGTHS, model.manifest.max_len, model.manifest.max_len + 3)
        histories = [rng.integers(1, model.manifest.num_items + 1, size=length) for length in lengths]
        users = np.arange(len(histories))
        expected = model.scores(users, histories)
        spread = float(expected.std().clamp(min=1e-12))
        for heads in (head for head in (1, 2, 4, 8, 16) if weights.dim % head == 0):
            scorer = cls(replace(weights, heads=heads))
            whole = scorer.scores(users, histories)
            scorer.scores(users + len(users), [history[:-1] for history in histories])
            grown = scorer.scores(users + len(users), histories)
            gap = max(float((whole - expected).abs().max()), float((grown - expected).abs().max())) / spread
            if gap <= AGREEMENT:
                return cls(scorer.weights)
        return None

    @torch.no_grad()
    def scores(self, keys: np.ndarray, histories: list[np.ndarray]) -> torch.Tensor:
        """``B X (N+1)`` scores (column 0 is padding) after each history, as the program would give them.

        ``keys`` name the cache entries (one per simulated user). A history longer than ``max_len``
        slides its window, which moves every position: it is scored in full and nothing is kept.
        """
        if any(len(history) == 0 for history in histories):
            raise ValueError("every history needs at least one item")
        lengths = np.fromiter((len(history) for history in histories), dtype=np.int64, count=len(histories))
        cached = np.fromiter((self._cache.get(int(key), (None, 0))[1] for key in keys), dtype=np.int64, count=len(keys))
        fits = lengths <= self.weights.max_len
        step = (cached == lengths - 1) & (cached > 0) & fits
        last = torch.empty(len(histories), self.weights.dim)
        for rows, keep in ((np.flatnonzero(fits & ~step), True), (np.flatnonzero(~fits), False)):
            if len(rows):
                last[rows] = self._full(keys[rows], [histories[row] for row in rows.tolist()], keep)
        rows = np.flatnonzero(step)
        if len(rows):
            last[rows] = self._step(keys[rows], [int(histories[row][-1]) for row in rows.tolist()], cached[rows])
        for key in keys[~fits].tolist():
            self._cache.pop(key, None)
        with self._counting:
            self.steps += int(step.sum())
            self.full += int((~step).sum())
        return F.layer_norm(last, (self.weights.dim,), *self.weights.final_norm) @ self.weights.items.T

    def _full(self, keys: np.ndarray, histories: list[np.ndarray], keep: bool) -> torch.Tensor:
        """``B X D`` last states by a pass over every position (each history cut to ``max_len``).

        Only the last position's state is read, so the last block runs its attention, projection
        and feed-forward for that position alone (its keys and values still cover every position).
        ``keep``: cache the keys and values for the next request.
        """
        weights = self.weights
        cut = [torch.from_numpy(np.asarray(history[-weights.max_len :], dtype=np.int64)) for history in histories]
        ends = torch.tensor([len(history) for history in cut]) - 1
        ids = torch.nn.utils.rnn.pad_sequence(cut, batch_first=True)  # right-padded: causal, pads reach nothing real
        batch, length = ids.shape
        rows = torch.arange(batch)
        x = weights.embed(ids, torch.arange(length))
        memory = []
        for index, block in enumerate(weights.blocks):
            h = F.layer_norm(x, (weights.dim,), *block.attention_norm)
            q, k, v = (self._heads(part) for part in F.linear(h, *block.qkv).chunk(3, dim=-1))
            memory.extend([k, v])
            if index < len(weights.blocks) - 1:
                attended = F.scaled_dot_product_attention(q, k, v, is_causal=True)
                x = x + F.linear(attended.transpose(1, 2).reshape(batch, length, weights.dim), *block.out)
            else:
                visible = (torch.arange(length) <= ends[:, None])[:, None, None, :]  # B X 1 X 1 X L
                attended = F.scaled_dot_product_attention(q[rows, :, ends][:, :, None], k, v, attn_mask=visible)
                x = x[rows, ends] + F.linear(attended.reshape(batch, weights.dim), *block.out)
            x = block.feed_forward(x)
        if keep:
            kept = torch.stack(memory, dim=1)  # B X blocks*2 X heads X L X D/heads
            for row, (key, end) in enumerate(zip(keys.tolist(), ends.tolist(), strict=True)):
                self._cache[key] = (self._room_for(kept[row, :, :, : end + 1], end + 1), end + 1)
        return x

    def _step(self, keys: np.ndarray, items: list[int], positions: np.ndarray) -> torch.Tensor:
        """``B X D`` last states of histories that each grew by one item at ``positions``, from the cache."""
        weights, batch, span = self.weights, len(keys), int(positions.max()) + 1
        past = [self._cache[key][0] for key in keys.tolist()]
        memory = self._workspace(batch, past[0].shape)[..., :span, :]
        for row, (cached, position) in enumerate(zip(past, positions.tolist(), strict=True)):
            memory[row, :, :, :position] = cached[:, :, :position]
        where, rows = torch.from_numpy(positions), torch.arange(batch)
        visible = (torch.arange(span) <= where[:, None])[:, None, None, :]  # B X 1 X 1 X span
        x = weights.embed(torch.tensor(items), where)
        for index, block in enumerate(weights.blocks):
            h = F.layer_norm(x, (weights.dim,), *block.attention_norm)
            q, k, v = (self._heads(part[:, None]) for part in F.linear(h, *block.qkv).chunk(3, dim=-1))
            memory[rows, 2 * index, :, where] = k[:, :, 0]
            memory[rows, 2 * index + 1, :, where] = v[:, :, 0]
            attended = F.scaled_dot_product_attention(
                q, memory[:, 2 * index], memory[:, 2 * index + 1], attn_mask=visible
            )
            x = x + F.linear(attended.reshape(batch, weights.dim), *block.out)
            x = block.feed_forward(x)
        for row, (key, cached, position) in enumerate(zip(keys.tolist(), past, positions.tolist(), strict=True)):
            if position >= cached.shape[2]:
                cached = self._room_for(cached, position)
            cached[:, :, position] = memory[row, :, :, position]
            self._cache[key] = (cached, position + 1)
        return x

    def _room_for(self, filled: torch.Tensor, position: int) -> torch.Tensor:
        """``filled`` copied into a buffer with room up to ``position + ROOM`` positions (at most ``max_len``).

        A fixed margin, not doubling: a simulated user gains one item a day, so a few weeks fit
        without a copy and memory stays near what is filled.
        """
        room = filled.new_empty(*filled.shape[:2], min(position + ROOM, self.weights.max_len), filled.shape[3])
        room[:, :, : filled.shape[2]] = filled
        return room

    def _workspace(self, batch: int, shape: torch.Size) -> torch.Tensor:
        """This thread's reused ``B X blocks*2 X heads X max_len X D/heads`` buffer: no fresh pages for every
        batch."""
        room: torch.Tensor | None = getattr(self._local, "room", None)
        if room is None or room.shape[0] < batch:
            room = self._local.room = torch.zeros(batch, shape[0], shape[1], self.weights.max_len, shape[3])
        return room[:batch]

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        """``B X L X D`` -> ``B X heads X L X D/heads``."""
        batch, length, dim = x.shape
        heads = self.weights.heads
        return x.reshape(batch, length, heads, dim // heads).transpose(1, 2)
