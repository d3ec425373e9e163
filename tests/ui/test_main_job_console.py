"""What a new user does after `make run`, on a real (small) run of the two-loop pipeline: the run
shows in `evorec runs list`, `evorec experiment list` and the console started as the README says
(no flags but the port), the A/B report reads rendered, and version 2 is approved from the overview."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import yaml

from serving.registry import Registry, default_registry_url
from tests.serving.conftest import free_port
from tests.ui.conftest import assert_rendered

pytestmark = [pytest.mark.slow, pytest.mark.integration, pytest.mark.timeout(3600)]
PASSWORD = "a long passphrase"
# A small run that still ends at the approval gate: one generation of one proposal, a short final
# training, and a simulated population that reacts strongly to the quality of its slates (latency, which a
# shared test machine makes noise of, is not what this test is about).
ONLINE = {"users": 2000, "days": 6, "pre_period_days": 1, "alpha": 0.2, "latency_margin": 1000.0,
          "diversity_margin": 1.0, "coverage_margin": 1.0,
          "population": {"return_satisfaction_weight": 3.0, "taste_noise": 0.0, "no_choice_utility": 0.5}}  # fmt: skip
EVALUATION = {"smoke_users": 30, "smoke_seconds": 300, "train_seconds": 600, "max_epochs": 2, "overhead_seconds": 600,
              "diagnosis_users": 32, "memory_gib": 12}  # fmt: skip


def _evorec(*args: str, cwd: Path, **extra: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "200", **extra}
    return subprocess.run([sys.executable, "-m", "evorec", *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=3600)  # fmt: skip


def _production_before_the_run(prepared_small, seeds_dir, folder: Path) -> None:
    """What served traffic before: an MF model stopped after its first steps."""
    from recsys.artifacts import export_trained
    from recsys.candidate import load_candidate
    from recsys.settings import get_settings
    from recsys.trainer import Trainer, TrainerConfig

    config = TrainerConfig(max_epochs=1, budget_seconds=0.002, progress=False)
    trainer = Trainer(load_candidate(seeds_dir / "mf_bpr"), prepared_small, config)
    artifact = export_trained(trainer, trainer.fit(), folder / "mf_bpr")
    with Registry(default_registry_url(get_settings())) as registry:
        version = registry.register(candidate_id="mf_bpr", content_hash="mf-bpr", artifact_uri=str(artifact),
                                    metrics={}, actor="test", reason="in production before the run")  # fmt: skip
        registry.bootstrap(version.id, "test")


def test_a_new_user_approves_version_2_of_the_main_job_from_the_console_overview(
    tmp_path, monkeypatch, prepared_small, seeds_dir, browser
):
    clone = tmp_path / "clone"
    clone.mkdir()
    monkeypatch.setenv("EVOREC_DATA_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("EVOREC_REGISTRY_URL", raising=False)
    _production_before_the_run(prepared_small, seeds_dir, tmp_path)
    (clone / "pipeline.yaml").write_text(yaml.safe_dump({"pipeline": {
        "dataset": str(prepared_small.path), "generations": 1, "candidates_per_generation": 1, "parallelism": 1,
        "final_train_seconds": 600, "final_max_epochs": 3, "online": ONLINE,
        "evolution": {"iterations": 1, "workers": 1, "evaluation": EVALUATION, "feedback": {"personas": 4}},
    }}))  # fmt: skip

    run = _evorec("run", "-c", "pipeline.yaml", cwd=clone)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "version 2 is awaiting_approval" in run.stdout, run.stdout[-3000:]
    [ab_report] = re.findall(r"A/B report: (\S+)", run.stdout)
    [evolution_report] = re.findall(r"evolution report: (\S+)", run.stdout)
    assert ab_report.endswith(".html") and evolution_report.endswith(".html")
    assert Path(ab_report).is_file() and Path(evolution_report).is_file()

    _review_in_the_console(clone, browser, ab_report, tmp_path)


def _review_in_the_console(clone: Path, browser, ab_report: str, tmp_path: Path) -> None:
    """The run in both lists and in the console, its A/B report rendered, version 2 approved from the overview."""
    runs = _evorec("runs", "list", cwd=clone)
    assert runs.returncode == 0 and "v2-vs-v1" in runs.stdout and "-evolution" in runs.stdout, runs.stdout
    experiments = _evorec("experiment", "list", cwd=clone)
    assert experiments.returncode == 0 and "v2-vs-v1" in experiments.stdout and "ship" in experiments.stdout

    port = free_port()
    users = json.dumps({"alice": PASSWORD})
    console = subprocess.Popen([sys.executable, "-m", "evorec", "ui", "--port", str(port)], cwd=clone,
                               env={**os.environ, "EVOREC_UI_USERS": users}, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)  # fmt: skip
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while True:
            try:
                httpx.get(f"{url}/login", timeout=5)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline and console.poll() is None, "the console did not start"
                time.sleep(0.5)
        context = browser.new_context(base_url=url)
        page = context.new_page()
        page.goto("/")
        page.get_by_label("Reviewer name").fill("alice")
        page.get_by_label("Password or token").fill(PASSWORD)
        page.get_by_role("button", name="Sign in").click()
        page.wait_for_url(f"{url}/")
        overview = page.locator("main").inner_text()
        assert "v2-vs-v1" in overview and "-evolution" in overview and "Version 2" in overview, overview
        assert_rendered(page, "overview", tmp_path)

        page.get_by_role("link", name="Read the A/B report").first.click()
        page.wait_for_url(re.compile(r"/experiments/v2-vs-v1(-\d+)?/treatment$"))
        assert page.locator("h2#decision-heading").inner_text() == "Decision: ship (awaiting approval)"
        assert_rendered(page, "A/B report in the console", tmp_path)
        page.goto(Path(ab_report).resolve().as_uri())  # the file `make run` printed
        assert page.locator("main > *").first.get_attribute("class") == "verdict"
        assert_rendered(page, "A/B report file", tmp_path)

        page.goto(f"{url}/")
        page.get_by_label("Reason for approving (kept in the audit log)").fill("A/B report read: satisfaction up")
        page.get_by_role("button", name="Approve version 2").click()
        page.wait_for_url(re.compile(r"/versions/2$"))
        assert page.locator("#version-state").inner_text() == "production"
        context.close()
    finally:
        console.terminate()
        console.communicate(timeout=30)
    from recsys.settings import get_settings

    with Registry(default_registry_url(get_settings())) as registry:
        assert registry.get(2).state == "production" and registry.audit(2)[-1].actor == "alice"
