"""Loading model artifacts for serving: the exported ``torch.export`` program and its manifest.

The server never imports a candidate's code, nor the trainer: an artifact (``recsys.artifacts``
describes its format) is a folder, local or any fsspec URL, holding the program and its manifest.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import fsspec
import numpy as np
import torch
from fsspec.implementations.local import LocalFileSystem

from recsys.artifacts import MANIFEST_FILE, MIN_WIDTH, PROGRAM_FILE, ArtifactError, ArtifactManifest, scoring_inputs


def _local_copy(uri: str) -> Path:
    """A local folder holding the artifact at ``uri`` (fetched through fsspec when remote)."""
    filesystem, path = fsspec.core.url_to_fs(uri)
    if isinstance(filesystem, LocalFileSystem):
        return Path(path)
    local = Path(tempfile.mkdtemp(prefix="evorec-artifact-"))
    for name in (PROGRAM_FILE, MANIFEST_FILE):
        filesystem.get(f"{path.rstrip('/')}/{name}", str(local / name))
    return local


@dataclass
class LoadedModel:
    """An artifact ready to score: the exported program and its manifest."""

    manifest: ArtifactManifest
    program: torch.nn.Module = field(repr=False)

    @torch.no_grad()
    def scores(self, users: np.ndarray, histories: list[np.ndarray]) -> torch.Tensor:
        """``B X (N+1)`` scores (column 0 is padding) for the users' histories."""
        if any(len(h) == 0 for h in histories):
            raise ArtifactError("every history needs at least one item")
        count = len(histories)
        if count < MIN_WIDTH:  # a lone row: a copy of it keeps every dimension above the specialised sizes
            users, histories = np.concatenate([users, users[:1]]), [*histories, histories[0]]
        return self.program(*scoring_inputs(users, histories, self.manifest.max_len))[:count].float()


def load_artifact(uri: str) -> LoadedModel:
    """Load an artifact folder (local path or fsspec URL); a clear error names what is missing."""
    folder = _local_copy(uri)
    for name in (PROGRAM_FILE, MANIFEST_FILE):
        if not (folder / name).exists():
            raise ArtifactError(f"{uri}: {name} is missing; is this an evorec model artifact?")
    try:
        manifest = ArtifactManifest(**json.loads((folder / MANIFEST_FILE).read_text()))
    except (TypeError, json.JSONDecodeError) as exc:
        raise ArtifactError(f"{uri}/{MANIFEST_FILE}: not a valid manifest: {exc}") from exc
    program = torch.export.load(folder / PROGRAM_FILE).module()
    return LoadedModel(manifest, program)
