"""Experiment arms served by a real uvicorn server over HTTP: same users as in process, real latency, clear errors."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest
from prometheus_client.parser import text_string_to_metric_families
from pydantic import ValidationError
from typer.testing import CliRunner

from ab_testing.experiment import ArmPlan, ExperimentError, ExperimentPlan, ExperimentRun, run_experiment
from ab_testing.http_arms import RecommendationClient, server_config
from evorec.cli import app as cli
from recsys.event_log import EventLog
from serving.artifacts import load_artifact
from serving.catalog import ServingCatalog
from serving.registry import Registry
from serving.server import ServerConfig, create_app
from tests.serving.conftest import LiveServer, free_port, promote

pytestmark = pytest.mark.integration


@pytest.fixture
def registry(tmp_path: Path, artifacts: dict[str, Path]) -> Iterator[tuple[str, Registry, int, int]]:
    """mf_bpr (user-id based) in production as the control, sasrec_ce registered as the treatment."""
    url = f"sqlite:///{tmp_path / 'registry.db'}"
    with Registry(url) as opened:
        control = promote(opened, artifacts["mf_bpr"], "mf_bpr")
        treatment = opened.register(candidate_id="sasrec_ce", content_hash="sasrec_ce", metrics={}, actor="test",
                                    artifact_uri=str(artifacts["sasrec_ce"]), reason="trained")  # fmt: skip
        yield url, opened, control, treatment.id


@pytest.fixture(scope="module")
def catalog(prepared_small) -> ServingCatalog:
    return ServingCatalog.build(prepared_small)


def _plan(prepared_small, treatment: int, **changes: object) -> ExperimentPlan:
    arms = (ArmPlan(name="control"), ArmPlan(name="treatment", version=treatment))
    settings = dict(name="http-1", dataset=str(prepared_small.path), arms=arms, users=300, days=3, pre_period_days=1)
    return ExperimentPlan.model_validate({**settings, **changes})


def _server_metrics(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


@pytest.mark.slow
def test_arms_over_http_give_every_user_what_in_process_arms_give(
    prepared_small, artifacts, registry, catalog, tmp_path
):
    url, store, control, treatment = registry
    plan = _plan(prepared_small, treatment)
    models = {
        "control": load_artifact(str(artifacts["mf_bpr"])),
        "treatment": load_artifact(str(artifacts["sasrec_ce"])),
    }
    local = run_experiment(plan, prepared_small, models, tmp_path / "local")
    app = create_app(server_config(plan, reload_seconds=60), catalog, store)
    with LiveServer(app, free_port()) as server:
        config = tmp_path / "plan.yaml"
        config.write_text("experiment: " + plan.model_dump_json())  # JSON is YAML
        options = ["--registry", url, "--runs", str(tmp_path / "runs"), "--data-dir", str(tmp_path / "data")]
        ran = CliRunner().invoke(cli, ["experiment", "run", "-c", str(config), "--server-url", server.url, *options])
        assert ran.exit_code == 0, ran.output + repr(ran.exception)
        assert f"arms served by {server.url}" in ran.output
        metrics = _server_metrics(httpx.get(f"{server.url}/metrics").text)
    remote = ExperimentRun.load(tmp_path / "runs" / "http-1")
    assert remote.plan.server_url == server.url
    # the same slates make the same simulated behaviour, user by user and day by day
    pd.testing.assert_frame_equal(local.users, remote.users)
    np.testing.assert_array_equal(local.visits, remote.visits)
    local_events, remote_events = (EventLog.read(run.folder / "events.parquet") for run in (local, remote))
    pd.testing.assert_frame_equal(local_events, remote_events)
    # every experiment slate was one request to the arm's version, timed from the client's side of the wire;
    # in process, a user is scored again only when their history grew
    versions = {"control": control, "treatment": treatment}
    client_seconds = 0.0
    for arm, version in versions.items():
        served, measured = local.guardrails[arm], remote.guardrails[arm]
        assert measured["requests"] > served["requests"] > 50
        assert measured["coverage"] == served["coverage"]
        labels = (("arm", arm), ("model_version", str(version)), ("status", "ok"))
        assert metrics[("evorec_requests_total", labels)] == measured["requests"]
        assert measured["p50_latency_ms"] > served["p50_latency_ms"]
        client_seconds += measured["requests"] * measured["mean_latency_ms"] / 1000
    server_seconds = metrics[("evorec_request_seconds_sum", (("endpoint", "/recommend"),))]
    assert client_seconds >= server_seconds > 0  # a round trip holds the server's own time and more


def test_a_server_whose_experiment_is_not_the_plans_fails_the_run_with_the_reason(
    prepared_small, artifacts, registry, catalog, tmp_path
):
    _, store, control, treatment = registry
    plan = _plan(prepared_small, treatment, users=100, days=1, pre_period_days=0)
    models = {"control": load_artifact(str(artifacts["mf_bpr"]))}
    versions = {"control": control, "treatment": treatment}
    resalted = create_app(server_config(plan.model_copy(update={"salt": "another"})), catalog, store)
    with LiveServer(resalted, free_port()) as server:
        over_http = plan.model_copy(update={"server_url": server.url})
        with pytest.raises(ExperimentError) as error:
            run_experiment(over_http, prepared_small, models, tmp_path / "resalted", versions=versions)
    message = str(error.value)
    assert server.url in message and "but plan http-1 assigns it to" in message
    assert "(salt, arms, weights) is not the plan's (salt 'http-1')" in message
    production_only = create_app(ServerConfig(), catalog, store)
    with LiveServer(production_only, free_port()) as server:
        over_http = plan.model_copy(update={"server_url": server.url})
        with pytest.raises(ExperimentError, match=r"serves the arms \['production'\] but plan http-1 has"):
            run_experiment(over_http, prepared_small, models, tmp_path / "production-only", versions=versions)
    stale = create_app(server_config(plan, versions={"treatment": control}), catalog, store)
    with LiveServer(stale, free_port()) as server:
        over_http = plan.model_copy(update={"server_url": server.url})
        with pytest.raises(ExperimentError, match=f"treatment: v{control} instead of v{treatment}"):
            run_experiment(over_http, prepared_small, models, tmp_path / "stale", versions=versions)


def test_a_server_that_refuses_or_is_not_there_is_named_with_its_status(tmp_path, catalog):
    with Registry(f"sqlite:///{tmp_path / 'empty.db'}") as empty:
        app = create_app(ServerConfig(), catalog, empty)  # nothing in production: every request is a 503
        with LiveServer(app, free_port()) as server, RecommendationClient(server.url, backoff=0.01) as client:
            with pytest.raises(ExperimentError, match=rf"{server.url} answered GET /health with 503 no model"):
                client.deployment()
            with pytest.raises(ExperimentError, match=rf"{server.url} answered POST /recommend with 503"):
                client.recommend_all([{"user_id": "sim-1", "history": ["1"], "k": 3}])
            stranger = {"user_id": "sim-1", "source_user_id": "nobody", "history": ["1"], "k": 3}
            with pytest.raises(ExperimentError, match=r"refused POST /recommend: 422 unknown source user 'nobody'"):
                client.recommend_all([stranger])  # a 4xx is not worth another try
    nowhere = f"http://127.0.0.1:{free_port()}"
    unreachable = pytest.raises(ExperimentError, match=rf"cannot reach the recommendation server at {nowhere}.*4 tries")
    with RecommendationClient(nowhere, backoff=0.01) as client, unreachable:
        client.deployment()


def test_a_plan_takes_only_an_http_server_url():
    arms = (ArmPlan(name="control"), ArmPlan(name="treatment"))
    plan = ExperimentPlan(name="p", arms=arms, server_url="http://127.0.0.1:8000/")
    assert plan.server_url == "http://127.0.0.1:8000"
    assert ExperimentPlan(name="p", arms=arms, server_url="https://recs.example.com/api").server_url
    for wrong in ("ftp://127.0.0.1", "127.0.0.1:8000", "http://", "http://host:port", "http://host/?arm=a"):
        with pytest.raises(ValidationError, match="server_url must be an http"):
            ExperimentPlan(name="p", arms=arms, server_url=wrong)
