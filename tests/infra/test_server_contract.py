"""The probes, the scrape annotations and the image's HEALTHCHECK name paths the server really
serves, and each path behaves as its probe needs when no model is in production yet."""

from __future__ import annotations

import re
from urllib.parse import urlparse

import pytest
from fastapi.testclient import TestClient

from serving.registry import Registry
from serving.server import ServerConfig, create_app
from tests.infra.infra_files import instructions


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    """The real app over an empty registry; /health and /metrics never consult the catalogue."""
    folder = tmp_path_factory.mktemp("registry")
    with Registry(f"sqlite:///{folder / 'registry.db'}") as registry:
        app = create_app(ServerConfig(), None, registry)
        with TestClient(app) as test_client:
            yield test_client


def served_paths(client: TestClient) -> set[str]:
    return {route.path for route in client.app.routes}


def probe(container: dict, kind: str) -> dict:
    return container[kind]["httpGet"]


@pytest.mark.parametrize("kind", ["startupProbe", "readinessProbe", "livenessProbe"])
def test_each_probe_asks_a_served_path_on_the_server_port(client, container, kind):
    get = probe(container, kind)
    assert get["path"] in served_paths(client)
    assert get["port"] in {p["name"] for p in container["ports"]} | {p["containerPort"] for p in container["ports"]}


def test_readiness_waits_for_a_model_while_startup_and_liveness_do_not(client, container):
    """Before the first promotion the pod must stay up (no restarts) but get no traffic."""
    assert client.get(probe(container, "readinessProbe")["path"]).status_code == 503
    assert client.get(probe(container, "startupProbe")["path"]).status_code == 200
    assert client.get(probe(container, "livenessProbe")["path"]).status_code == 200


def test_prometheus_scrapes_the_metrics_path_on_the_container_port(client, deployment, container):
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/path"] in served_paths(client)
    assert int(annotations["prometheus.io/port"]) == container["ports"][0]["containerPort"]
    scraped = client.get(annotations["prometheus.io/path"])
    assert scraped.status_code == 200 and "evorec_request_seconds" in scraped.text


def test_the_container_port_is_the_images_exposed_port_and_default_command(container, runtime, exposed_port):
    assert container["ports"][0]["containerPort"] == exposed_port
    command = instructions(runtime, "CMD")[-1]
    assert re.search(rf'"--port", "{exposed_port}"', command) and '"--host", "0.0.0.0"' in command


def test_the_image_healthcheck_asks_the_health_path_on_the_exposed_port(client, runtime, exposed_port):
    healthcheck = instructions(runtime, "HEALTHCHECK")
    assert len(healthcheck) == 1
    url = urlparse(re.search(r"http://[^'\" ]+", healthcheck[0]).group(0))
    assert url.port == exposed_port
    assert url.path in served_paths(client)
    assert client.get(url.path).status_code == 503, "the HEALTHCHECK should report whether a model is serving"
