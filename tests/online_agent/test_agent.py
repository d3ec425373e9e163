"""The online agent on a real registry: experiments on queued versions, reports, and the approval gate."""

from __future__ import annotations

import pytest
import torch

from online_agent.agent import ACTOR, OnlineAgentConfig, process_queue
from recsys.candidate import load_candidate
from recsys.trainer import Trainer
from serving.artifacts import ArtifactManifest, export_scorer, write_artifact
from serving.registry import Registry

pytestmark = pytest.mark.integration
# the popularity arm trades diversity and coverage for retention; a busy test machine makes latency noisy
CONFIG = dict(users=1500, days=8, pre_period_days=2, diversity_margin=0.10, coverage_margin=1.0, latency_margin=2.0)


@pytest.fixture(scope="module")
def untrained(prepared_small, seeds_dir, tmp_path_factory):
    """sasrec_ce with its initial random weights: a recommender the simulated users dislike."""
    candidate = load_candidate(seeds_dir / "sasrec_ce")
    trainer = Trainer(candidate, prepared_small)
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


@pytest.fixture(scope="module")
def trained(prepared_small, seeds_dir, tmp_path_factory):
    trainer = Trainer(load_candidate(seeds_dir / "sasrec_ce"), prepared_small)
    model = MostPopular(trainer.spec.item_popularity)
    manifest = ArtifactManifest("most_popular", "most_popular", prepared_small.name, prepared_small.num_items, 50)
    program = export_scorer(model, prepared_small.num_items, 50)
    return write_artifact(tmp_path_factory.mktemp("popular") / "model", program, manifest)


def _register(registry: Registry, artifact, name: str, production: bool = False) -> int:
    version = registry.register(candidate_id=name, content_hash=name, artifact_uri=str(artifact), metrics={},
                                actor="offline-agent", reason="trained")  # fmt: skip
    if production:
        for state in ("queued", "experimenting", "awaiting_approval"):
            registry.transition(version.id, state, actor="test", reason="bootstrap")
        registry.approve(version.id, actor="reviewer", reason="bootstrap")
    else:
        registry.transition(version.id, "queued", actor="offline-agent", reason="finished offline")
    return version.id


def test_a_better_model_waits_for_approval_and_a_copy_of_production_is_rejected(
    prepared_small, trained, untrained, tmp_path
):
    with Registry(f"sqlite:///{tmp_path / 'registry.db'}") as registry:
        production = _register(registry, untrained, "untrained", production=True)
        better = _register(registry, trained, "sasrec_ce")
        same = _register(registry, untrained, "untrained-again")
        config = OnlineAgentConfig(runs_dir=str(tmp_path / "runs"), **CONFIG)
        outcomes = {o.version: o for o in process_queue(config, registry, prepared_small)}
        assert outcomes[better].state == "awaiting_approval", outcomes[better].reason
        assert outcomes[same].state == "rejected" and "Do not ship" in outcomes[same].reason
        assert registry.get(better).state == "awaiting_approval" and registry.production().id == production
        assert outcomes[better].report is not None and outcomes[better].report.exists()
        moves = [(e.to_state, e.actor) for e in registry.audit(better)]
        assert ("experimenting", ACTOR) in moves and ("awaiting_approval", ACTOR) in moves
        assert str(outcomes[better].report) in registry.audit(better)[-1].reason
        assert process_queue(config, registry, prepared_small) == []  # nothing left in the queue


def test_only_a_named_policy_promotes_without_a_person_and_broken_artifacts_fail(
    prepared_small, trained, untrained, tmp_path
):
    with Registry(f"sqlite:///{tmp_path / 'registry.db'}") as registry:
        _register(registry, untrained, "untrained", production=True)
        broken = _register(registry, tmp_path / "nowhere", "broken")
        better = _register(registry, trained, "sasrec_ce")
        config = OnlineAgentConfig(runs_dir=str(tmp_path / "runs"), auto_approval="simulated-wins", **CONFIG)
        outcomes = {o.version: o for o in process_queue(config, registry, prepared_small)}
        assert outcomes[broken].state == "failed" and "model.pt2 is missing" in outcomes[broken].reason
        assert registry.get(broken).state == "failed"
        assert outcomes[better].state == "production" and registry.production().id == better
        assert registry.audit(better)[-2].actor == "policy:simulated-wins"
