"""Invariants of the program database under random operation sequences, and crash safety."""

from __future__ import annotations

import hashlib
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from offline_agent.program_db import DatabaseConfig, FeatureDimension, ProgramDatabase
from offline_agent.records import Feedback

BLOCKS = {"model": "m", "loss": "l", "optim": "o", "reward": "r", "diagnosis": "d"}


def _hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _config(url: str, islands: int = 3) -> DatabaseConfig:
    return DatabaseConfig(
        url=url,
        islands=islands,
        features=(
            FeatureDimension(name="ndcg@10", low=0.0, high=1.0, bins=4),
            FeatureDimension(name="coverage@10", low=0.0, high=1.0, bins=3),
        ),
        migration_interval=4,
        inspirations=2,
    )


operations = st.lists(
    st.tuples(
        st.integers(0, 2),  # island to sample from
        st.integers(0, 40),  # code variant (collisions exercise dedup)
        st.floats(0.0, 1.0),  # fitness (ndcg@10)
        st.floats(0.0, 1.0),  # coverage@10
        st.booleans(),  # evaluation failed
    ),
    min_size=1,
    max_size=40,
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps=operations, seed=st.integers(0, 1000))
def test_islands_grid_and_counts_keep_their_invariants(steps, seed):
    with tempfile.TemporaryDirectory() as folder:
        db = ProgramDatabase(_config(f"sqlite:///{folder}/db.sqlite"))
        rng = random.Random(seed)
        assert db.add_initial(BLOCKS, _hash("initial"))
        assert not db.add_initial(BLOCKS, _hash("initial"))  # a resumed run does not re-add it
        for key in [p.key for p in db.pending()]:
            db.record_evaluation(key, {"ndcg@10": 0.1, "coverage@10": 0.1})
        accepted, migrated = 3, 0
        for iteration, (island, variant, fitness, coverage, failed) in enumerate(steps, start=1):
            parent, inspirations = db.sample(island, rng)
            assert parent.island == island and all(p.island == island for p in inspirations)
            child = db.add({**BLOCKS, "model": f"m{variant}"}, _hash(f"v{variant}"), parent, iteration)
            if child is None:
                assert any(p.content_hash == _hash(f"v{variant}") for p in db.programs(island=island))
                continue
            accepted += 1
            metrics = None if failed else {"ndcg@10": fitness, "coverage@10": coverage}
            db.record_evaluation(child.key, metrics, reason="crashed" if failed else None)
            migrated += len(db.migrate(iteration))

        everything = db.programs()
        assert len(everything) == accepted + migrated == sum(db.counts().values())
        assert not db.pending()
        for island in range(3):
            evaluated = [p for p in everything if p.island == island and p.status == "evaluated"]
            grid = db.grid(island)
            assert set(grid) == {p.cell for p in evaluated}
            for cell, elite in grid.items():
                assert elite.island == island
                assert elite.fitness == max(p.fitness for p in evaluated if p.cell == cell)
        migrants = [p for p in everything if p.origin == "migrant"]
        assert all(db.get(p.parent_key).island == (p.island - 1) % 3 for p in migrants)


def test_failed_and_non_finite_evaluations_are_kept_with_their_reason(tmp_path):
    db = ProgramDatabase(_config(f"sqlite:///{tmp_path}/db.sqlite", islands=1))
    db.add_initial(BLOCKS, _hash("initial"))
    initial = db.pending()[0]
    failed = db.record_evaluation(initial.key, None, reason="sandbox: wall-clock limit of 60 s exceeded")
    assert failed.status == "failed" and "wall-clock" in failed.reason
    child = db.add({**BLOCKS, "loss": "x"}, _hash("x"), initial, 1)
    nan = db.record_evaluation(child.key, {"ndcg@10": float("nan")}, Feedback(stopped="epochs"))
    assert nan.status == "failed" and "ndcg@10 is nan" in nan.reason
    assert db.get(child.key).feedback.stopped == "epochs"  # what the evaluation saw is kept, as for a crash
    assert db.grid(0) == {} and db.best() is None
    assert [p.key for p in db.lineage(child.key)] == [child.key, initial.key]


WRITER = """
import hashlib, sys
from offline_agent.program_db import DatabaseConfig, ProgramDatabase
db = ProgramDatabase(DatabaseConfig(url=sys.argv[1], islands=2))
blocks = {"model": "m", "loss": "l", "optim": "o", "reward": "r", "diagnosis": "d"}
db.add_initial(blocks, hashlib.sha256(b"initial").hexdigest())
parent = db.pending()[0]
print("ready", flush=True)
for i in range(100000):
    child = db.add({**blocks, "model": str(i)}, hashlib.sha256(str(i).encode()).hexdigest(), parent, i + 1)
    db.record_evaluation(child.key, {"ndcg@10": (i % 97) / 97, "coverage@10": 0.5})
"""


@pytest.mark.integration
def test_a_writer_killed_mid_run_leaves_a_consistent_database(tmp_path):
    url = f"sqlite:///{tmp_path}/db.sqlite"
    writer = subprocess.Popen([sys.executable, "-c", WRITER, url], stdout=subprocess.PIPE, text=True)
    assert writer.stdout.readline().strip() == "ready"
    time.sleep(1.5)
    writer.send_signal(signal.SIGKILL)
    writer.wait()
    db = ProgramDatabase(DatabaseConfig(url=url, islands=2))
    everything = db.programs()
    assert len(everything) > 10
    assert len(db.pending()) <= 3  # the initial programs, and at most the one being written at the kill
    for island, grid in ((i, db.grid(i)) for i in range(2)):
        for cell, elite in grid.items():
            assert elite.fitness == max(p.fitness for p in everything if p.island == island and p.cell == cell)
    assert not db.add_initial(BLOCKS, _hash("initial"))
    with sqlite3.connect(tmp_path / "db.sqlite") as conn:  # readers work beside the writer: WAL, and intact
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]


def test_no_secret_value_is_written_to_the_database_file(tmp_path, monkeypatch):
    secret = "sk-live-0a1b2c3d4e5f6a7b8c9d"
    monkeypatch.setenv("SERVICE_TOKEN", secret)
    db = ProgramDatabase(_config(f"sqlite:///{tmp_path / 'e.db'}", islands=1))
    db.add_initial({**BLOCKS, "model": f"KEY = '{secret}'"}, _hash("seed"))
    seed = db.programs()[0]
    child = db.add(
        BLOCKS,
        _hash("child"),
        seed,
        1,
        feedback=Feedback.model_validate({"rationale": f"use {secret}", secret: [secret]}),
    )
    assert child is not None and secret not in str(child)
    db.record_evaluation(child.key, None, Feedback(diagnosis_error=f"RuntimeError: {secret}"), f"crashed: {secret}")
    db.record_evaluation(
        seed.key, {"ndcg@10": 0.1, "coverage@10": 0.2}, Feedback(rationale=f"the simulated users said {secret}")
    )
    db.set_state("rejections", [f"iteration 1: the reply echoed {secret}"])
    db.engine.dispose()
    files = list(tmp_path.iterdir())
    assert files and not any(secret.encode() in path.read_bytes() for path in files)
    stored = db.get(child.key)
    assert stored.reason == "crashed: [REDACTED $SERVICE_TOKEN]"
    assert db.get_state("rejections") == ["iteration 1: the reply echoed [REDACTED $SERVICE_TOKEN]"]


def _open_at_once(url: str, openers: int) -> list[str]:
    """Open the database at ``url`` from ``openers`` threads released together; the errors they met."""
    ready, errors = threading.Barrier(openers), []

    def open_it() -> None:
        ready.wait()
        try:
            ProgramDatabase(DatabaseConfig(url=url)).counts()
        except Exception as exc:  # what the test reports
            errors.append(f"{type(exc).__name__}: {exc}")

    threads = [threading.Thread(target=open_it) for _ in range(openers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return errors


def test_processes_opening_a_new_database_at_once_all_get_it(tmp_path):
    """A run and its watcher (or parallel pipeline tasks) opening a database that does not exist yet race between
    the check for each table and its creation; every opener must come away with the tables."""
    for attempt in range(5):
        errors = _open_at_once(f"sqlite:///{tmp_path / f'new{attempt}.db'}", openers=6)
        assert not errors, errors[0]
