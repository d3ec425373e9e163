"""A console over real data: a tiny rulebook evolution run, a simulated A/B experiment with its
report, and a registry whose versions wait for a decision."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from evorec.ui.app import create_app
from evorec.ui.config import UIConfig
from serving.registry import Registry

PASSWORD = "correct horse battery staple"
REVIEWER = "alice"
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


@pytest.fixture(scope="session")
def evolution_runs(tmp_path_factory, prepared_small, seeds_dir) -> Path:
    """A folder holding one real evolution run: mf_bpr and one rulebook edit of it, one epoch per candidate."""
    from offline_agent.evolve import Evolution, EvolutionConfig

    root = tmp_path_factory.mktemp("runs")
    config = EvolutionConfig.model_validate({
        "seed_candidate": str(seeds_dir / "mf_bpr"), "dataset": str(prepared_small.path),
        "run_dir": str(root / "tiny"), "iterations": 1, "database": {"islands": 1}, "feedback": {"personas": 4},
        "evaluation": {"smoke_users": 30, "smoke_seconds": 5, "train_seconds": 5, "max_epochs": 1,
                       "overhead_seconds": 120},
    })  # fmt: skip
    Evolution(config, prepared_small.path).run()
    return root


def _register(registry: Registry, artifact: Path, candidate: str, state: str) -> int:
    """A version walked to ``state`` by the actors that move versions there in the two loops."""
    version = registry.register(candidate_id=candidate, content_hash=candidate, artifact_uri=str(artifact),
                                metrics={"ndcg@10": 0.1}, actor="offline-agent", reason="trained in full")  # fmt: skip
    for step in ("queued",) if state == "queued" else ("queued", "experimenting", "awaiting_approval"):
        registry.transition(version.id, step, actor="online-agent", reason=f"to {step}")
    if state == "production":
        registry.approve(version.id, "bootstrap-reviewer", "the first model")
    return version.id


@pytest.fixture
def registry(tmp_path, artifacts) -> Iterator[Registry]:
    """v1 in production, v2 (tested in the experiment) and v3 awaiting approval, v4 queued."""
    with Registry(f"sqlite:///{tmp_path / 'registry.db'}") as opened:
        for candidate, state in (("mf_bpr", "production"), ("sasrec_ce", "awaiting_approval"),
                                 ("sasrec_ce-b", "awaiting_approval"), ("sasrec_ce-c", "queued")):  # fmt: skip
            _register(opened, artifacts[candidate.split("-")[0]], candidate, state)
        yield opened


@pytest.fixture(scope="session")
def experiments(tmp_path_factory, prepared_small, artifacts) -> Path:
    """A folder with one finished experiment, v2 against v1, and its report."""
    from ab_testing.analysis import analyse
    from ab_testing.experiment import ArmPlan, ExperimentPlan, run_experiment
    from ab_testing.report import write_report
    from serving.artifacts import load_artifact

    root = tmp_path_factory.mktemp("experiments")
    plan = ExperimentPlan(name="v2-vs-v1", arms=(ArmPlan(name="control", version=1),
                          ArmPlan(name="treatment", version=2)), users=300, days=3, pre_period_days=1)  # fmt: skip
    models = {
        "control": load_artifact(str(artifacts["mf_bpr"])),
        "treatment": load_artifact(str(artifacts["sasrec_ce"])),
    }
    run = run_experiment(plan, prepared_small, models, root / plan.name)
    for analysis in analyse(run):
        write_report(run, analysis)
    return root


@pytest.fixture
def config(evolution_runs, experiments, tmp_path) -> UIConfig:
    return UIConfig(
        users={REVIEWER: SecretStr(PASSWORD), "bob": SecretStr("another long password")},
        session_secret=SecretStr("a fixed secret for the tests"), runs_dir=evolution_runs,
        experiments_dir=experiments, rewards_dir=tmp_path / "rewards", data_dir=tmp_path / "data",
    )  # fmt: skip


@pytest.fixture
def client(config, registry) -> Iterator[TestClient]:
    with TestClient(create_app(config, registry), base_url="http://localhost", follow_redirects=False) as opened:
        yield opened


def csrf_of(page: str) -> str:
    match = CSRF.search(page)
    assert match, "the page has no CSRF token"
    return match.group(1)


def sign_in(client: TestClient, name: str = REVIEWER, password: str = PASSWORD) -> str:
    """Sign in through the form; returns the session's CSRF token."""
    token = csrf_of(client.get("/login").text)
    response = client.post("/login", data={"name": name, "password": password, "csrf_token": token, "next": "/"})
    assert response.status_code == 303, response.text
    return csrf_of(client.get("/").text)


CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]  # fmt: skip


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() not in ("", "0", "false")


@pytest.fixture(scope="module")
def browser() -> Iterator:
    if not CHROMIUM.exists():
        if _in_ci():
            pytest.fail(f"CI needs Debian's chromium at {CHROMIUM}: apt-get install -y chromium")
        pytest.skip(f"the browser tests need Debian's chromium at {CHROMIUM} (apt-get install -y chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield launched
        launched.close()


RAW_MARKDOWN = re.compile(r"\*\*|(^|\n)#{1,6} |\|\s*:?-{3,}")
PROSE = """() => {
  const copy = document.body.cloneNode(true);
  copy.querySelectorAll("pre, code").forEach(node => node.remove());  // code may hold ** and # legitimately
  document.body.appendChild(copy); const text = copy.innerText; copy.remove(); return text;
}"""


def assert_rendered(page, where: str, screenshots: Path) -> None:
    """No Markdown marker is left in the visible text, nothing is wider than the window (wide tables
    scroll inside their box), and a full-page screenshot is taken for a person to look at."""
    text = page.evaluate(PROSE)
    marker = RAW_MARKDOWN.search(text)
    if marker is not None:
        around = text[max(marker.start() - 80, 0) : marker.end() + 80]
        pytest.fail(f"{where}: raw Markdown {marker.group()!r} in: ...{around}...")
    overflow = page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")
    assert overflow <= 1, f"{where}: the page is {overflow}px wider than the window"
    shot = screenshots / (re.sub(r"[^a-z0-9]+", "-", where.lower()).strip("-") + ".png")
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 1000
