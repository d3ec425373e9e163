"""The recommendation server over real HTTP: answers, errors, metrics, arms, and a hot swap under load."""

from __future__ import annotations

import threading
import time
from collections import Counter

import httpx
import numpy as np
import pytest
import torch

from recsys.artifacts import ArtifactError
from serving.artifacts import load_artifact
from serving.server import ExperimentArm, ServerConfig, create_app
from tests.serving.conftest import LiveServer, free_port, promote

pytestmark = pytest.mark.integration


def test_exported_programs_score_like_the_models_and_load_through_fsspec(artifacts, catalog):
    import fsspec

    model = load_artifact(str(artifacts["sasrec_ce"]))
    user, history = catalog.history("1")
    lone = model.scores(np.array([user]), [history[:1]])  # one user, one item: the padded path
    pair = model.scores(np.array([user, user]), [history[:1], history])
    assert lone.shape == (1, catalog.num_items + 1) and torch.allclose(lone[0], pair[0], atol=1e-5)
    memory = fsspec.filesystem("memory")
    for path in artifacts["mf_bpr"].iterdir():
        memory.pipe(f"/models/mf/{path.name}", path.read_bytes())
    remote = load_artifact("memory://models/mf")
    assert remote.manifest.candidate == "mf_bpr" and remote.scores(np.array([0]), [history]).shape[0] == 1
    with pytest.raises(ArtifactError, match=r"model\.pt2 is missing"):
        load_artifact(str(artifacts["mf_bpr"].parent))


def test_recommendations_for_known_and_new_users(live, catalog):
    _, client, version = live
    answer = client.get("/recommend", params={"user_id": "1", "k": 5})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["model_version"] == version and body["arm"] == "production" and len(body["items"]) == 5
    _, history = catalog.history("1")
    seen = {str(catalog.item_ids[i]) for i in history}
    assert not seen & {item["item_id"] for item in body["items"]}
    assert [item["score"] for item in body["items"]] == sorted((item["score"] for item in body["items"]), reverse=True)
    fresh = client.post("/recommend", json={"history": ["1", "2", "3"], "k": 3})
    assert fresh.status_code == 200 and len(fresh.json()["items"]) == 3
    assert not {"1", "2", "3"} & {item["item_id"] for item in fresh.json()["items"]}


def test_bad_requests_get_a_4xx_that_says_what_is_wrong(live):
    _, client, _ = live
    unknown = client.get("/recommend", params={"user_id": "no-such-user"})
    assert unknown.status_code == 404 and "POST /recommend" in unknown.json()["detail"]
    assert client.get("/recommend", params={"user_id": "1", "k": 0}).status_code == 422
    assert client.get("/recommend").status_code == 422
    only_unknown = client.post("/recommend", json={"history": ["not-an-item"]})
    assert only_unknown.status_code == 422 and "none of the history's items" in only_unknown.json()["detail"]
    assert client.post("/recommend", json={"history": []}).status_code == 422
    assert client.post("/recommend", json={"history": [True]}).status_code == 422  # a bool is no id


def test_ids_as_the_client_sends_them_and_unknown_items_ignored_with_a_warning(live, catalog):
    _, client, _ = live
    _, history = catalog.history("1")
    ids = [str(catalog.item_ids[i]) for i in history[:3]]
    as_text = client.post("/recommend", json={"history": ids, "k": 5, "user_id": "u-1"}).json()
    as_numbers = client.post("/recommend", json={"history": [int(i) for i in ids], "k": 5, "user_id": 7}).json()
    assert as_numbers["items"] == as_text["items"] and as_numbers["user_id"] == "7"
    assert as_text["warnings"] == []
    mixed = client.post("/recommend", json={"history": [*ids, "not-an-item", 99_999_999], "k": 5})
    assert mixed.status_code == 200, mixed.text
    assert mixed.json()["items"] == as_text["items"]
    [warning] = mixed.json()["warnings"]
    assert "ignored 2" in warning and "not-an-item" in warning and "99999999" in warning
    body = client.get("/openapi.json").json()["components"]["schemas"]["RecommendBody"]  # what /docs shows
    assert {"type": "integer"} in body["properties"]["history"]["items"]["anyOf"] and body["examples"]


def test_unknown_items_are_refused_when_the_server_says_so(registry, catalog, artifacts):
    promote(registry, artifacts["sasrec_ce"], "sasrec_ce")
    app = create_app(ServerConfig(reload_seconds=0.2, unknown_items="refuse"), catalog, registry)
    with LiveServer(app, free_port()) as server, httpx.Client(base_url=server.url, timeout=30) as client:
        answer = client.post("/recommend", json={"history": ["1", "not-an-item"]})
        assert answer.status_code == 422 and "not-an-item" in answer.json()["detail"]


def test_large_bodies_are_refused_and_errors_never_echo_large_input(live):
    _, client, _ = live
    huge = "x" * 5_000_000
    too_big = client.post("/recommend", json={"history": ["1"], "user_id": huge})
    assert too_big.status_code == 413 and len(too_big.content) < 200

    def chunks():  # no Content-Length: the cap holds while the body is read
        for _ in range(50):
            yield b" " * 100_000

    streamed = client.post("/recommend", content=chunks(), headers={"content-type": "application/json"})
    assert streamed.status_code == 413
    long_id = client.post("/recommend", json={"history": ["1"], "user_id": "y" * 300_000})
    assert long_id.status_code == 422 and len(long_id.content) < 1000 and "at most 200" in long_id.text
    many = client.post("/recommend", json={"history": ["z" * 150] * 5000})
    assert many.status_code == 422 and len(many.content) < 2000


def test_health_models_and_prometheus_metrics(live, registry):
    _, client, version = live
    assert client.get("/health").json() == {"status": "ok", "arms": {"production": version}}
    models = client.get("/models").json()
    assert models["production_version"] == version and models["arms"]["production"]["candidate"] == "sasrec_ce"
    assert models["arms"]["production"]["content_hash"] == registry.get(version).content_hash
    client.get("/recommend", params={"user_id": "1"})
    metrics = client.get("/metrics").text
    assert f'evorec_requests_total{{arm="production",model_version="{version}",status="ok"}}' in metrics
    assert 'evorec_request_seconds_bucket{endpoint="/recommend"' in metrics and "evorec_batch_size_count" in metrics


def test_no_model_in_production_is_a_503_with_the_way_out(registry, catalog):
    app = create_app(ServerConfig(reload_seconds=0.2), catalog, registry)
    with LiveServer(app, free_port()) as server, httpx.Client(base_url=server.url) as client:
        answer = client.get("/recommend", params={"user_id": "1"})
        assert answer.status_code == 503 and "evorec promote approve" in answer.json()["detail"]
        assert client.get("/health").status_code == 503


def test_experiment_arms_split_users_by_salted_hash_and_stay_stable(registry, catalog, artifacts):
    promote(registry, artifacts["sasrec_ce"], "sasrec_ce")
    treatment = promote(registry, artifacts["mf_bpr"], "mf_bpr")  # now production; the older one is retired
    control = registry.versions(state="retired")[0].id
    arms = (ExperimentArm(name="control", version=control), ExperimentArm(name="treatment", version=treatment))
    app = create_app(ServerConfig(arms=arms, salt="exp-1"), catalog, registry)
    with LiveServer(app, free_port()) as server, httpx.Client(base_url=server.url) as client:
        users = sorted(catalog.user_index)[:40]
        first = {u: client.get("/recommend", params={"user_id": u}).json()["arm"] for u in users}
        again = {u: client.get("/recommend", params={"user_id": u}).json()["arm"] for u in users}
    assert first == again
    counts = Counter(first.values())
    assert set(counts) == {"control", "treatment"} and min(counts.values()) >= 10


def test_a_promotion_under_load_is_hot_swapped_without_a_failed_request(live, registry, artifacts):
    _, client, old = live
    statuses: list[int] = []
    versions: list[int] = []
    stop = threading.Event()

    def hammer() -> None:
        with httpx.Client(base_url=client.base_url, timeout=30) as own:
            while not stop.is_set():
                answer = own.get("/recommend", params={"user_id": "2"})
                statuses.append(answer.status_code)
                if answer.status_code == 200:
                    versions.append(answer.json()["model_version"])

    workers = [threading.Thread(target=hammer) for _ in range(4)]
    for worker in workers:
        worker.start()
    time.sleep(0.5)
    new = promote(registry, artifacts["mf_bpr"], "mf_bpr")
    deadline = time.monotonic() + 30
    while (not versions or versions[-1] != new) and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(0.5)
    stop.set()
    for worker in workers:
        worker.join()
    assert set(statuses) == {200}, Counter(statuses)
    assert versions[0] == old and versions[-1] == new
    assert client.get("/health").json()["arms"]["production"] == new
