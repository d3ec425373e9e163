"""Typed feedback records: databases earlier versions wrote still load, and records survive a round trip."""

from __future__ import annotations

import json
import math
import shutil
import sqlite3
from collections import Counter
from pathlib import Path

import pytest

from offline_agent.program_db import DatabaseConfig, ProgramDatabase
from offline_agent.proposers import feedback_text
from offline_agent.records import Critiques, Feedback
from offline_agent.report import report_markdown
from tests.offline_agent.histories import history

STATE = Path(__file__).resolve().parents[2] / "benchmarks" / "state"


def _written_before_typed_records(database: Path) -> bool:
    with sqlite3.connect(database) as conn:
        row = conn.execute("SELECT type FROM pragma_table_info('programs') WHERE name = 'feedback'").fetchone()
    return row is not None and row[0] == "JSON"


OLD_DATABASES = [p for p in sorted(STATE.glob("**/evolution.db")) if _written_before_typed_records(p)]
BLOCKS = {"model": "m", "loss": "l", "optim": "o", "reward": "r", "diagnosis": "d"}


def _copy(database: Path, tmp_path: Path) -> ProgramDatabase:
    copy = tmp_path / "evolution.db"
    shutil.copyfile(database, copy)
    return ProgramDatabase(DatabaseConfig(url=f"sqlite:///{copy}", islands=1))


def _raw_feedback(database: Path) -> dict[str, dict[str, object]]:
    with sqlite3.connect(database) as conn:
        return {key: json.loads(text) for key, text in conn.execute("SELECT key, feedback FROM programs")}


def test_the_committed_benchmark_databases_written_before_typed_records_are_all_there():
    found = Counter(p.relative_to(STATE).parts[0] for p in OLD_DATABASES)  # 14 fixtures, by benchmark
    assert found == {
        "evolve_ml-1m": 1,
        "evolve_ml-latest-small": 1,
        "feedback_ablation_ml-1m": 6,
        "feedback_ablation_ml-latest-small": 6,
    }


@pytest.mark.parametrize("database", OLD_DATABASES, ids=lambda p: str(p.relative_to(STATE).parent))
def test_every_row_of_an_old_database_loads_into_typed_fields_with_nothing_lost(tmp_path, database):
    raw = _raw_feedback(database)
    db = _copy(database, tmp_path)
    programs = db.programs()
    assert {p.key for p in programs} == set(raw)
    for program in programs:
        stored, feedback = raw[program.key], program.feedback
        assert feedback.model_dump(mode="json", exclude_unset=True) == stored
        assert feedback.model_extra == {}  # every key earlier versions wrote has a typed field
        assert feedback.rationale == stored.get("rationale", "") and feedback.rule == stored.get("rule")
        assert [e.valid_ndcg10 for e in feedback.history] == [e["valid_ndcg@10"] for e in stored["history"]]
        assert feedback.test_metrics == stored["test_metrics"] and feedback.stopped == stored["stopped"]
        if "critiques" in stored:
            assert feedback.critiques is not None
            assert feedback.critiques.assessment.status == stored["critiques"]["assessment"]["status"]
            assert feedback.critiques.markdown == stored["critiques"]["markdown"] != ""
            assert feedback.complaints == stored["complaints"] and feedback.signals == stored["signals"]


def test_an_old_database_reports_and_prompts_from_its_typed_records_and_takes_new_ones(tmp_path):
    database = STATE / "evolve_ml-latest-small" / "evolution" / "evolution.db"
    db = _copy(database, tmp_path)
    best = db.best()
    assert best is not None and best.feedback.rule == "uniformity_regularizer"
    report = report_markdown(db, "ndcg@10", "iterations")
    assert "uniformity_regularizer" in report and "## Feedback chain of the best" in report
    assert f"{best.feedback.test_metrics['ndcg@10']:.4f}" in report
    prompt = feedback_text(best)
    assert "User-simulator critiques:" in prompt and f"(best epoch {best.feedback.best_epoch})" in prompt
    child = db.add({**BLOCKS}, "f" * 64, best, 99, Feedback(rationale="a new edit", rule="wider"))
    assert child is not None
    stored = db.record_evaluation(child.key, {"ndcg@10": 0.5}, child.feedback.merged(stopped="epochs"))
    assert (stored.feedback.rule, stored.feedback.stopped) == ("wider", "epochs")
    assert db.get(best.key).feedback == best.feedback  # the old rows are untouched


def test_a_full_record_survives_the_database_with_nan_and_infinity(tmp_path):
    db = ProgramDatabase(DatabaseConfig(url=f"sqlite:///{tmp_path}/db.sqlite", islands=1))
    db.add_initial(BLOCKS, "a" * 64)
    seed = db.pending()[0]
    assert seed.feedback == Feedback()  # a row without a record reads as an empty one
    feedback = seed.feedback.merged(
        stage="train",
        history=history([0.01, 0.03, 0.02]),
        stopped="patience",
        best_epoch=2,
        test_metrics={"ndcg@10": 0.02, "novelty@10": math.inf},
        isolation=("netns", "rlimits"),
        signals={"popularity_bias": 0.9},
        critiques={"assessment": {"status": "CRITICAL", "failure_modes": []}, "markdown": "**CRITICAL**"},
        reward_alignment={"reward": "clicks@1", "alignment": math.nan, "error": None, "logs": [{"users": 3}]},
    )
    stored = db.record_evaluation(seed.key, {"ndcg@10": 0.03}, feedback)
    read = db.get(seed.key).feedback
    assert read.history == feedback.history and read.history[1].best_epoch == 2
    assert read.test_metrics is not None and read.test_metrics["novelty@10"] == math.inf
    assert read.reward_alignment is not None and math.isnan(read.reward_alignment.alignment or 0.0)
    assert read.reward_alignment.model_extra == {"logs": [{"users": 3}]}  # kept, though the loop never reads it
    assert isinstance(read.critiques, Critiques) and read.critiques.assessment.model_extra == {"failure_modes": []}
    assert read.isolation == ("netns", "rlimits") and stored.feedback.stage == "train"


def test_keys_a_newer_version_wrote_survive_being_read_and_rewritten(tmp_path):
    db = ProgramDatabase(DatabaseConfig(url=f"sqlite:///{tmp_path}/db.sqlite", islands=1))
    db.add_initial(BLOCKS, "b" * 64)
    key = db.pending()[0].key
    with sqlite3.connect(tmp_path / "db.sqlite") as conn:
        conn.execute(
            "UPDATE programs SET feedback = ? WHERE key = ?",
            (json.dumps({"rationale": "from a newer version", "energy_joules": 12.5}), key),
        )
    program = db.get(key)
    assert program.feedback.rationale == "from a newer version" and program.feedback.stage is None
    stored = db.record_evaluation(key, {"ndcg@10": 0.1}, program.feedback.merged(stage="train"))
    assert stored.feedback.model_extra == {"energy_joules": 12.5} and stored.feedback.stage == "train"


def test_a_change_naming_no_field_or_of_the_wrong_type_is_refused():
    with pytest.raises(TypeError, match="no field rationle"):
        Feedback().merged(rationle="typo")
    with pytest.raises(ValueError, match="signals"):
        Feedback().merged(signals={"popularity_bias": "high"})
    with pytest.raises(ValueError, match="valid_ndcg@10"):
        Feedback().merged(history=[{"epoch": 1}])
