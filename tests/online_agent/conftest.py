"""Two exported models the simulated users tell apart, and registry set-up as the loops would do it."""

from __future__ import annotations

import pytest
import torch

from recsys.artifacts import ArtifactManifest, export_scorer, write_artifact
from recsys.candidate import load_candidate
from recsys.trainer import Trainer
from serving.registry import Registry


@pytest.fixture(scope="package")
def untrained(prepared_small, seeds_dir, tmp_path_factory):
    """sasrec_ce with its initial random weights: a recommender the simulated users dislike.

    The weights are seeded: drawn from the global generator they would depend on the tests run before.
    """
    candidate = load_candidate(seeds_dir / "sasrec_ce")
    trainer = Trainer(candidate, prepared_small)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = candidate.function("model", "build_model")(trainer.spec)
    manifest = ArtifactManifest("untrained", "untrained", prepared_small.name, prepared_small.num_items, 50)
    program = export_scorer(model, prepared_small.num_items, 50)
    return write_artifact(tmp_path_factory.mktemp("untrained") / "model", program, manifest)


class MostPopular(torch.nn.Module):
    """Scores every item by its training popularity: far better than random weights for the simulated users."""

    def __init__(self, popularity: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("log_popularity", torch.log1p(popularity.float()))

    def score(self, batch):
        return self.log_popularity.expand(batch.users.shape[0], -1) + 0.0 * batch.history.values().float().sum()


@pytest.fixture(scope="package")
def trained(prepared_small, seeds_dir, tmp_path_factory):
    trainer = Trainer(load_candidate(seeds_dir / "sasrec_ce"), prepared_small)
    model = MostPopular(trainer.spec.item_popularity)
    manifest = ArtifactManifest("most_popular", "most_popular", prepared_small.name, prepared_small.num_items, 50)
    program = export_scorer(model, prepared_small.num_items, 50)
    return write_artifact(tmp_path_factory.mktemp("popular") / "model", program, manifest)


def register(registry: Registry, artifact, name: str, production: bool = False) -> int:
    version = registry.register(candidate_id=name, content_hash=name, artifact_uri=str(artifact), metrics={},
                                actor="offline-agent", reason="trained")  # fmt: skip
    if production:
        for state in ("queued", "experimenting", "awaiting_approval"):
            registry.transition(version.id, state, actor="test", reason="bootstrap")
        registry.approve(version.id, actor="reviewer", reason="bootstrap")
    else:
        registry.transition(version.id, "queued", actor="offline-agent", reason="finished offline")
    return version.id
