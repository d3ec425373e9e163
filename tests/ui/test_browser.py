"""The console in real Chromium (Debian's, driven by Playwright): every page, decisions, keyboard use.

Needs /usr/bin/chromium (``apt-get install -y chromium``). Without it the tests skip, except under
CI (``$CI`` set), where a missing browser is a failure.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest

from tests.serving.conftest import LiveServer, free_port
from tests.ui.conftest import PASSWORD, REVIEWER, assert_rendered

pytestmark = pytest.mark.integration


@pytest.fixture
def console(config, registry) -> Iterator[LiveServer]:
    from evorec.ui.app import create_app

    with LiveServer(create_app(config, registry), free_port()) as server:
        yield server


@pytest.fixture
def page(browser, console) -> Iterator:
    """A signed-in page that records every console error and uncaught exception."""
    context = browser.new_context(base_url=console.url)
    opened = context.new_page()
    opened.errors = []
    opened.on("console", lambda message: opened.errors.append(message.text) if message.type == "error" else None)
    opened.on("pageerror", lambda error: opened.errors.append(str(error)))
    opened.goto("/")
    assert opened.url.endswith("/login?next=%2F")
    opened.get_by_label("Reviewer name").fill(REVIEWER)
    opened.get_by_label("Password or token").fill(PASSWORD)
    opened.get_by_role("button", name="Sign in").click()
    opened.wait_for_url(f"{console.url}/")
    yield opened
    context.close()


def _check_page(page, path: str) -> None:
    """The page loads with its landmarks, one h1, labelled images and no console error."""
    response = page.goto(path)
    assert response.status == 200, path
    assert page.locator("main#main").count() == 1 and page.locator("h1").count() == 1, path
    assert page.get_by_role("navigation", name="Main").is_visible()
    alts = page.locator("img").evaluate_all("images => images.map(image => image.alt)")
    assert all(alt.strip() for alt in alts), path
    loaded = page.locator("img").evaluate_all("images => images.every(image => image.complete && image.naturalWidth)")
    assert loaded, f"{path}: an image did not load"
    unlabelled = page.locator("textarea, input:not([type=hidden]), select").evaluate_all(
        "fields => fields.filter(field => !field.labels.length).map(field => field.name)"
    )
    assert not unlabelled, f"{path}: fields without a label: {unlabelled}"
    assert not page.errors, f"{path}: {page.errors}"


def test_every_page_loads_labelled_and_without_console_errors(page):
    for path in ("/", "/runs", "/runs/tiny", "/experiments", "/experiments/v2-vs-v1/treatment", "/versions",
                 "/versions/2", "/versions/4", "/audit", "/rewards", "/rewards/clicks"):  # fmt: skip
        _check_page(page, path)
    page.goto("/runs/tiny")
    candidates = page.locator("a[href^='/runs/tiny/candidates/']").evaluate_all("links => links.map(l => l.pathname)")
    assert candidates
    for path in sorted(set(candidates)):
        _check_page(page, path)


def test_approving_and_rejecting_in_the_browser_moves_the_versions(page, registry):
    page.goto("/versions/2")
    page.get_by_label("Reason for approving (kept in the audit log)").fill("lift in retention, guardrails pass")
    page.get_by_role("button", name="Approve version 2").click()
    page.wait_for_url(re.compile(r"/versions/2$"))
    assert page.get_by_role("status").inner_text() == "Version 2 of 'default' is in production."
    assert page.locator("#version-state").inner_text() == "production"
    assert registry.get(2).state == "production" and registry.get(1).state == "retired"
    assert registry.audit(2)[-1].actor == REVIEWER

    page.goto("/versions/3")
    page.get_by_label("Reason for rejecting (kept in the audit log)").fill("same code as version 2")
    page.get_by_role("button", name="Reject version 3").click()
    page.wait_for_url(re.compile(r"/versions/3$"))
    assert page.locator("#version-state").inner_text() == "rejected"
    assert registry.get(3).state == "rejected" and registry.audit(3)[-1].reason == "same code as version 2"
    page.goto("/audit")
    assert page.locator("table.audit tbody tr").first.inner_text().split("\t")[2:5] == [
        "awaiting_approval", "rejected", REVIEWER,
    ]  # fmt: skip
    assert not page.errors


def test_the_approve_form_is_reachable_and_usable_with_the_keyboard_alone(page, registry):
    page.goto("/versions/2")
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent") == "Skip to main content"
    page.keyboard.press("Enter")  # the skip link moves focus past the navigation
    assert page.evaluate("document.activeElement.id") == "main"
    for _ in range(20):
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.id") == "approve-reason":
            break
    else:
        pytest.fail("Tab never reached the approve form's reason")
    focus = page.evaluate("getComputedStyle(document.activeElement).outlineStyle")
    assert focus != "none"  # the focused field is visibly marked
    page.keyboard.type("approved from the keyboard")
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.id") == "approve-button"
    page.keyboard.press("Enter")
    page.wait_for_url(re.compile(r"/versions/2$"))
    assert registry.get(2).state == "production"
    assert registry.audit(2)[-1].reason == "approved from the keyboard"
    assert not page.errors


def test_the_reward_preview_follows_the_weights_live_and_saving_adds_a_version(page, config):
    from playwright.sync_api import expect

    page.goto("/rewards/clicks")
    score = page.locator("td[data-measure='score']")
    before = score.inner_text()
    page.get_by_label("Weight of novelty").fill("2")
    expect(score).not_to_have_text(before)  # measured again on the A/B log, without reloading the page
    page.get_by_label("Weight of completion").fill("7")
    expect(page.locator("#reward-preview")).to_contain_text("weight 7 is outside its declared range [0, 3]")
    page.get_by_label("Weight of completion").fill("0")
    expect(page.locator("#preview-verdict")).to_have_text("The edit is valid: you can save it.")
    page.get_by_label("Why you change the weights (kept in the saved file)").fill("novel clicks retain users")
    page.get_by_role("button", name="Save as a new version").click()
    page.wait_for_url(re.compile(r"/rewards/clicks\?version=2$"))
    expect(page.get_by_role("status")).to_contain_text("Saved clicks@2")
    assert "Reason: novel clicks retain users" in (config.rewards_dir / "clicks" / "v2.yaml").read_text()
    assert not page.errors


def test_every_page_and_report_renders_its_markdown(page, config, tmp_path, evolution_runs, experiments):
    from offline_agent.program_db import DatabaseConfig, ProgramDatabase
    from offline_agent.report import write_report

    page.set_viewport_size({"width": 1024, "height": 800})
    paths = ["/", "/runs", "/runs/tiny", "/experiments", "/experiments/v2-vs-v1/treatment", "/versions",
             "/versions?state=awaiting_approval", "/versions/2", "/audit", "/rewards", "/rewards/clicks"]  # fmt: skip
    page.goto("/runs/tiny")
    paths += sorted(set(page.locator("a[href^='/runs/tiny/candidates/']").evaluate_all("a => a.map(l => l.pathname)")))
    for path in paths:
        assert page.goto(path).status == 200, path
        assert_rendered(page, path, tmp_path)
    assert "in state awaiting_approval" in page.goto("/versions?state=awaiting_approval").text()
    (tmp_path / "evolution").mkdir()
    database = ProgramDatabase(DatabaseConfig(url=f"sqlite:///{evolution_runs / 'tiny' / 'evolution.db'}"))
    _, evolution_page = write_report(database, tmp_path / "evolution", "ndcg@10", "iterations")
    database.engine.dispose()
    for report in [evolution_page, *sorted(experiments.glob("*/report-*.html"))]:
        page.goto(report.resolve().as_uri())
        assert_rendered(page, report.name, tmp_path)
        first = page.locator("main > *").first
        assert first.get_attribute("class") == "verdict" and first.inner_text().strip(), f"{report}: no verdict first"
    assert not page.errors
