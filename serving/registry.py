"""The model registry: every model version, its promotion state, and an audit row for each move;
beside them, the index of runs (evolution runs and A/B experiments, from the CLI or a pipeline), so
the console and the CLI find every run in one place, under a human name.

A version walks ``proposed → evaluated → queued → experimenting → awaiting_approval → approved →
production``; ``rejected``, ``failed`` and ``rolled_back`` are exits (shared/DESIGN.md, "Registry
states"). ``retired`` is our addition: when a version is promoted, the version it replaces in
production moves to ``retired`` in the same transaction, so a model line (``name``) never has more
than one production version and a rollback knows what to go back to. Three moves belong to the
registry itself, not to callers of `Registry.transition`: production → retired (a promotion of
another version), production → rolled_back and retired → production (`Registry.rollback`).

Every move is an audit row (who, when, why) written in the transaction that makes it. Nothing
reaches production without an audit row into ``approved``: a person's (`Registry.approve`) or an
explicit auto-approval policy's (`Registry.auto_approve`, actor ``policy:<name>``).

The database is any SQLAlchemy URL: a SQLite file by default (WAL, and ``BEGIN IMMEDIATE`` so
that writers from several processes queue instead of failing), PostgreSQL at scale (row and
advisory locks, and a partial unique index that admits one production version per name). Opening a
registry brings its schema to the latest alembic revision in ``serving/migrations``.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy import (
    JSON,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Index,
    String,
    Text,
    create_engine,
    event,
    select,
    text,
)
from sqlalchemy.engine import Connection, Dialect, Engine, make_url
from sqlalchemy.exc import ArgumentError, IntegrityError, NoSuchModuleError, OperationalError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column
from sqlalchemy.types import TypeDecorator
from tenacity import Retrying, retry_if_exception, stop_after_delay, wait_random_exponential

from recsys.errors import EvorecError

if TYPE_CHECKING:
    from alembic.config import Config

    from recsys.settings import Settings

STATES = (
    "proposed",
    "evaluated",
    "queued",
    "experimenting",
    "awaiting_approval",
    "approved",
    "production",
    "rejected",
    "failed",
    "rolled_back",
    "retired",
)
TRANSITIONS: dict[str, tuple[str, ...]] = {
    "proposed": ("evaluated", "failed", "rejected"),
    "evaluated": ("queued", "rejected"),
    "queued": ("experimenting", "rejected"),
    "experimenting": ("awaiting_approval", "rejected", "failed"),
    "awaiting_approval": ("approved", "rejected"),
    "approved": ("production",),
    "production": ("rolled_back", "retired"),
    "retired": ("production",),
    "rejected": (),
    "failed": (),
    "rolled_back": (),
}
INITIAL_STATES = ("proposed", "evaluated")
# Moves only the registry makes, and how they come about (for the refusal message).
REGISTRY_MOVES: dict[tuple[str, str], str] = {
    ("production", "retired"): "to retired when another version of its name is promoted",
    ("production", "rolled_back"): "to rolled_back by a rollback",
    ("retired", "production"): "back to production by a rollback",
}
POLICY_PREFIX = "policy:"
SQLITE_BUSY_TIMEOUT_MS = 30_000
_BEGIN_OPTION = "evorec_sqlite_begin"
_MIGRATIONS_INI = Path(__file__).resolve().parent / "alembic.ini"


class RegistryError(EvorecError):
    """A registry request cannot be met: unknown version, no actor or reason, nothing to roll back."""


class IllegalTransition(RegistryError):
    """The state machine does not allow this move from the version's current state."""


class StateChanged(IllegalTransition):
    """The version is no longer in the state the caller expected: someone else moved it first."""


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes, stored as naive UTC: SQLite keeps no time zone, so every backend keeps none."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return None if value is None else value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return None if value is None else value.replace(tzinfo=UTC)


class Base(DeclarativeBase):
    """The registry's tables; alembic revisions create them, autogenerate compares against these."""


_PRODUCTION_ONLY = text("state = 'production'")


class ModelVersion(Base):
    __tablename__ = "model_versions"
    __table_args__ = (
        CheckConstraint(f"state IN ({', '.join(repr(s) for s in STATES)})", name="ck_model_versions_state"),
        Index("ix_model_versions_name_state", "name", "state"),
        Index(
            "uq_model_versions_one_production",
            "name",
            unique=True,
            sqlite_where=_PRODUCTION_ONLY,
            postgresql_where=_PRODUCTION_ONLY,
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(255), default="default")
    candidate_id: Mapped[str] = mapped_column(String(255))
    content_hash: Mapped[str] = mapped_column(String(128))
    artifact_uri: Mapped[str] = mapped_column(Text)
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON)
    state: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
    created_by: Mapped[str] = mapped_column(String(255))


class AuditEntry(Base):
    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    version_id: Mapped[int] = mapped_column(ForeignKey("model_versions.id"), index=True)
    from_state: Mapped[str | None] = mapped_column(String(32))
    to_state: Mapped[str] = mapped_column(String(32))
    actor: Mapped[str] = mapped_column(String(255))
    reason: Mapped[str] = mapped_column(Text)
    at: Mapped[datetime] = mapped_column(UTCDateTime)


RUN_KINDS = ("evolution", "experiment")


class RunEntry(Base):
    """A run's folder under a unique human name; ``pipeline`` names the pipeline run it belongs to."""

    __tablename__ = "runs"
    __table_args__ = (CheckConstraint(f"kind IN ({', '.join(repr(k) for k in RUN_KINDS)})", name="ck_runs_kind"),)

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(32))
    name: Mapped[str] = mapped_column(String(255), unique=True)
    folder: Mapped[str] = mapped_column(Text, unique=True)
    report: Mapped[str | None] = mapped_column(Text)
    pipeline: Mapped[str | None] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


@dataclass(frozen=True)
class RunInfo:
    """An indexed run: what it is, its name, its folder and its report page (when it has one)."""

    id: int
    kind: str
    name: str
    folder: Path
    report: Path | None
    pipeline: str | None
    created_at: datetime


@dataclass(frozen=True)
class VersionInfo:
    """A model version as callers see it: a snapshot, detached from the database."""

    id: int
    name: str
    candidate_id: str
    content_hash: str
    artifact_uri: str
    metrics: dict[str, Any]
    state: str
    created_at: datetime
    updated_at: datetime
    created_by: str


@dataclass(frozen=True)
class AuditInfo:
    """One move of one version: who made it, when (UTC) and why."""

    id: int
    version_id: int
    from_state: str | None
    to_state: str
    actor: str
    reason: str
    at: datetime


class RegistrySettings(BaseSettings):
    """``EVOREC_REGISTRY_URL`` points every command at a shared registry (e.g. PostgreSQL)."""

    model_config = SettingsConfigDict(env_prefix="EVOREC_REGISTRY_")

    url: str | None = None


def default_registry_url(settings: Settings) -> str:
    """``$EVOREC_REGISTRY_URL`` when set, else a SQLite file in the data dir (no set-up needed)."""
    configured = RegistrySettings().url
    if configured:
        return configured
    settings.data_dir.mkdir(parents=True, exist_ok=True)  # the default lives in the cache evorec owns
    return f"sqlite:///{settings.data_dir / 'registry.db'}"


def alembic_config(connection: Connection | None = None) -> Config:
    """The packaged migrations; with ``connection`` alembic runs on it, so any URL works."""
    from alembic.config import Config

    config = Config(str(_MIGRATIONS_INI))
    config.attributes["connection"] = connection
    return config


class Registry:
    """The registry on one database; several processes may use the same database at once.

    Example::

        with Registry("sqlite:///registry.db") as registry:
            version = registry.register(candidate_id="sasrec", content_hash=digest, artifact_uri="gs://bucket/m7",
                                        metrics={"ndcg@10": 0.1}, actor="offline-agent", reason="trained in full")
            registry.transition(version.id, "queued", actor="offline-agent", reason="best of run 7")
    """

    def __init__(self, url: str | None = None) -> None:
        if url is None:
            from recsys.settings import get_settings

            url = default_registry_url(get_settings())
        self._engine = _create_engine(url)
        self._writer = self._engine.execution_options(**{_BEGIN_OPTION: "BEGIN IMMEDIATE"})
        try:
            self._upgrade(url)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """Release the database connections."""
        self._engine.dispose()

    def __enter__(self) -> Registry:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()

    def register(
        self,
        *,
        candidate_id: str,
        content_hash: str,
        artifact_uri: str,
        metrics: dict[str, Any],
        actor: str,
        reason: str,
        name: str = "default",
        state: str = "evaluated",
    ) -> VersionInfo:
        """Add a trained candidate as a new version, with the audit row that brought it in."""
        _require_who_and_why(actor, reason)
        if state not in INITIAL_STATES:
            raise IllegalTransition(f"a new version starts as proposed or evaluated, not {state}")
        fields = {
            "name": name,
            "candidate_id": candidate_id,
            "content_hash": content_hash,
            "artifact_uri": artifact_uri,
        }
        for field, value in fields.items():
            if not value.strip():
                raise RegistryError(f"a new version needs a non-empty {field}")
        _check_metrics(metrics)
        now = datetime.now(UTC)
        with self._write() as session:
            row = ModelVersion(**fields, metrics=metrics, state=state, created_at=now, updated_at=now, created_by=actor)
            session.add(row)
            session.flush()
            session.add(
                AuditEntry(version_id=row.id, from_state=None, to_state=state, actor=actor, reason=reason, at=now)
            )
            return _version_info(row)

    def transition(
        self, version_id: int, to_state: str, *, actor: str, reason: str, expected_state: str | None = None
    ) -> VersionInfo:
        """Move a version one step, with its audit row(s), in one transaction.

        A move to production retires the current production version of the same name.
        ``expected_state`` refuses the move (`StateChanged`) if someone changed the state meanwhile.
        """
        _require_who_and_why(actor, reason)
        with self._write() as session:
            row = _existing(session, version_id, lock=True)
            if expected_state is not None and row.state != expected_state:
                raise StateChanged(
                    f"version {version_id} is {row.state}, not {expected_state} as expected: "
                    "someone moved it meanwhile; look at it again before retrying"
                )
            _check_move(row, to_state)
            _move(session, row, to_state, actor, reason)
            return _version_info(row)

    def approve(self, version_id: int, actor: str, reason: str) -> VersionInfo:
        """A person approves a version awaiting approval; it goes to production at once.

        The audit row into ``approved`` is the proof that a person approved.
        """
        if actor.startswith(POLICY_PREFIX):
            raise RegistryError(f"{actor!r} names a policy; a person approves under their own name")
        return self._approve_and_promote(version_id, actor, reason)

    def auto_approve(self, version_id: int, policy: str) -> VersionInfo:
        """Approve for an explicit auto-approval policy; the actor ``policy:<name>`` tells it from a person."""
        if not policy.strip():
            raise RegistryError("an auto-approval needs the name of the policy that allows it")
        return self._approve_and_promote(version_id, POLICY_PREFIX + policy, f"auto-approved by policy {policy!r}")

    def bootstrap(self, version_id: int, policy: str) -> VersionInfo:
        """Make an evaluated version the first production version of its name, for a named policy.

        With nothing in production there is nothing to experiment against, so the first version
        cannot come in through an experiment; this is the one way in without one, open only while
        the name has never had a production version, and its audit rows name the policy.
        """
        if not policy.strip():
            raise RegistryError("a first production version needs the name of the policy that allows it")
        actor = POLICY_PREFIX + policy
        with self._write() as session:
            row = _existing(session, version_id, lock=True)
            _serialise(session.connection(), f"production:{row.name}")
            if row.state != "evaluated":
                raise IllegalTransition(
                    f"version {version_id} is {row.state}; only an evaluated version can be the first in production"
                )
            earlier = (
                select(AuditEntry.id)
                .join(ModelVersion, AuditEntry.version_id == ModelVersion.id)
                .where(ModelVersion.name == row.name, AuditEntry.to_state == "production")
            )
            if session.scalars(earlier.limit(1)).first() is not None:
                raise RegistryError(
                    f"{row.name!r} has had a production version; later versions reach production only through "
                    "an experiment and an approval"
                )
            reason = f"first production version of {row.name!r} (policy {policy!r}): nothing to experiment against"
            _record(session, row, "approved", actor, reason)
            _move(session, row, "production", actor, reason)
            return _version_info(row)

    def reject(self, version_id: int, actor: str, reason: str) -> VersionInfo:
        """Take a version out of the running from any state that allows it."""
        return self.transition(version_id, "rejected", actor=actor, reason=reason)

    def rollback(self, name: str = "default", *, actor: str, reason: str) -> VersionInfo:
        """Undo the last promotion of ``name``: its production version is rolled back, the latest retired one returns.

        Returns the version that is in production again.
        """
        _require_who_and_why(actor, reason)
        with self._write() as session:
            _serialise(session.connection(), f"production:{name}")
            current = _production_version(session, name, lock=True)
            if current is None:
                raise RegistryError(f"nothing to roll back: no version of {name!r} is in production")
            previous = _latest_retired(session, name)
            if previous is None:
                raise RegistryError(
                    f"nothing to roll back to: version {current.id} is in production and no earlier "
                    f"version of {name!r} is retired"
                )
            _record(session, current, "rolled_back", actor, reason)
            session.flush()  # frees the production slot before the unique index sees the returning version
            _move(session, previous, "production", actor, reason)
            return _version_info(previous)

    def get(self, version_id: int) -> VersionInfo:
        """One version by id."""
        with self._read() as session:
            return _version_info(_existing(session, version_id))

    def versions(self, state: str | None = None, name: str | None = None) -> list[VersionInfo]:
        """Versions, newest first, optionally only those in ``state`` or of model line ``name``."""
        query = select(ModelVersion).order_by(ModelVersion.id.desc())
        if state is not None:
            _check_state(state)
            query = query.where(ModelVersion.state == state)
        if name is not None:
            query = query.where(ModelVersion.name == name)
        with self._read() as session:
            return [_version_info(row) for row in session.scalars(query)]

    def production(self, name: str = "default") -> VersionInfo | None:
        """The version of ``name`` that serves traffic, if any."""
        with self._read() as session:
            row = _production_version(session, name)
            return None if row is None else _version_info(row)

    def audit(self, version_id: int | None = None) -> list[AuditInfo]:
        """The audit log, oldest first; of one version when ``version_id`` is given."""
        query = select(AuditEntry).order_by(AuditEntry.id)
        with self._read() as session:
            if version_id is not None:
                _existing(session, version_id)
                query = query.where(AuditEntry.version_id == version_id)
            return [_audit_info(row) for row in session.scalars(query)]

    def record_run(
        self, kind: str, folder: Path, *, name: str | None = None, report: Path | None = None,
        pipeline: str | None = None,
    ) -> RunInfo:  # fmt: skip
        """Index a run's folder (again: its report and pipeline are updated, its name kept).

        The name is ``name`` (default: the folder's), with ``-2``, ``-3``... when another run has it.
        """
        if kind not in RUN_KINDS:
            raise RegistryError(f"unknown run kind {kind!r}; the kinds are {', '.join(RUN_KINDS)}")
        where = str(folder.resolve())
        with self._write() as session:
            row = session.scalars(select(RunEntry).where(RunEntry.folder == where)).first()
            if row is None:
                wanted = name or folder.resolve().name
                taken = set(session.scalars(select(RunEntry.name).where(RunEntry.name.startswith(wanted))))
                unique = next(
                    n for n in (wanted, *(f"{wanted}-{i}" for i in range(2, len(taken) + 3))) if n not in taken
                )
                row = RunEntry(kind=kind, name=unique, folder=where, created_at=datetime.now(UTC))
                session.add(row)
            row.report = str(report.resolve()) if report is not None else row.report
            row.pipeline = pipeline or row.pipeline
            session.flush()
            return _run_info(row)

    def runs(self, kind: str | None = None) -> list[RunInfo]:
        """Indexed runs, newest first, optionally of one kind."""
        query = select(RunEntry).order_by(RunEntry.id.desc())
        if kind is not None:
            query = query.where(RunEntry.kind == kind)
        with self._read() as session:
            return [_run_info(row) for row in session.scalars(query)]

    def _approve_and_promote(self, version_id: int, actor: str, reason: str) -> VersionInfo:
        _require_who_and_why(actor, reason)
        with self._write() as session:
            row = _existing(session, version_id, lock=True)
            for step in ("approved", "production"):
                _check_move(row, step)
                _move(session, row, step, actor, reason)
            return _version_info(row)

    def _upgrade(self, url: str) -> None:
        """Bring the schema to the latest revision; concurrent openers queue on the write lock."""
        from alembic import command

        try:
            with self._writer.begin() as connection:
                _serialise(connection, "evorec-registry-migrations")
                command.upgrade(alembic_config(connection), "head")
        except OperationalError as exc:
            raise RegistryError(f"cannot open the registry at {_shown(url)}: {exc.orig}") from exc

    @contextmanager
    def _write(self) -> Iterator[Session]:
        """One write transaction (``BEGIN IMMEDIATE`` on SQLite, so concurrent writers queue)."""
        with _database_errors(), Session(self._writer, expire_on_commit=False) as session, session.begin():
            yield session

    @contextmanager
    def _read(self) -> Iterator[Session]:
        """One read transaction: a consistent snapshot that does not block writers."""
        with _database_errors(), Session(self._engine) as session, session.begin():
            yield session


@contextmanager
def _database_errors() -> Iterator[None]:
    """Turn what the database refuses into messages a user can act on."""
    try:
        yield
    except IntegrityError as exc:
        raise StateChanged(f"a concurrent change conflicts with this one ({exc.orig}); look again and retry") from exc
    except OperationalError as exc:
        raise RegistryError(f"the registry database refused the request: {exc.orig}") from exc


def _create_engine(url: str) -> Engine:
    """An engine for ``url``; a malformed URL, a missing driver or a SQLite file in a folder that does
    not exist (a mistyped path, which would otherwise become a new, empty registry) is refused."""
    try:
        parsed = make_url(url)
        if parsed.get_backend_name() != "sqlite":
            return create_engine(url, pool_pre_ping=True)
        engine = create_engine(url)
    except (ArgumentError, NoSuchModuleError, ImportError, ValueError) as exc:
        raise RegistryError(
            f"{_shown(url)!r} is not a registry URL this installation can open ({exc}); "
            "use e.g. sqlite:///path/to/registry.db or postgresql+psycopg://host/db"
        ) from exc
    if parsed.database and parsed.database != ":memory:" and not parsed.database.startswith("file:"):
        folder = Path(parsed.database).parent
        if not folder.is_dir():
            raise RegistryError(f"the registry's folder {folder} does not exist: is the path in {_shown(url)!r} right?")
    event.listen(engine, "connect", _sqlite_on_connect)
    event.listen(engine, "begin", _sqlite_on_begin)
    return engine


def _shown(url: str) -> str:
    """The URL as messages may show it: without its password."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return url


def _sqlite_on_connect(dbapi_connection: Any, connection_record: Any) -> None:
    """Let the ``begin`` event emit BEGIN itself; wait for locks; let readers run beside the writer.

    This is SQLAlchemy's documented pysqlite recipe for transactions it controls.
    """
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
    # Two openers of a fresh file that switch it to WAL at once both hold a shared lock and want an
    # exclusive one: SQLite answers one of them "locked" at once, without waiting, so retry that.
    for attempt in Retrying(
        retry=retry_if_exception(lambda exc: isinstance(exc, sqlite3.OperationalError) and "locked" in str(exc)),
        wait=wait_random_exponential(multiplier=0.01, max=0.5),
        stop=stop_after_delay(SQLITE_BUSY_TIMEOUT_MS / 1000),
        reraise=True,
    ):
        with attempt:
            if cursor.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                cursor.execute("PRAGMA journal_mode = WAL")
    cursor.execute("PRAGMA foreign_keys = ON")
    cursor.close()


def _sqlite_on_begin(connection: Connection) -> None:
    connection.exec_driver_sql(connection.get_execution_options().get(_BEGIN_OPTION, "BEGIN"))


def _serialise(connection: Connection, key: str) -> None:
    """On PostgreSQL, queue transactions that touch ``key`` until commit, as BEGIN IMMEDIATE does on SQLite.

    Concurrent first opens then migrate once, and concurrent promotions of one name each see the
    version the previous one put in production (instead of failing on the unique index).
    """
    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(hashtext(:key))"), {"key": key})


def _require_who_and_why(actor: str, reason: str) -> None:
    if not actor.strip():
        raise RegistryError("every registry change needs an actor: who is making it")
    if not reason.strip():
        raise RegistryError("every registry change needs a reason: why it is made (it goes to the audit log)")


def _check_metrics(metrics: dict[str, Any]) -> None:
    """Metrics must store alike on every backend: a JSON object of finite numbers and text."""
    try:
        if not isinstance(metrics, dict):
            raise TypeError(f"got {type(metrics).__name__}")
        json.dumps(metrics, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise RegistryError(f"metrics must be a JSON object of finite numbers and text ({exc})") from exc


def _check_state(state: str) -> None:
    if state not in STATES:
        raise RegistryError(f"unknown state {state!r}; the states are {', '.join(STATES)}")


def _check_move(row: ModelVersion, to_state: str) -> None:
    """Refuse a move the state machine does not allow, saying where the version can go instead."""
    _check_state(to_state)
    if to_state in TRANSITIONS[row.state] and (row.state, to_state) not in REGISTRY_MOVES:
        return
    options = [state for state in TRANSITIONS[row.state] if (row.state, state) not in REGISTRY_MOVES]
    by_registry = [how for (source, _), how in REGISTRY_MOVES.items() if source == row.state]
    if options:
        where = f"it can go to {_either(options)}"
    elif by_registry:
        where = "it moves only " + ", or ".join(by_registry)
    else:
        raise IllegalTransition(f"version {row.id} is {row.state}, a final state; it cannot go to {to_state}")
    raise IllegalTransition(f"version {row.id} is {row.state}; {where}, not {to_state}")


def _either(states: list[str]) -> str:
    return states[0] if len(states) == 1 else f"{', '.join(states[:-1])} or {states[-1]}"


def _move(session: Session, row: ModelVersion, to_state: str, actor: str, reason: str) -> None:
    """Record an allowed move; a promotion first retires the version it replaces."""
    if to_state == "production":
        _require_approval(session, row)
        _serialise(session.connection(), f"production:{row.name}")
        current = _production_version(session, row.name, lock=True)
        if current is not None:
            _record(session, current, "retired", actor, f"replaced by version {row.id}: {reason}")
            session.flush()  # frees the production slot before the unique index sees the new version
    _record(session, row, to_state, actor, reason)


def _record(session: Session, row: ModelVersion, to_state: str, actor: str, reason: str) -> None:
    now = datetime.now(UTC)
    session.add(
        AuditEntry(version_id=row.id, from_state=row.state, to_state=to_state, actor=actor, reason=reason, at=now)
    )
    row.state = to_state
    row.updated_at = now


def _require_approval(session: Session, row: ModelVersion) -> None:
    """The invariant: production only after an audit row into approved (a rollback's version has an old one)."""
    approval = select(AuditEntry.id).where(AuditEntry.version_id == row.id, AuditEntry.to_state == "approved")
    if session.scalars(approval.limit(1)).first() is None:
        raise RegistryError(
            f"version {row.id} has no approval in the audit log, so it cannot go to production; "
            "its state was changed outside the registry: investigate before promoting anything"
        )


def _existing(session: Session, version_id: int, *, lock: bool = False) -> ModelVersion:
    """The version's row; with ``lock``, locked for this transaction where the database has row locks."""
    query = select(ModelVersion).where(ModelVersion.id == version_id)
    row = session.scalars(query.with_for_update() if lock else query).first()
    if row is None:
        raise RegistryError(f"no model version {version_id} in the registry; `evorec registry list` shows them")
    return row


def _production_version(session: Session, name: str, *, lock: bool = False) -> ModelVersion | None:
    query = select(ModelVersion).where(ModelVersion.name == name, ModelVersion.state == "production")
    return session.scalars(query.with_for_update() if lock else query).first()


def _latest_retired(session: Session, name: str) -> ModelVersion | None:
    """The retired version of ``name`` whose retirement is the most recent: the one a rollback restores."""
    query = (
        select(ModelVersion)
        .join(AuditEntry, AuditEntry.version_id == ModelVersion.id)
        .where(ModelVersion.name == name, ModelVersion.state == "retired", AuditEntry.to_state == "retired")
        .order_by(AuditEntry.id.desc())
        .limit(1)
    )
    return session.scalars(query.with_for_update()).first()


def _version_info(row: ModelVersion) -> VersionInfo:
    return VersionInfo(
        id=row.id,
        name=row.name,
        candidate_id=row.candidate_id,
        content_hash=row.content_hash,
        artifact_uri=row.artifact_uri,
        metrics=dict(row.metrics),
        state=row.state,
        created_at=row.created_at,
        updated_at=row.updated_at,
        created_by=row.created_by,
    )


def _audit_info(row: AuditEntry) -> AuditInfo:
    return AuditInfo(
        id=row.id,
        version_id=row.version_id,
        from_state=row.from_state,
        to_state=row.to_state,
        actor=row.actor,
        reason=row.reason,
        at=row.at,
    )


def _run_info(row: RunEntry) -> RunInfo:
    return RunInfo(
        id=row.id,
        kind=row.kind,
        name=row.name,
        folder=Path(row.folder),
        report=Path(row.report) if row.report else None,
        pipeline=row.pipeline,
        created_at=row.created_at,
    )
