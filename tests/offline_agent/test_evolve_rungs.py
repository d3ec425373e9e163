"""Multi-fidelity selection in real runs: rung invariants, the CPU budget, the finals, and a run killed
with SIGKILL while a promotion is pending, then resumed."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import pytest

from offline_agent.evolve import Evolution, load_evolution_config
from offline_agent.program_db import RungResult
from offline_agent.report import write_report
from tests.offline_agent.processes import kill_when, run_database

pytestmark = [pytest.mark.slow, pytest.mark.integration, pytest.mark.timeout(1500)]
FRACTION = 0.5
FINAL = 2  # the finals' rung: after epochs (1, 2)


def _config(tmp_path: Path, prepared: Path, iterations: int, extra: str = "") -> Path:
    path = tmp_path / "evolve.yaml"
    path.write_text(
        "evolve:\n"
        "  seed_candidate: mf_bpr\n"
        f"  dataset: {prepared}\n"
        f"  run_dir: {tmp_path / 'run'}\n"
        f"  iterations: {iterations}\n"
        "  database: {islands: 1}\n"
        "  feedback: {mode: scalar}\n"
        "  evaluation: {smoke_users: 30, smoke_seconds: 10, train_seconds: 60, overhead_seconds: 120, threads: 2}\n"
        f"  rungs: {{epochs: [1, 2], promote_fraction: {FRACTION}, finals: 2, final_epochs: 3}}\n" + extra
    )
    return path


def _check_promotions(results: list[RungResult]) -> None:
    """Replay: each promotion's candidate ranked in the top fraction of its rung's results stored before it
    (the run's τ never had the pairs to change the fraction)."""
    for promoted in (r for r in results if 0 < r.rung < FINAL):
        before = [
            r for r in results if r.rung == promoted.rung - 1 and r.created < promoted.created and r.fitness is not None
        ]
        top = sorted(before, key=lambda r: (-(r.fitness or 0.0), r.created))[: math.floor(len(before) * FRACTION)]
        assert promoted.content_hash in {r.content_hash for r in top}


def test_rungs_promote_only_the_top_fraction_count_cpu_time_and_train_the_finals(tmp_path, prepared_small):
    config = load_evolution_config(_config(tmp_path, prepared_small.path, iterations=3))
    evolution = Evolution(config, prepared_small.path)
    summary = evolution.run()
    db = evolution.db
    results = db.rung_results()
    assert not db.pending() and not [r for r in results if r.status == "pending"]
    evaluated = [p for p in db.programs() if p.status == "evaluated"]
    rung0 = {r.content_hash: r for r in results if r.rung == 0}
    assert len(evaluated) >= 2 and set(rung0) == {p.content_hash for p in db.programs() if p.status != "pending"}
    for program in evaluated:  # a program's fitness is its rung-0 fitness, all at one fidelity
        assert program.fitness == rung0[program.content_hash].fitness
        assert rung0[program.content_hash].trained_epochs == 1
    _check_promotions(results)
    promoted = [r for r in results if r.rung == 1]
    assert promoted and all(r.trained_epochs == 2 and not r.reason for r in promoted)
    assert max(rung0.values(), key=lambda r: r.fitness or 0.0).content_hash in {r.content_hash for r in promoted}

    for result in results:  # budgets add up: CPU time = wall time × threads, summed over selection's evaluations
        assert result.seconds > 0 and result.cpu_seconds == pytest.approx(result.seconds * 2, abs=0.02)
    assert summary.cpu_seconds == pytest.approx(sum(r.cpu_seconds for r in results if r.rung < FINAL), abs=0.1)

    finals = [r for r in results if r.rung == FINAL]
    assert len(finals) == 2 and all(r.status == "evaluated" and r.trained_epochs == 3 for r in finals)
    assert {r.content_hash for r in finals} <= {r.content_hash for r in promoted}  # from the highest rung
    best = max(finals, key=lambda r: r.fitness or 0.0)
    assert summary.best is not None and summary.best.content_hash == best.content_hash
    assert best.test_metrics and best.test_metrics != best.metrics  # test kept apart, from the final training

    fidelity = db.get_state("proxy_fidelity")
    assert [f["lower"] for f in fidelity] == [0, 1] and fidelity[1]["pairs"] == 2
    assert evolution._journal()[0].startswith("proxy fidelity (Kendall τ between successive rungs): 1→2 epochs")
    markdown, _ = write_report(db, tmp_path / "run", "ndcg@10", summary.stopped)
    report = markdown.read_text()
    assert "## Multi-fidelity selection" in report and "| 0 → 1 |" in report and "at rung 2 (3 epochs)" in report


def test_the_cpu_budget_ends_selection(tmp_path, prepared_small):
    config = load_evolution_config(
        _config(tmp_path, prepared_small.path, iterations=50, extra="  max_cpu_seconds: 1\n")
    )
    summary = Evolution(config, prepared_small.path).run()
    assert summary.stopped == "CPU budget" and summary.iterations == 0  # the seed's evaluation spent it
    assert summary.cpu_seconds > 1


def test_a_run_killed_while_a_promotion_is_pending_resumes_without_loss_or_repetition(tmp_path, prepared_small):
    config = _config(tmp_path, prepared_small.path, iterations=3)
    command = [sys.executable, "-m", "evorec", "evolve", "--config", str(config)]
    run = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    kill_when(  # once a promoted candidate is being trained
        run, tmp_path / "run", lambda db: any(r.rung == 1 for r in db.rung_results("pending")),
        timeout=900, failure="the run never promoted a candidate",
    )  # fmt: skip
    before = {(r.content_hash, r.rung): r for r in run_database(tmp_path / "run").rung_results()}
    interrupted = {key for key, r in before.items() if r.status == "pending"}
    assert interrupted

    resumed = subprocess.run([*command, "--resume"], capture_output=True, text=True, timeout=900)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    after = {(r.content_hash, r.rung): r for r in run_database(tmp_path / "run").rung_results()}
    assert set(before) <= set(after)  # nothing lost
    assert all(r.status == "evaluated" for r in after.values())
    for key, result in before.items():  # nothing repeated: finished rung evaluations stand as they were
        if result.status != "pending":
            assert after[key] == result
    assert all(after[key].trained_epochs == 2 for key in interrupted)
    _check_promotions(list(after.values()))
    assert len([r for r in after.values() if r.rung == FINAL]) == 2
