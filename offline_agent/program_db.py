"""The program database of the evolution loop: every candidate, where it came from, how it did.

Candidates live on islands (independent sub-populations that exchange their best only by
migration) and, once evaluated, compete for the cells of a MAP-Elites grid over configurable
feature dimensions: each cell keeps the fittest candidate whose features fall in it. Parents and
inspirations are sampled within an island with exploit / explore / elite ratios.

Storage is SQLAlchemy Core: a SQLite file in WAL mode by default, any SQLAlchemy URL (e.g.
PostgreSQL) at scale. Every change is one transaction, so a run killed at any point resumes with
no candidate lost and none evaluated twice: candidates are written as ``pending`` before their
evaluation and marked ``evaluated`` or ``failed`` after it. The ``rungs`` table holds each
candidate's results at each training budget of multi-fidelity selection (:mod:`offline_agent.rungs`),
written the same way; a database from before it gains the table when opened. Whatever is written
is redacted of secret values first (:mod:`recsys.redaction`): feedback and reasons carry text from
candidates and language models.
"""

from __future__ import annotations

import json
import math
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from sqlalchemy import (
    JSON,
    Column,
    Dialect,
    Engine,
    Float,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
    create_engine,
    event,
    func,
    select,
)
from sqlalchemy.engine import Connection
from sqlalchemy.exc import OperationalError

from offline_agent.records import Feedback
from recsys.errors import ConfigError
from recsys.redaction import redact_json

Status = Literal["pending", "evaluated", "failed"]
CREATE_ATTEMPTS = 10  # a new database's tables: tries when other processes create them at the same moment


class FeedbackColumn(TypeDecorator[Feedback]):
    """A :class:`Feedback` stored as its JSON text; a row without one (the seed before its evaluation) reads
    as an empty record. Columns that earlier versions declared ``JSON`` hold the same text, so they read too."""

    impl = Text
    cache_ok = True

    def process_bind_param(self, value: Feedback | None, dialect: Dialect) -> str | None:
        return None if value is None else value.model_dump_json()

    def process_result_value(self, value: str | None, dialect: Dialect) -> Feedback:
        return Feedback() if value is None else Feedback.model_validate_json(value)


metadata = MetaData()
programs = Table(
    "programs",
    metadata,
    Column("key", String(80), primary_key=True),  # content hash + island
    Column("content_hash", String(64), nullable=False, index=True),
    Column("island", Integer, nullable=False, index=True),
    Column("parent_key", String(80)),
    Column("iteration", Integer, nullable=False),
    Column("generation", Integer, nullable=False),
    Column("origin", String(16), nullable=False),  # initial | proposed | migrant
    Column("blocks", JSON, nullable=False),
    Column("status", String(16), nullable=False, index=True),
    Column("fitness", Float),
    Column("metrics", JSON),
    Column("feedback", FeedbackColumn),
    Column("reason", Text),
    Column("cell", String(64)),
    Column("created", Float, nullable=False),
)
elites = Table(
    "elites",
    metadata,
    Column("island", Integer, primary_key=True),
    Column("cell", String(64), primary_key=True),
    Column("program_key", String(80), nullable=False),
)
rungs = Table(
    "rungs",
    metadata,
    Column("content_hash", String(64), primary_key=True),
    Column("rung", Integer, primary_key=True),
    Column("epochs", Integer, nullable=False),  # the rung's epoch cap
    Column("status", String(16), nullable=False, index=True),
    Column("fitness", Float),
    Column("metrics", JSON),  # validation
    Column("test_metrics", JSON),  # kept apart: never shown to proposers, never ranked on
    Column("trained_epochs", Integer),
    Column("stopped", String(16)),
    Column("seconds", Float),
    Column("cpu_seconds", Float),
    Column("reason", Text),
    Column("created", Float, nullable=False),
)
state = Table("state", metadata, Column("name", String(64), primary_key=True), Column("value", JSON))


class FeatureDimension(BaseModel):
    """One axis of the MAP-Elites grid: a metric (or ``code_size``) cut into ``bins`` equal bins."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    low: float
    high: float
    bins: int = Field(default=5, ge=1, le=100)

    @model_validator(mode="after")
    def _ordered(self) -> FeatureDimension:
        if not self.low < self.high:
            raise ValueError(f"feature {self.name}: low ({self.low}) must be below high ({self.high})")
        return self

    def bin_of(self, value: float) -> int:
        if math.isnan(value):
            return 0
        share = (value - self.low) / (self.high - self.low)
        return min(max(int(share * self.bins), 0), self.bins - 1)


class DatabaseConfig(BaseModel):
    """Islands, grid and sampling of the program database."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    url: str = Field(default="", description="SQLAlchemy URL; empty: evolution.db in the run directory")
    islands: int = Field(default=3, ge=1)
    fitness: str = Field(default="ndcg@10", description="the validation metric that ranks candidates")
    features: tuple[FeatureDimension, ...] = (
        FeatureDimension(name="ndcg@10", low=0.0, high=0.3, bins=6),
        FeatureDimension(name="coverage@10", low=0.0, high=1.0, bins=5),
    )
    exploit_ratio: float = Field(default=0.7, ge=0, le=1)
    explore_ratio: float = Field(default=0.2, ge=0, le=1)
    inspirations: int = Field(default=3, ge=0)
    migration_interval: int = Field(default=10, ge=1, description="iterations between migrations")
    migrants: int = Field(default=1, ge=0, description="best candidates each island sends to the next")

    @model_validator(mode="after")
    def _ratios(self) -> DatabaseConfig:
        if self.exploit_ratio + self.explore_ratio > 1:
            raise ValueError("exploit_ratio + explore_ratio must not exceed 1 (the rest samples grid elites)")
        return self


@dataclass(frozen=True)
class Program:
    """One candidate as stored: its blocks, lineage and (once evaluated) results."""

    key: str
    content_hash: str
    island: int
    parent_key: str | None
    iteration: int
    generation: int
    origin: str
    blocks: dict[str, str]
    status: Status
    fitness: float | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    feedback: Feedback = field(default_factory=Feedback)
    reason: str | None = None
    cell: str | None = None


@dataclass(frozen=True)
class RungResult:
    """A candidate's training to one rung's epoch cap (by content: the same code on two islands trains once)."""

    content_hash: str
    rung: int
    epochs: int
    status: Status
    fitness: float | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    test_metrics: dict[str, float] = field(default_factory=dict)
    trained_epochs: int | None = None
    stopped: str | None = None
    seconds: float = 0.0
    cpu_seconds: float = 0.0
    reason: str | None = None
    created: float = 0.0


def program_key(content_hash: str, island: int) -> str:
    return f"{content_hash[:64]}@{island}"


def code_size(blocks: dict[str, str]) -> int:
    return sum(len(source.splitlines()) for source in blocks.values())


class ProgramDatabase:
    """Example::

    db = ProgramDatabase(DatabaseConfig(url="sqlite:///run/evolution.db"))
    db.add_initial(candidate.sources, candidate.content_hash)
    parent, inspirations = db.sample(island=0, rng=random.Random(0))
    """

    def __init__(self, config: DatabaseConfig) -> None:
        if not config.url:
            raise ConfigError("the program database needs a URL, e.g. sqlite:///runs/evolve/evolution.db")
        self.config = config
        self.engine: Engine = create_engine(config.url)
        if self.engine.dialect.name == "sqlite":
            event.listen(self.engine, "connect", _sqlite_pragmas)
        _create_tables(self.engine)

    # --- writing ------------------------------------------------------------------------------

    def add_initial(self, blocks: dict[str, str], content_hash: str) -> bool:
        """Seed every island with the initial program, once: a resumed run adds nothing."""
        with self.engine.begin() as conn:
            if conn.execute(select(func.count()).select_from(programs)).scalar_one():
                return False
            for island in range(self.config.islands):
                self._insert(conn, content_hash, island, None, 0, 0, "initial", blocks)
        return True

    def add(
        self,
        blocks: dict[str, str],
        content_hash: str,
        parent: Program,
        iteration: int,
        feedback: Feedback | None = None,
    ) -> Program | None:
        """Add a proposed child of ``parent`` on the parent's island as ``pending`` (with what is known
        of it already, e.g. the proposer's rationale); None when that island holds the same code."""
        with self.engine.begin() as conn:
            return self._insert(
                conn, content_hash, parent.island, parent.key, iteration, parent.generation + 1, "proposed", blocks,
                results={"feedback": feedback or Feedback()},
            )  # fmt: skip

    def _insert(
        self,
        conn: Connection,
        content_hash: str,
        island: int,
        parent_key: str | None,
        iteration: int,
        generation: int,
        origin: str,
        blocks: dict[str, str],
        status: Status = "pending",
        results: dict[str, Any] | None = None,
    ) -> Program | None:
        key = program_key(content_hash, island)
        if conn.execute(select(programs.c.key).where(programs.c.key == key)).first():
            return None
        row = {
            "key": key,
            "content_hash": content_hash,
            "island": island,
            "parent_key": parent_key,
            "iteration": iteration,
            "generation": generation,
            "origin": origin,
            "blocks": blocks,
            "status": status,
            "created": time.time(),
            **(results or {}),
        }
        row = redact_json(row)
        conn.execute(programs.insert().values(**row))
        program = _program(row)
        if status == "evaluated":
            self._place(conn, program)
        return program

    def record_evaluation(
        self,
        key: str,
        metrics: dict[str, float] | None,
        feedback: Feedback | None = None,
        reason: str | None = None,
        rung: RungResult | None = None,
    ) -> Program:
        """Store an evaluation's outcome: metrics (then the grid may change), or the failure reason; with
        ``feedback``, the candidate's whole record (what the proposal wrote included) becomes that; with
        ``rung``, the same evaluation's rung result, in the same transaction."""
        with self.engine.begin() as conn:
            if rung is not None:
                self._store_rung(conn, rung)
            program = self._get(conn, key)
            values: dict[str, Any] = {"feedback": feedback or program.feedback}
            if metrics is None:
                values |= {"status": "failed", "reason": reason}
            else:
                fitness = float(metrics.get(self.config.fitness, float("nan")))
                if not math.isfinite(fitness):
                    values |= {"status": "failed", "reason": reason or f"fitness {self.config.fitness} is {fitness}"}
                    values["metrics"] = metrics
                else:
                    values |= {
                        "status": "evaluated",
                        "metrics": metrics,
                        "fitness": fitness,
                        "reason": reason,
                        "cell": self.cell_of(metrics, program.blocks),
                    }
            conn.execute(programs.update().where(programs.c.key == key).values(**redact_json(values)))
            updated = self._get(conn, key)
            if updated.status == "evaluated":
                self._place(conn, updated)
            return updated

    def add_rungs(self, due: list[tuple[str, int, int]]) -> None:
        """Write ``(content hash, rung, epochs)`` promotions as ``pending`` before any is evaluated, in one
        transaction: a run killed later evaluates each once on resuming. Existing rows stay as they are."""
        with self.engine.begin() as conn:
            for content_hash, rung, epochs in due:
                if self._rung(conn, content_hash, rung) is None:
                    row = {"content_hash": content_hash, "rung": rung, "epochs": epochs, "status": "pending"}
                    conn.execute(rungs.insert().values(**row, created=time.time()))

    def record_rung(self, result: RungResult) -> RungResult:
        """Store a rung evaluation's outcome (its fitness read from the metrics, as for programs)."""
        with self.engine.begin() as conn:
            return self._store_rung(conn, result)

    def _store_rung(self, conn: Connection, result: RungResult) -> RungResult:
        fitness = float(result.metrics.get(self.config.fitness, float("nan"))) if result.metrics else float("nan")
        values: dict[str, Any] = {
            k: getattr(result, k)
            for k in ("epochs", "metrics", "test_metrics", "trained_epochs", "stopped", "seconds", "cpu_seconds")
        }
        if result.status == "evaluated" and math.isfinite(fitness):
            values |= {"status": "evaluated", "fitness": fitness, "reason": result.reason}
        else:
            values |= {"status": "failed", "reason": result.reason or f"fitness {self.config.fitness} is {fitness}"}
        values = redact_json(values)
        if self._rung(conn, result.content_hash, result.rung) is None:
            conn.execute(
                rungs.insert().values(content_hash=result.content_hash, rung=result.rung, created=time.time(), **values)
            )
        else:
            where = (rungs.c.content_hash == result.content_hash) & (rungs.c.rung == result.rung)
            conn.execute(rungs.update().where(where).values(**values))
        stored = self._rung(conn, result.content_hash, result.rung)
        assert stored is not None
        return stored

    def _rung(self, conn: Connection, content_hash: str, rung: int) -> RungResult | None:
        query = select(rungs).where(rungs.c.content_hash == content_hash, rungs.c.rung == rung)
        row = conn.execute(query).mappings().first()
        return _rung_result(dict(row)) if row is not None else None

    def _place(self, conn: Connection, program: Program) -> None:
        """Put ``program`` in its grid cell if the cell is empty or holds a less fit program."""
        assert program.cell is not None and program.fitness is not None
        current = conn.execute(
            select(elites.c.program_key).where(elites.c.island == program.island, elites.c.cell == program.cell)
        ).first()
        if current is None:
            conn.execute(elites.insert().values(island=program.island, cell=program.cell, program_key=program.key))
            return
        incumbent = self._get(conn, current[0])
        if program.fitness > (incumbent.fitness or -math.inf):
            conn.execute(
                elites.update()
                .where(elites.c.island == program.island, elites.c.cell == program.cell)
                .values(program_key=program.key)
            )

    def migrate(self, iteration: int) -> list[Program]:
        """Every ``migration_interval`` iterations, each island's best go to the next island (ring);
        a migrant keeps its code, results and lineage, so it is not evaluated again."""
        if self.config.islands < 2 or iteration % self.config.migration_interval:
            return []
        moved = []
        with self.engine.begin() as conn:
            done = conn.execute(select(state.c.value).where(state.c.name == "migrated_at")).scalar()
            if done == iteration:
                return []
            for island in range(self.config.islands):
                target = (island + 1) % self.config.islands
                for best in self._top(conn, island, self.config.migrants):
                    results = {k: getattr(best, k) for k in ("status", "fitness", "metrics", "feedback", "cell")}
                    status = results.pop("status")
                    copy = self._insert(
                        conn, best.content_hash, target, best.key, iteration, best.generation, "migrant",
                        best.blocks, status, results,
                    )  # fmt: skip
                    if copy is not None:
                        moved.append(copy)
            _set_state(conn, "migrated_at", iteration)
        return moved

    # --- reading ------------------------------------------------------------------------------

    def cell_of(self, metrics: dict[str, float], blocks: dict[str, str]) -> str:
        """The grid cell of a result, e.g. ``"3,1"``."""
        values = [
            float(code_size(blocks)) if f.name == "code_size" else float(metrics.get(f.name, float("nan")))
            for f in self.config.features
        ]
        return ",".join(str(f.bin_of(v)) for f, v in zip(self.config.features, values, strict=True))

    def get(self, key: str) -> Program:
        with self.engine.connect() as conn:
            return self._get(conn, key)

    def _get(self, conn: Connection, key: str) -> Program:
        row = conn.execute(select(programs).where(programs.c.key == key)).mappings().first()
        if row is None:
            raise KeyError(f"no program {key}")
        return _program(dict(row))

    def programs(self, island: int | None = None, status: Status | None = None) -> list[Program]:
        query = select(programs).order_by(programs.c.created, programs.c.key)
        if island is not None:
            query = query.where(programs.c.island == island)
        if status is not None:
            query = query.where(programs.c.status == status)
        with self.engine.connect() as conn:
            return [_program(dict(r)) for r in conn.execute(query).mappings()]

    def pending(self) -> list[Program]:
        """Candidates written but not yet evaluated: a resumed run evaluates these first."""
        return self.programs(status="pending")

    def grid(self, island: int) -> dict[str, Program]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(elites).where(elites.c.island == island)).all()
            return {cell: self._get(conn, key) for _, cell, key in rows}

    def _top(self, conn: Connection, island: int | None, count: int) -> list[Program]:
        query = select(programs).where(programs.c.status == "evaluated")
        if island is not None:
            query = query.where(programs.c.island == island)
        query = query.order_by(programs.c.fitness.desc(), programs.c.created, programs.c.key).limit(count)
        return [_program(dict(r)) for r in conn.execute(query).mappings()]

    def best(self, island: int | None = None) -> Program | None:
        with self.engine.connect() as conn:
            top = self._top(conn, island, 1)
        return top[0] if top else None

    def sample(self, island: int, rng: random.Random) -> tuple[Program, list[Program]]:
        """A parent and inspirations from ``island`` only.

        With probability ``exploit_ratio`` the parent is the island's fittest, with
        ``explore_ratio`` any evaluated program of the island, otherwise a random grid elite.
        Inspirations are other grid elites (diverse by construction), then the next fittest.
        """
        evaluated = self.programs(island=island, status="evaluated")
        if not evaluated:
            candidates = self.programs(island=island)
            if not candidates:
                raise LookupError(f"island {island} holds no program")
            return candidates[0], []
        cells = list(self.grid(island).values())
        draw = rng.random()
        if draw < self.config.exploit_ratio:
            parent = max(evaluated, key=lambda p: (p.fitness, -p.iteration))
        elif draw < self.config.exploit_ratio + self.config.explore_ratio:
            parent = rng.choice(evaluated)
        else:
            parent = rng.choice(cells)
        others = [p for p in cells if p.key != parent.key]
        rng.shuffle(others)
        inspirations = others[: self.config.inspirations]
        if len(inspirations) < self.config.inspirations:
            taken = {parent.key, *(p.key for p in inspirations)}
            ranked = sorted(evaluated, key=lambda p: -(p.fitness or 0.0))
            inspirations += [p for p in ranked if p.key not in taken][: self.config.inspirations - len(inspirations)]
        return parent, inspirations

    def rung_results(self, status: Status | None = None) -> list[RungResult]:
        query = select(rungs).order_by(rungs.c.rung, rungs.c.created, rungs.c.content_hash)
        if status is not None:
            query = query.where(rungs.c.status == status)
        with self.engine.connect() as conn:
            return [_rung_result(dict(r)) for r in conn.execute(query).mappings()]

    def best_at_top_rung(self) -> tuple[Program, RungResult] | None:
        """The run's best under multi-fidelity selection: the highest rung reached, then the best validation
        fitness there; None before any rung result."""
        evaluated = [r for r in self.rung_results("evaluated") if r.fitness is not None]
        best = max(evaluated, key=lambda r: (r.rung, r.fitness or 0.0, -r.created), default=None)
        if best is None:
            return None
        return self.by_content(best.content_hash), best

    def result(self) -> Program | None:
        """The run's result: under multi-fidelity selection the best of the highest rung reached, else the fittest."""
        top = self.best_at_top_rung()
        return top[0] if top else self.best()

    def by_content(self, content_hash: str) -> Program:
        """The first stored program with this code (any island: the copies share code and results)."""
        query = select(programs).where(programs.c.content_hash == content_hash).order_by(programs.c.created).limit(1)
        with self.engine.connect() as conn:
            row = conn.execute(query).mappings().first()
        if row is None:
            raise KeyError(f"no program with content {content_hash[:12]}")
        return _program(dict(row))

    def counts(self) -> dict[str, int]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(programs.c.status, func.count()).group_by(programs.c.status)).all()
        return {status: count for status, count in rows}

    def get_state(self, name: str, default: Any = None) -> Any:
        with self.engine.connect() as conn:
            value = conn.execute(select(state.c.value).where(state.c.name == name)).scalar()
        return default if value is None else value

    def set_state(self, name: str, value: Any) -> None:
        with self.engine.begin() as conn:
            _set_state(conn, name, value)

    def lineage(self, key: str) -> Iterator[Program]:
        """A program and its ancestors, newest first."""
        current: str | None = key
        while current is not None:
            program = self.get(current)
            yield program
            current = program.parent_key


def _create_tables(engine: Engine) -> None:
    """The tables, where missing. Processes opening a new database at once (a run and its watcher, parallel
    pipeline tasks) race between ``create_all``'s check and its CREATE: the loser finds the table made by the
    other, or SQLite refuses its lock upgrade at once (busy, to avoid a deadlock, whatever the timeout); either
    way it checks again. Each retry means another opener got further, so a few suffice."""
    for attempt in range(CREATE_ATTEMPTS):
        try:
            metadata.create_all(engine)
            return
        except OperationalError as exc:
            lost = "already exists" in str(exc) or "database is locked" in str(exc)
            if not lost or attempt == CREATE_ATTEMPTS - 1:
                raise
            time.sleep(0.05 * (attempt + 1))


def _set_state(conn: Connection, name: str, value: Any) -> None:
    value = redact_json(value)
    if conn.execute(select(state.c.name).where(state.c.name == name)).first():
        conn.execute(state.update().where(state.c.name == name).values(value=value))
    else:
        conn.execute(state.insert().values(name=name, value=value))


def _program(row: dict[str, Any]) -> Program:
    return Program(
        key=row["key"],
        content_hash=row["content_hash"],
        island=row["island"],
        parent_key=row.get("parent_key"),
        iteration=row["iteration"],
        generation=row["generation"],
        origin=row["origin"],
        blocks=_json(row["blocks"]),
        status=row["status"],
        fitness=row.get("fitness"),
        metrics=_json(row.get("metrics")) or {},
        feedback=row.get("feedback") or Feedback(),
        reason=row.get("reason"),
        cell=row.get("cell"),
    )


def _rung_result(row: dict[str, Any]) -> RungResult:
    return RungResult(
        content_hash=row["content_hash"],
        rung=row["rung"],
        epochs=row["epochs"],
        status=row["status"],
        fitness=row.get("fitness"),
        metrics=_json(row.get("metrics")) or {},
        test_metrics=_json(row.get("test_metrics")) or {},
        trained_epochs=row.get("trained_epochs"),
        stopped=row.get("stopped"),
        seconds=row.get("seconds") or 0.0,
        cpu_seconds=row.get("cpu_seconds") or 0.0,
        reason=row.get("reason"),
        created=row["created"],
    )


def _json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value


def _sqlite_pragmas(connection: Any, _: Any) -> None:
    """WAL lets readers (the review console) work while the loop writes; a busy timeout makes
    concurrent writers wait instead of failing. The timeout comes first: switching a new database to WAL
    takes a lock that another opener may hold at that moment."""
    cursor = connection.cursor()
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()
