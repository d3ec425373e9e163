"""`evorec ui` from the command line: its help, refusing to serve without reviewers, serving with them."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import httpx
import pytest
from typer.testing import CliRunner

from evorec.cli import app
from tests.serving.conftest import free_port
from tests.ui.conftest import csrf_of


def _env(tmp_path, **extra: str) -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("EVOREC_")}
    return {**clean, "EVOREC_DATA_DIR": str(tmp_path / "data"), **extra}


def test_ui_has_help_naming_its_options():
    result = CliRunner().invoke(app, ["ui", "--help"])
    assert result.exit_code == 0
    for option in ("--host", "--port", "--config", "--registry", "--runs-dir", "--experiments-dir", "EVOREC_UI_USERS"):
        assert option in result.output


@pytest.mark.parametrize(
    ("users", "message"),
    [(None, "the review console has no reviewers"), ('{"alice": "short"}', "at least 8 characters")],
)
def test_ui_refuses_to_start_without_usable_reviewers_and_never_prints_a_secret(tmp_path, users, message):
    env = _env(tmp_path, **({"EVOREC_UI_USERS": users} if users else {}))
    done = subprocess.run([sys.executable, "-m", "evorec", "ui"], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 2 and message in done.stderr and "Traceback" not in done.stderr
    assert "short" not in done.stderr.replace("at least", "")


@pytest.mark.integration
def test_ui_serves_the_console_and_keeps_the_password_out_of_its_log(tmp_path):
    password = "a password that must never be logged"
    port = free_port()
    command = [sys.executable, "-m", "evorec", "ui", "--port", str(port), "--registry",
               f"sqlite:///{tmp_path / 'registry.db'}", "--runs-dir", str(tmp_path / "runs")]  # fmt: skip
    env = _env(tmp_path, EVOREC_UI_USERS=f'{{"alice": "{password}"}}')
    server = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            deadline = time.monotonic() + 60
            while True:
                try:
                    login = client.get("/login")
                    break
                except httpx.TransportError:
                    assert time.monotonic() < deadline and server.poll() is None, "the console did not start"
                    time.sleep(0.2)
            form = {"name": "alice", "password": password, "csrf_token": csrf_of(login.text)}
            assert client.post("/login", data=form).status_code == 303
            assert "The registry holds no model version yet." in client.get("/versions").text
    finally:
        server.terminate()
        log, _ = server.communicate(timeout=30)
    assert "GET /versions" in log and password not in log
