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
    items = client.post("/recommend", json={"history": ["1", "not-an-item"]})
    assert items.status_code == 422 and "not-an-item" in items.json()["detail"]
    assert client.post("/recommend", json={"history": []}).status_code == 422


def test_health_models_and_prometheus_metrics(live):
    _, client, version = live
    assert client.get("/health").json() == {"status": "ok", "arms": {"production": version}}
    models = client.get("/models").json()
    assert models["production_version"] == version and models["arms"]["production"]["candidate"] == "sasrec_ce"
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
