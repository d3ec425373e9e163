"""The online agent on a real registry: experiments on queued versions, reports, and the approval gate."""

from __future__ import annotations

import json
import re
import shutil

import pytest

from online_agent.agent import ACTOR, OnlineAgentConfig, process_queue
from serving.registry import Registry
from tests.online_agent.conftest import register

pytestmark = pytest.mark.integration
# the popularity arm trades diversity and coverage for retention; a busy test machine makes latency noisy
CONFIG = dict(users=1500, days=8, pre_period_days=2, diversity_margin=0.10, coverage_margin=1.0, latency_margin=2.0)


def test_a_better_model_waits_for_approval_and_a_copy_of_production_is_rejected(
    prepared_small, trained, untrained, tmp_path
):
    with Registry(f"sqlite:///{tmp_path / 'registry.db'}") as registry:
        production = register(registry, untrained, "untrained", production=True)
        better = register(registry, trained, "sasrec_ce")
        same = register(registry, untrained, "untrained-again")
        config = OnlineAgentConfig(runs_dir=str(tmp_path / "runs"), **CONFIG)
        outcomes = {o.version: o for o in process_queue(config, registry, prepared_small)}
        assert outcomes[better].state == "awaiting_approval", outcomes[better].reason
        assert outcomes[same].state == "rejected" and "Do not ship" in outcomes[same].reason, outcomes[same].reason
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
        register(registry, untrained, "untrained", production=True)
        broken = register(registry, tmp_path / "nowhere", "broken")
        better = register(registry, trained, "sasrec_ce")
        config = OnlineAgentConfig(runs_dir=str(tmp_path / "runs"), auto_approval="simulated-wins", **CONFIG)
        outcomes = {o.version: o for o in process_queue(config, registry, prepared_small)}
        assert outcomes[broken].state == "failed" and "model.pt2 is missing" in outcomes[broken].reason
        assert registry.get(broken).state == "failed"
        assert outcomes[better].state == "production" and registry.production().id == better
        assert registry.audit(better)[-2].actor == "policy:simulated-wins"


def test_the_interleaving_prescreen_rejects_a_worse_version_without_an_ab_test_and_passes_a_better_one_on(
    prepared_small, trained, untrained, tmp_path
):
    runs = tmp_path / "runs"
    config = OnlineAgentConfig(runs_dir=str(runs), prescreen="interleaving", prescreen_users=1000, **CONFIG)
    with Registry(f"sqlite:///{tmp_path / 'worse.db'}") as registry:
        register(registry, trained, "most_popular", production=True)
        worse = register(registry, untrained, "untrained")
        [outcome] = process_queue(config, registry, prepared_small)
        assert outcome.state == "rejected" and outcome.report is None
        assert not runs.exists()  # no experiment folder: no A/B test was spent on it
        audit = registry.audit(worse)
        assert [e.to_state for e in audit][-2:] == ["experimenting", "rejected"] and audit[-1].actor == ACTOR
        assert "interleaving pre-screen" in audit[-2].reason
        assert "without an A/B test" in audit[-1].reason and "team-draft interleaving" in audit[-1].reason
        assert re.search(r"(\d+) preferred the candidate, (\d+) production.*sign test p=", audit[-1].reason)
    with Registry(f"sqlite:///{tmp_path / 'better.db'}") as registry:
        register(registry, untrained, "untrained", production=True)
        better = register(registry, trained, "most_popular")
        [outcome] = process_queue(config, registry, prepared_small)
        assert outcome.state == "awaiting_approval", outcome.reason
        screen = json.loads((outcome.report.parent / "interleaving.json").read_text())
        assert screen["wins"] > screen["losses"] and screen["significant"] and not screen["candidate_loses"]
        assert "pre-screen passed: team-draft interleaving" in registry.audit(better)[-1].reason


def test_an_agent_that_requires_a_calibrated_simulator_leaves_versions_queued_below_the_bar(
    prepared_small, trained, untrained, tmp_path
):
    from ab_testing.fidelity import CACHE_NAME, SimulatorFidelity
    from recsys.data.prepared import PreparedDataset

    prepared = PreparedDataset.open(shutil.copytree(prepared_small.path, tmp_path / "prepared"))
    below = SimulatorFidelity(dataset=prepared.name, source="quick check", policies=4,
                              spearman={"active_days": 0.2, "satisfaction": 0.4})  # fmt: skip
    (prepared.path / CACHE_NAME).write_text(below.model_dump_json())
    with Registry(f"sqlite:///{tmp_path / 'registry.db'}") as registry:
        register(registry, untrained, "untrained", production=True)
        candidate = register(registry, trained, "sasrec_ce")
        config = OnlineAgentConfig(runs_dir=str(tmp_path / "runs"), require_calibrated_simulator=True, **CONFIG)
        [outcome] = process_queue(config, registry, prepared)
        assert outcome.state == "queued" and outcome.report is None
        assert "below the fidelity bar" in outcome.reason and "active_days 0.20 < 0.8" in outcome.reason
        assert registry.get(candidate).state == "queued" and not (tmp_path / "runs").exists()
