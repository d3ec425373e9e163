"""A real registry (SQLite, and PostgreSQL when installed) and a live uvicorn server."""

from __future__ import annotations

import importlib.util
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn

from serving.catalog import ServingCatalog
from serving.registry import Registry
from serving.server import ServerConfig, create_app


def promote(registry: Registry, artifact: Path, candidate: str) -> int:
    """Register an artifact and walk it through the states to production, as the loops would."""
    version = registry.register(
        candidate_id=candidate, content_hash=candidate, artifact_uri=str(artifact), metrics={}, actor="test",
        reason="trained in a test",
    )  # fmt: skip
    for state in ("queued", "experimenting", "awaiting_approval"):
        registry.transition(version.id, state, actor="test", reason=f"to {state}")
    registry.approve(version.id, actor="reviewer", reason="looks good")
    return version.id


class LiveServer:
    def __init__(self, app, port: int) -> None:
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.url = f"http://127.0.0.1:{port}"

    def __enter__(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 60
        while not self.server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("the server did not start")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def registry(tmp_path) -> Iterator[Registry]:
    with Registry(f"sqlite:///{tmp_path / 'registry.db'}") as opened:
        yield opened


@pytest.fixture(scope="session")
def catalog(prepared_small) -> ServingCatalog:
    return ServingCatalog.build(prepared_small)


@pytest.fixture
def live(registry, catalog, artifacts) -> Iterator[tuple[LiveServer, httpx.Client, int]]:
    """A server with sasrec_ce in production, polling the registry every 0.2 s."""
    version = promote(registry, artifacts["sasrec_ce"], "sasrec_ce")
    app = create_app(ServerConfig(reload_seconds=0.2), catalog, registry)
    with LiveServer(app, free_port()) as server, httpx.Client(base_url=server.url, timeout=30) as client:
        yield server, client, version


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    """A throwaway PostgreSQL server (initdb + pg_ctl), when the binaries and psycopg are installed."""
    initdb, pg_ctl = shutil.which("initdb"), shutil.which("pg_ctl")
    if not initdb or not pg_ctl or importlib.util.find_spec("psycopg") is None:
        pytest.skip("PostgreSQL server binaries or psycopg are not installed")
    folder = Path(tempfile.mkdtemp(prefix="evorec-postgres-"))  # outside pytest's root-only folder
    as_owner: list[str] = []
    if os.geteuid() == 0:  # PostgreSQL refuses to run as root
        shutil.chown(folder, "postgres")
        as_owner = ["runuser", "-u", "postgres", "--"]
    data, port = folder / "data", free_port()
    subprocess.run([*as_owner, initdb, "-D", str(data), "-A", "trust", "-U", "evorec"], check=True, capture_output=True)
    options = f"-p {port} -k {folder} -c listen_addresses=127.0.0.1"
    start = [*as_owner, pg_ctl, "-D", str(data), "-o", options, "-l", str(folder / "log"), "-w", "start"]
    subprocess.run(start, check=True, capture_output=True)
    yield f"postgresql+psycopg://evorec@127.0.0.1:{port}"
    subprocess.run([*as_owner, pg_ctl, "-D", str(data), "-m", "fast", "-w", "stop"], capture_output=True)
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request, tmp_path) -> Callable[[str], str]:
    """Makes a fresh empty database per call, on SQLite and on a real PostgreSQL server."""
    if request.param == "sqlite":
        return lambda name: f"sqlite:///{tmp_path / name}.db"
    import psycopg

    server = request.getfixturevalue("postgres_server")

    def create(name: str) -> str:
        database = f"{name}_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(server.replace("postgresql+psycopg", "postgresql") + "/postgres", autocommit=True) as c:
            c.execute(f'CREATE DATABASE "{database}"')
        return f"{server}/{database}"

    return create
