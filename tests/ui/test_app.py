"""The console over HTTP: sign-in, sessions and CSRF, every page on real runs, and each registry action."""

from __future__ import annotations

import re

import pytest

from evorec.ui.app import SESSION_COOKIE
from tests.ui.conftest import PASSWORD, REVIEWER, csrf_of, sign_in

pytestmark = pytest.mark.integration
HTML = {"accept": "text/html"}


def _moves(registry, version: int) -> list[tuple[str | None, str, str, str]]:
    return [(e.from_state, e.to_state, e.actor, e.reason) for e in registry.audit(version)]


def test_without_a_session_browsers_are_sent_to_sign_in_and_scripts_get_401(client, registry):
    page = client.get("/versions/2?x=1", headers=HTML)
    assert page.status_code == 303 and page.headers["location"] == "/login?next=%2Fversions%2F2%3Fx%3D1"
    assert client.get("/runs").status_code == 401  # a script, not a browser: no redirect
    refused = client.post("/versions/2/approve", data={"reason": "no session", "csrf_token": "x"}, headers=HTML)
    assert refused.status_code == 303 and refused.headers["location"] == "/login?next=%2F"
    assert client.post("/versions/2/approve", data={"reason": "no session", "csrf_token": "x"}).status_code == 401
    assert registry.get(2).state == "awaiting_approval"


def test_a_wrong_password_or_unknown_reviewer_gets_401_and_no_session(client):
    token = csrf_of(client.get("/login").text)
    for name, password in ((REVIEWER, "wrong password!"), ("mallory", PASSWORD), (REVIEWER, "")):
        answer = client.post("/login", data={"name": name, "password": password, "csrf_token": token})
        assert answer.status_code == 401 and "not right" in answer.text
        assert password not in answer.text or not password  # the password is never echoed
    assert client.get("/", headers=HTML).status_code == 303


def test_repeated_failed_sign_ins_are_refused_for_a_while_per_client_and_per_name(config, registry):
    from fastapi.testclient import TestClient

    from evorec.ui.app import create_app

    app = create_app(config.model_copy(update={"failed_sign_ins": "3/minute"}), registry)

    def attempt(client, name, password):
        return client.post("/login", data={"name": name, "password": password,
                                           "csrf_token": csrf_of(client.get("/login").text)})  # fmt: skip

    with (
        TestClient(app, base_url="http://localhost", follow_redirects=False, client=("10.0.0.1", 4000)) as guesser,
        TestClient(app, base_url="http://localhost", follow_redirects=False, client=("10.0.0.2", 4000)) as other,
        TestClient(app, base_url="http://localhost", follow_redirects=False, client=("10.0.0.3", 4000)) as bob,
    ):
        assert [attempt(guesser, REVIEWER, f"guess number {i}").status_code for i in range(3)] == [401] * 3
        refused = attempt(guesser, REVIEWER, PASSWORD)  # even the right password: the client must wait
        assert refused.status_code == 429 and 0 < int(refused.headers["retry-after"]) <= 60
        assert "Too many failed sign-ins" in refused.text and PASSWORD not in refused.text
        assert attempt(guesser, "bob", PASSWORD).status_code == 429  # the same client, another name
        assert attempt(other, " ALICE", PASSWORD).status_code == 429  # the same name from elsewhere
        assert attempt(bob, "bob", "not bob's password").status_code == 401  # others are not locked out


def test_sign_in_sets_a_signed_httponly_strict_cookie_and_a_fresh_csrf_token(client):
    before = csrf_of(client.get("/login").text)
    response = client.post("/login", data={"name": REVIEWER, "password": PASSWORD, "csrf_token": before, "next": "/"})
    assert response.status_code == 303 and response.headers["location"] == "/"
    cookie = response.headers["set-cookie"]
    assert cookie.startswith(f"{SESSION_COOKIE}=") and "httponly" in cookie and "samesite=strict" in cookie
    page = client.get("/")
    assert page.status_code == 200 and f"Signed in as <strong>{REVIEWER}</strong>" in page.text
    assert csrf_of(page.text) != before  # a new session at sign-in: no fixation
    assert PASSWORD not in page.text
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
    signed = cookie.split(";")[0].split("=", 1)[1]
    client.cookies.clear()
    client.cookies.set(SESSION_COOKIE, signed[:-4] + ("AAAA" if not signed.endswith("AAAA") else "BBBB"))  # tampered
    assert client.get("/", headers=HTML).status_code == 303


def test_a_session_ends_session_hours_after_sign_in_whatever_happened_since(client, monkeypatch):
    import time

    sign_in(client)
    assert client.get("/", headers=HTML).status_code == 200
    later = time.time() + 8 * 3600 + 1
    monkeypatch.setattr("evorec.ui.auth.time.time", lambda: later)
    assert client.get("/", headers=HTML).status_code == 303


def test_sign_in_only_redirects_to_paths_of_the_console(client):
    token = csrf_of(client.get("/login?next=//evil.example/x").text)
    for target, expected in (("//evil.example/x", "/"), ("https://evil.example", "/"), ("/runs", "/runs")):
        answer = client.post("/login", data={"name": REVIEWER, "password": PASSWORD, "csrf_token": token,
                                             "next": target})  # fmt: skip
        assert answer.headers["location"] == expected
        token = csrf_of(client.get("/").text)


def test_posts_without_the_session_csrf_token_are_refused_with_403(client, registry):
    assert client.post("/login", data={"name": REVIEWER, "password": PASSWORD}).status_code == 403
    token = sign_in(client)
    for sent in ({}, {"csrf_token": ""}, {"csrf_token": token[:-2] + "xy"}):
        answer = client.post("/versions/2/approve", data={"reason": "looks good", **sent}, headers=HTML)
        assert answer.status_code == 403 and "reload the page" in answer.text
        assert client.post("/rollback", data={"reason": "r", **sent}).status_code == 403
        assert client.post("/versions/3/reject", data={"reason": "r", **sent}).status_code == 403
    assert client.post("/logout").status_code == 403
    assert registry.get(2).state == "awaiting_approval" and registry.get(3).state == "awaiting_approval"
    assert registry.production().id == 1


def test_approve_promotes_with_the_reviewer_as_actor_and_the_same_audit_rows_as_the_cli(client, registry, tmp_path):
    from typer.testing import CliRunner

    from evorec.cli import app

    token = sign_in(client)
    reason = "report v2-vs-v1 is convincing"
    answer = client.post("/versions/2/approve", data={"reason": reason, "csrf_token": token})
    assert answer.status_code == 303 and answer.headers["location"] == "/versions/2"
    page = client.get("/versions/2").text
    assert "Version 2 of &#39;default&#39; is in production." in page and 'id="approve-reason"' not in page
    assert registry.get(2).state == "production" and registry.get(1).state == "retired"
    by_console = _moves(registry, 2)[-2:]
    assert by_console == [
        ("awaiting_approval", "approved", REVIEWER, reason),
        ("approved", "production", REVIEWER, reason),
    ]
    assert _moves(registry, 1)[-1] == ("production", "retired", REVIEWER, f"replaced by version 2: {reason}")
    assert client.get("/audit").text.count(f"<td>{REVIEWER}</td>") == 3
    url = f"sqlite:///{tmp_path / 'registry.db'}"
    cli = CliRunner().invoke(
        app, ["promote", "approve", "3", "--reason", reason, "--actor", REVIEWER, "--registry", url]
    )
    assert cli.exit_code == 0, cli.output
    assert _moves(registry, 3)[-2:] == by_console  # the CLI writes the very same rows
    assert _moves(registry, 2)[-1] == ("production", "retired", REVIEWER, f"replaced by version 3: {reason}")


def test_reject_records_the_reason_and_a_refused_action_changes_nothing(client, registry):
    token = sign_in(client, "bob", "another long password")
    assert client.post("/versions/3/reject", data={"reason": "", "csrf_token": token}).status_code == 303
    assert "Refused: every registry change needs a reason" in client.get("/versions/3").text
    assert registry.get(3).state == "awaiting_approval"
    client.post("/versions/3/reject", data={"reason": "duplicate of v2", "csrf_token": token})
    assert registry.get(3).state == "rejected"
    assert _moves(registry, 3)[-1] == ("awaiting_approval", "rejected", "bob", "duplicate of v2")
    client.post("/versions/3/approve", data={"reason": "changed my mind", "csrf_token": token})
    page = client.get("/versions/3").text
    assert "Refused: version 3 is rejected, a final state" in page and 'role="alert"' in page
    assert registry.get(3).state == "rejected" and len(registry.audit(3)) == 5


def test_rollback_brings_back_the_replaced_version(client, registry):
    token = sign_in(client)
    client.post("/rollback", data={"name": "default", "reason": "nothing to undo", "csrf_token": token})
    assert "Refused: nothing to roll back to" in client.get("/versions").text
    client.post("/versions/2/approve", data={"reason": "ship it", "csrf_token": token})
    answer = client.post("/rollback", data={"name": "default", "reason": "latency regression", "csrf_token": token})
    assert answer.headers["location"] == "/versions"
    assert "Version 1 of &#39;default&#39; is back in production." in client.get("/versions").text
    assert registry.production().id == 1 and registry.get(2).state == "rolled_back"
    assert _moves(registry, 2)[-1] == ("production", "rolled_back", REVIEWER, "latency regression")
    assert _moves(registry, 1)[-1] == ("retired", "production", REVIEWER, "latency regression")


def test_the_run_pages_show_the_score_the_lineage_each_edit_and_its_feedback(client, evolution_runs):
    sign_in(client)
    assert "/runs/tiny" in client.get("/runs").text
    run = client.get("/runs/tiny").text
    assert "## " not in run and "<h2>Lineage of the best (newest first)</h2>" in run
    assert 'src="/runs/tiny/score.png"' in run and 'alt="Validation ndcg@10' in run
    image = client.get("/runs/tiny/score.png")
    assert image.headers["content-type"] == "image/png" and image.content.startswith(b"\x89PNG")
    keys = re.findall(r'href="/runs/tiny/candidates/([^"]+)"', run)
    pages = {key: client.get(f"/runs/tiny/candidates/{key}").text for key in keys}
    edits = [page for page in pages.values() if "rule " in page and "<ins>" in page]
    assert edits, "no candidate page shows a diff"
    for page in edits:
        assert re.search(r"<h3 id=\"diff-\w+\">\w+\.py: \d+ lines? added, \d+ deleted</h3>", page)
        assert "(parent)</span>" in page and "(child)</span>" in page
        assert "<th>probe</th>" in page and "Status: " in page  # the diagnosis table and the critiques
        assert "Lineage (newest first)" in page and "this candidate" in page
    seed = next(page for page in pages.values() if "A seed: the run started from this code." in page)
    assert "<ins>" not in seed and "<th>probe</th>" in seed


def test_the_experiment_pages_show_the_queue_and_the_report(client):
    sign_in(client)
    page = client.get("/experiments").text
    queue = page.split('id="queue-heading"')[1].split('id="reports-heading"')[0]
    assert [int(v) for v in re.findall(r'href="/versions/(\d+)">version', queue)] == [3, 2, 4]
    assert 'href="/experiments/v2-vs-v1/treatment"' in page
    report = client.get("/experiments/v2-vs-v1/treatment").text
    assert "Decision: " in report and "Health checks" in report and "sample ratio" in report
    figures = re.findall(r'<img src="data:image/png;base64,[^"]+" alt="([^"]+)"', report)
    assert figures == [
        "cumulative lift of active days by day",
        "relative lift of every metric with its confidence interval",
    ]
    assert 'href="/versions/2#decide"' in report  # v2 awaits approval: the report links to the decision


@pytest.mark.parametrize(
    "path", ["/runs/nothing", "/runs/tiny/candidates/nothing", "/experiments/v2-vs-v1/control", "/versions/99", "/x"]
)
def test_what_does_not_exist_is_a_404_page(client, path):
    sign_in(client)
    answer = client.get(path, headers=HTML)
    assert answer.status_code == 404 and "<h1>404: Not found</h1>" in answer.text


def test_the_runs_dir_cannot_be_escaped(client, evolution_runs):
    sign_in(client)
    assert client.get("/runs/..%2Ftiny").status_code == 404
    assert client.get("/runs/%2E%2E").status_code == 404


def test_the_console_finds_indexed_runs_wherever_they_are_by_their_names(config, registry, evolution_runs, experiments,
                                                                         tmp_path):  # fmt: skip
    from fastapi.testclient import TestClient

    from evorec.ui.app import create_app

    registry.record_run("evolution", evolution_runs / "tiny", name="two-loop-2026-12-04-evolution", pipeline="p")
    registry.record_run("experiment", experiments / "v2-vs-v1", pipeline="p")
    elsewhere = config.model_copy(update={"runs_dir": tmp_path / "empty", "experiments_dir": tmp_path / "empty"})
    with TestClient(create_app(elsewhere, registry), base_url="http://localhost", follow_redirects=False) as client:
        sign_in(client)
        overview = client.get("/").text
        assert 'href="/runs/two-loop-2026-12-04-evolution"' in overview
        assert 'href="/experiments/v2-vs-v1/treatment"' in overview
        assert client.get("/runs/two-loop-2026-12-04-evolution").status_code == 200
        assert client.get("/experiments/v2-vs-v1/treatment").status_code == 200
        assert client.get("/runs/tiny").status_code == 404  # known by its index name only


def test_the_overview_puts_the_evidence_above_an_approve_form_for_each_waiting_version(client, registry):
    token = sign_in(client)
    page = client.get("/").text
    waiting = page.split('id="waiting-heading"')[1].split('id="production-heading"')[0]
    assert waiting.index("Read the A/B report") < waiting.index('action="/versions/2/approve"')
    assert waiting.index("Offline metrics of version 2") < waiting.index('action="/versions/2/approve"')
    answer = client.post("/versions/2/approve", data={"csrf_token": token, "reason": "report read on the overview"})
    assert answer.status_code == 303 and registry.get(2).state == "production"


def test_versions_show_metrics_as_tables_and_the_filter_in_their_caption(client, registry, artifacts):
    token = sign_in(client)
    assert token
    version = registry.register(
        candidate_id="best-1", content_hash="h", artifact_uri=str(artifacts["mf_bpr"]), actor="pipeline", reason="r",
        metrics={"valid": {"ndcg@10": 0.0123456789012345, "hr@10": 0.2}, "test": {"ndcg@10": 0.011111111111}},
    )  # fmt: skip
    page = client.get(f"/versions/{version.id}").text
    assert "{" not in page.split('id="metrics-heading"')[1].split("</section>")[0]  # no raw dicts
    assert re.search(r'<th scope="col">valid</th><th scope="col">test</th>', page)
    assert "<td>0.01235</td><td>0.01111</td>" in page and "<td>0.2</td><td>—</td>" in page
    assert page.index('id="metrics-heading"') < page.index('id="decide-heading"')  # evidence above the forms
    listed = client.get("/versions?state=awaiting_approval").text
    assert "Model versions in state awaiting_approval, newest first" in listed and "Macro" not in listed
