"""Local stub servers standing in for Gemini and OpenAI-compatible services, shared by the language-model tests."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from tests.offline_agent.llm.stub_server import StubServer


@pytest.fixture
def stub_servers() -> Iterator[Callable[[], StubServer]]:
    """Starts stub servers on demand (one per service a test talks to); all are shut down when the test ends."""
    servers: list[StubServer] = []

    def start() -> StubServer:
        servers.append(StubServer())
        return servers[-1]

    yield start
    for server in servers:
        server.close()


@pytest.fixture
def stub(stub_servers: Callable[[], StubServer]) -> StubServer:
    """One stub server for the test."""
    return stub_servers()
