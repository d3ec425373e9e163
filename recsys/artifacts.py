"""Model artifacts: a trained candidate's ``score`` exported as a ``torch.export`` program, and their format.

The server never imports a candidate's code. Training (in the sandbox, for generated code)
exports the model's scoring function as an ``ExportedProgram`` over plain tensors; serving loads
that graph and its manifest (``serving.artifacts``). An artifact is a folder (local, or any
fsspec URL)::

    model.pt2       the exported program: (users, values, lengths, width) -> B X (N+1) scores
    manifest.json   what was exported: candidate, content hash, dataset, catalogue size, metrics
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn
from torchrec import KeyedJaggedTensor

from recsys.candidate_api import ITEM_FEATURE, Batch
from recsys.errors import EvorecError

if TYPE_CHECKING:  # the trainer is the caller's; the server loads artifacts without it
    from recsys.trainer import Trainer, TrainResult

PROGRAM_FILE = "model.pt2"
MANIFEST_FILE = "manifest.json"
MIN_WIDTH = 2  # torch.export specialises sizes 0 and 1: widths and item counts below 2 are padded
MAX_BATCH = 4096


class ArtifactError(EvorecError):
    """An artifact cannot be exported, found or loaded."""


@dataclass(frozen=True)
class ArtifactManifest:
    candidate: str
    content_hash: str
    dataset: str
    num_items: int
    max_len: int
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)  # {"valid": {...}, "test": {...}}
    torch_version: str = torch.__version__


class ScoringModule(nn.Module):
    """A candidate model's ``score(batch)`` as a function of plain tensors, which ``torch.export`` traces.

    ``width`` carries the padded history length in its shape (its values are unused), so the
    length stays symbolic instead of being read from data.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.score: Callable[[Batch], torch.Tensor] = model.score  # type: ignore[assignment]

    def forward(self, users: torch.Tensor, values: torch.Tensor, lengths: torch.Tensor, width: torch.Tensor) -> Any:
        history = KeyedJaggedTensor.from_lengths_sync(keys=[ITEM_FEATURE], values=values, lengths=lengths)
        empty = torch.zeros(users.shape[0], 1)
        batch = Batch(users, history, empty.long(), empty, width.shape[0])
        return self.score(batch)


def scoring_inputs(users: np.ndarray, histories: list[np.ndarray], max_len: int) -> tuple[torch.Tensor, ...]:
    """The exported program's inputs for ``histories`` (each cut to its last ``max_len`` items)."""
    cut = [np.asarray(h[-max_len:], dtype=np.int64) for h in histories]
    longest = max((len(h) for h in cut), default=0)
    lengths = torch.tensor([len(h) for h in cut], dtype=torch.int64)
    values = torch.from_numpy(np.concatenate(cut)) if cut else torch.zeros(0, dtype=torch.int64)
    width = torch.zeros(max(longest, MIN_WIDTH))
    return torch.from_numpy(np.asarray(users, dtype=np.int64)), values, lengths, width


def export_scorer(model: nn.Module, num_items: int, max_len: int) -> torch.export.ExportedProgram:
    """Trace ``model.score`` for any batch size and history length up to ``max_len``."""
    rng = np.random.default_rng(0)
    histories = [rng.integers(1, num_items + 1, size=n) for n in (3, max(MIN_WIDTH, min(7, max_len)), 1)]
    example = scoring_inputs(np.arange(3), histories, max_len)
    batch, total = torch.export.Dim("batch", min=1, max=MAX_BATCH), torch.export.Dim("values", min=1)
    width = torch.export.Dim("width", min=MIN_WIDTH, max=max(max_len, MIN_WIDTH + 1))
    shapes = ({0: batch}, {0: total}, {0: batch}, {0: width})
    try:
        return torch.export.export(ScoringModule(model.eval()), example, dynamic_shapes=shapes, strict=False)
    except Exception as exc:  # torch raises many kinds; the caller records the reason
        raise ArtifactError(f"the model's score() cannot be exported: {type(exc).__name__}: {exc}") from exc


def export_trained(trainer: Trainer, result: TrainResult, directory: Path, check_users: int = 64) -> Path:
    """Export a finished trainer's best model, after checking that the program scores as the model does."""
    if trainer.model is None:
        raise ArtifactError("the trainer has not been fit")
    model = trainer.model.eval()
    max_len = trainer.plan.max_len
    program = export_scorer(model, trainer.prepared.num_items, max_len)
    sequences = trainer.sequences
    users = np.array([u for u in range(min(check_users, sequences.num_users)) if len(sequences.history(u, "test"))])
    histories = [sequences.history(int(u), "test") for u in users]
    with torch.no_grad():
        expected = ScoringModule(model)(*scoring_inputs(users, histories, max_len))
        exported = program.module()(*scoring_inputs(users, histories, max_len))
    if not torch.allclose(expected, exported, rtol=1e-4, atol=1e-4):
        gap = float((expected - exported).abs().max())
        raise ArtifactError(f"the exported program scores differently from the model (max gap {gap:.3g})")
    metrics = {"valid": result.valid, "test": result.test}
    manifest = ArtifactManifest(result.candidate, result.content_hash, result.dataset, trainer.prepared.num_items,
                                max_len, metrics)  # fmt: skip
    return write_artifact(directory, program, manifest)


def write_artifact(directory: Path, program: torch.export.ExportedProgram, manifest: ArtifactManifest) -> Path:
    """Write the program and its manifest into ``directory`` (replaced atomically when it exists)."""
    staging = Path(tempfile.mkdtemp(prefix=".artifact-", dir=directory.parent if directory.parent.exists() else None))
    torch.export.save(program, staging / PROGRAM_FILE)
    (staging / MANIFEST_FILE).write_text(json.dumps(asdict(manifest), indent=2) + "\n")
    if directory.exists():
        shutil.rmtree(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(str(staging), directory)
    return directory
