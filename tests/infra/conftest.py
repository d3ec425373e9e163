"""Fixtures over the infra files: the Deployment, its container, the Dockerfile's runtime image."""

from __future__ import annotations

from typing import Any

import pytest

from tests.infra.infra_files import DOCKERFILE, Stage, find, instructions, lineage, parse_dockerfile


@pytest.fixture(scope="session")
def deployment() -> dict[str, Any]:
    return find("Deployment")


@pytest.fixture(scope="session")
def container(deployment) -> dict[str, Any]:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


@pytest.fixture(scope="session")
def dockerfile() -> list[Stage]:
    return parse_dockerfile(DOCKERFILE.read_text())[1]


@pytest.fixture(scope="session")
def runtime(dockerfile) -> list[Stage]:
    """The image `docker build` makes without --target (the last stage), with the stages under it."""
    return lineage(dockerfile, dockerfile[-1])


@pytest.fixture(scope="session")
def exposed_port(runtime) -> int:
    ports = instructions(runtime, "EXPOSE")
    assert len(ports) == 1, f"expected one EXPOSE, got {ports}"
    return int(ports[0].split("/")[0])
