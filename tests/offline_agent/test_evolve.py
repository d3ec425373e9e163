"""`evorec evolve` end to end with the rulebook, and a run killed with SIGKILL then resumed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from recsys.candidate import load_candidate
from tests.offline_agent.processes import kill_when, run_database

pytestmark = [pytest.mark.slow, pytest.mark.integration, pytest.mark.timeout(1500)]


def _config(tmp_path: Path, prepared: Path, seeds: Path, iterations: int, islands: int = 1) -> Path:
    path = tmp_path / "evolve.yaml"
    path.write_text(
        "evolve:\n"
        f"  seed_candidate: {seeds / 'mf_bpr'}\n"
        f"  dataset: {prepared}\n"
        f"  run_dir: {tmp_path / 'run'}\n"
        f"  iterations: {iterations}\n"
        f"  database: {{islands: {islands}, migration_interval: 2}}\n"
        "  feedback: {personas: 4}\n"
        "  evaluation: {smoke_users: 30, smoke_seconds: 5, train_seconds: 5, max_epochs: 1, overhead_seconds: 120}\n"
    )
    return path


def _evorec(*args: str, **kwargs) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "evorec", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True, **kwargs,
    )  # fmt: skip


def test_evolve_improves_on_nothing_silently_and_reports_everything(tmp_path, prepared_small, seeds_dir):
    config = _config(tmp_path, prepared_small.path, seeds_dir, iterations=2)
    done = _evorec("evolve", "--config", str(config))
    _, err = done.communicate(timeout=900)
    assert done.returncode == 0, err[-3000:]
    db = run_database(tmp_path / "run")
    programs = db.programs()
    assert db.get_state("iteration") == 2 and not db.pending()
    assert [p.origin for p in programs].count("initial") == 1
    children = [p for p in programs if p.origin == "proposed"]
    assert children and all(p.feedback.rule and p.feedback.rationale for p in children)
    assert all("netns" in p.feedback.isolation for p in programs if p.status == "evaluated")
    for program in (p for p in programs if p.status == "evaluated"):  # directional feedback on every candidate
        feedback = program.feedback
        assert {"sequence_insensitivity", "popularity_bias"} <= set(feedback.signals)
        assert feedback.critiques is not None
        assert feedback.critiques.assessment.status in ("CRITICAL", "NEEDS_IMPROVEMENT", "STABLE")
        assert len(feedback.critiques.critiques) == 4 and "era_mismatch" in feedback.complaints
        folder = tmp_path / "run" / "candidates" / program.key[:12]
        assert (folder / "diagnosis.md").read_text().startswith("| probe |") and (folder / "critiques.json").exists()
    report = (tmp_path / "run" / "report.md").read_text()
    assert "## Lineage of the best" in report and "never used to select" in report
    assert "data:image/png;base64," in (tmp_path / "run" / "report.html").read_text()
    assert load_candidate(tmp_path / "run" / "best").content_hash
    again = _evorec("evolve", "--config", str(config))
    again.wait(timeout=120)
    assert again.returncode == 2 and "pass --resume" in again.stderr.read()


def test_a_run_killed_mid_evaluation_resumes_without_loss_or_repetition(tmp_path, prepared_small, seeds_dir):
    config = _config(tmp_path, prepared_small.path, seeds_dir, iterations=3, islands=2)
    run = _evorec("evolve", "--config", str(config))
    kill_when(  # once a proposed child is being evaluated
        run, tmp_path / "run", lambda db: any(p.origin == "proposed" for p in db.pending()),
        islands=2, timeout=600, failure="the run never reached a proposed candidate",
    )  # fmt: skip
    before = {p.key: p for p in run_database(tmp_path / "run", 2).programs()}
    interrupted = {key for key, p in before.items() if p.status == "pending"}
    assert interrupted

    resumed = _evorec("evolve", "--config", str(config), "--resume")
    _, err = resumed.communicate(timeout=900)
    assert resumed.returncode == 0, err[-3000:]
    after = {p.key: p for p in run_database(tmp_path / "run", 2).programs()}
    assert set(before) <= set(after)  # no candidate lost
    assert not [p for p in after.values() if p.status == "pending"]
    for key, program in before.items():  # finished evaluations were not redone
        if program.status != "pending":
            assert program.feedback.evaluated_at is not None
            assert after[key].feedback.evaluated_at == program.feedback.evaluated_at
    assert all(after[key].status in ("evaluated", "failed") for key in interrupted)
    assert [p.origin for p in after.values()].count("initial") == 2  # one per island, never re-added
    assert run_database(tmp_path / "run", 2).get_state("iteration") == 3
