"""The model registry: its state machine, audit trail, concurrency, migrations and CLI."""

from __future__ import annotations

import functools
import itertools
import multiprocessing
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import typer
from alembic import command
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, inspect, text
from typer.testing import CliRunner

from evorec.cli_registry import promote_app, registry_app
from recsys.errors import EvorecError
from serving.registry import (
    STATES,
    TRANSITIONS,
    IllegalTransition,
    Registry,
    RegistryError,
    StateChanged,
    alembic_config,
    default_registry_url,
)

TO_AWAITING = ("queued", "experimenting", "awaiting_approval")
# The moves only the registry itself makes: a promotion retires, a rollback rolls back and restores.
REGISTRY_ONLY = [("production", "retired"), ("production", "rolled_back"), ("retired", "production")]
ILLEGAL = [(a, b) for a in STATES for b in STATES if b not in TRANSITIONS[a]]


def _url(path: Path) -> str:
    return f"sqlite:///{path}"


@pytest.fixture
def registry_url(database_url: Callable[[str], str]) -> str:
    return database_url("registry")


@pytest.fixture
def registry(registry_url: str) -> Iterator[Registry]:
    with Registry(registry_url) as opened:
        yield opened


def _register(registry: Registry, name: str = "default", state: str = "evaluated", candidate: str = "sasrec") -> int:
    version = registry.register(
        candidate_id=candidate,
        content_hash="0f" * 32,
        artifact_uri="gs://models/sasrec",
        metrics={"valid": {"ndcg@10": 0.1}},
        actor="offline-agent",
        reason="trained in full",
        name=name,
        state=state,
    )
    return version.id


def _advance(registry: Registry, version_id: int, *states: str) -> None:
    for state in states:
        registry.transition(version_id, state, actor="online-agent", reason=f"on to {state}")


def _awaiting(registry: Registry, name: str = "default") -> int:
    version_id = _register(registry, name)
    _advance(registry, version_id, *TO_AWAITING)
    return version_id


def _moves(registry: Registry, version_id: int) -> list[tuple[str | None, str]]:
    return [(entry.from_state, entry.to_state) for entry in registry.audit(version_id)]


def test_transitions_are_the_designed_state_machine() -> None:
    assert STATES == (
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
    allowed = {source: set(targets) for source, targets in TRANSITIONS.items() if targets}
    assert allowed == {
        "proposed": {"evaluated", "failed", "rejected"},
        "evaluated": {"queued", "rejected"},
        "queued": {"experimenting", "rejected"},
        "experimenting": {"awaiting_approval", "rejected", "failed"},
        "awaiting_approval": {"approved", "rejected"},
        "approved": {"production"},
        "production": {"rolled_back", "retired"},
        "retired": {"production"},
    }


def test_happy_path_records_who_when_and_why_in_order(registry: Registry) -> None:
    start = datetime.now(UTC)
    version_id = _register(registry, state="proposed")
    _advance(registry, version_id, "evaluated", *TO_AWAITING)
    promoted = registry.approve(version_id, "alice", "retention up 2%, guardrails held")

    assert promoted.state == "production" and registry.production() == promoted
    trail = registry.audit(version_id)
    assert [(e.from_state, e.to_state) for e in trail] == [
        (None, "proposed"),
        ("proposed", "evaluated"),
        ("evaluated", "queued"),
        ("queued", "experimenting"),
        ("experimenting", "awaiting_approval"),
        ("awaiting_approval", "approved"),
        ("approved", "production"),
    ]
    assert [e.actor for e in trail] == ["offline-agent"] + ["online-agent"] * 4 + ["alice", "alice"]
    assert trail[0].reason == "trained in full" and trail[3].reason == "on to experimenting"
    assert trail[5].reason == "retention up 2%, guardrails held"
    times = [e.at for e in trail]
    assert times == sorted(times) and start <= times[0] and times[-1] <= datetime.now(UTC)
    assert all(t.tzinfo is not None and t.utcoffset() == UTC.utcoffset(None) for t in times)
    assert promoted.updated_at == times[-1] and promoted.created_at == times[0]


def test_promotion_retires_the_previous_production_version(registry: Registry) -> None:
    first = registry.approve(_awaiting(registry), "alice", "first model").id
    second = registry.approve(_awaiting(registry), "bob", "better retention").id

    assert registry.get(first).state == "retired"
    retirement = registry.audit(first)[-1]
    assert (retirement.from_state, retirement.to_state, retirement.actor) == ("production", "retired", "bob")
    assert f"replaced by version {second}" in retirement.reason
    assert [v.id for v in registry.versions(state="production")] == [second]


def test_rollback_restores_the_retired_version_and_marks_the_other_rolled_back(registry: Registry) -> None:
    first, second, third = (registry.approve(_awaiting(registry), "alice", "ship").id for _ in range(3))

    restored = registry.rollback(actor="carol", reason="latency regression")
    assert restored.id == second and restored.state == "production"
    assert registry.get(third).state == "rolled_back"
    assert _moves(registry, third)[-1] == ("production", "rolled_back")
    assert _moves(registry, second)[-2:] == [("production", "retired"), ("retired", "production")]
    assert registry.audit(second)[-1].actor == "carol" and registry.audit(second)[-1].reason == "latency regression"

    assert registry.rollback(actor="carol", reason="still bad").id == first
    assert [v.state for v in registry.versions()] == ["rolled_back", "rolled_back", "production"]
    with pytest.raises(RegistryError, match=rf"nothing to roll back to: version {first} is in production"):
        registry.rollback(actor="carol", reason="again")


def test_rollback_with_no_production_version_is_refused(registry: Registry) -> None:
    _awaiting(registry)
    with pytest.raises(RegistryError, match="nothing to roll back: no version of 'default' is in production"):
        registry.rollback(actor="carol", reason="panic")


def test_production_is_kept_per_model_line(registry: Registry) -> None:
    default = registry.approve(_awaiting(registry), "alice", "ship").id
    other = registry.approve(_awaiting(registry, "ranker"), "alice", "ship").id
    assert registry.production().id == default  # type: ignore[union-attr]
    assert registry.production("ranker").id == other  # type: ignore[union-attr]
    assert registry.production("nobody") is None
    assert [v.id for v in registry.versions(name="ranker")] == [other]


def test_auto_approval_names_its_policy_and_people_cannot_pose_as_one(registry: Registry) -> None:
    version_id = _awaiting(registry)
    with pytest.raises(RegistryError, match="names a policy"):
        registry.approve(version_id, "policy:lenient", "sneaky")
    registry.auto_approve(version_id, "small-safe-change")
    approval = registry.audit(version_id)[-2]
    assert (approval.to_state, approval.actor) == ("approved", "policy:small-safe-change")
    assert "small-safe-change" in approval.reason


def test_only_the_first_production_version_comes_in_without_an_experiment(registry: Registry) -> None:
    first, second = _register(registry), _register(registry)
    with pytest.raises(RegistryError, match="needs the name of the policy"):
        registry.bootstrap(first, " ")
    registry.bootstrap(first, "first-production")
    assert registry.production().id == first
    trail = registry.audit(first)
    assert [(e.to_state, e.actor) for e in trail[-2:]] == [
        ("approved", "policy:first-production"),
        ("production", "policy:first-production"),
    ]
    with pytest.raises(RegistryError, match="has had a production version"):
        registry.bootstrap(second, "first-production")
    other = _register(registry, name="other")
    _advance(registry, other, "queued")
    with pytest.raises(IllegalTransition, match="only an evaluated version"):
        registry.bootstrap(other, "first-production")


@pytest.fixture(scope="module")
def zoo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Registry, dict[str, int]]]:
    """One registry holding a version in every state, reached by legal moves only."""
    with Registry(_url(tmp_path_factory.mktemp("zoo") / "registry.db")) as registry:
        ids = {"proposed": _register(registry, state="proposed"), "evaluated": _register(registry)}
        for depth, state in enumerate(TO_AWAITING, start=1):
            ids[state] = _register(registry)
            _advance(registry, ids[state], *TO_AWAITING[:depth])
        ids["approved"] = _awaiting(registry)
        _advance(registry, ids["approved"], "approved")
        ids["failed"] = _register(registry, state="proposed")
        _advance(registry, ids["failed"], "failed")
        ids["rejected"] = registry.reject(_register(registry), "bob", "duplicate").id
        old, newer = (registry.approve(_awaiting(registry), "alice", "ship").id for _ in range(2))
        ids["rolled_back"] = newer
        registry.rollback(actor="alice", reason="undo")
        ids["retired"] = old
        ids["production"] = registry.approve(_awaiting(registry), "alice", "ship").id
        assert {state: registry.get(i).state for state, i in ids.items()} == {s: s for s in STATES}
        yield registry, ids


@pytest.mark.parametrize(("current", "requested"), ILLEGAL + REGISTRY_ONLY)
def test_every_illegal_transition_is_refused_with_a_clear_message(
    zoo: tuple[Registry, dict[str, int]], current: str, requested: str
) -> None:
    registry, ids = zoo
    version_id = ids[current]
    trail = registry.audit(version_id)
    with pytest.raises(IllegalTransition) as refused:
        registry.transition(version_id, requested, actor="mallory", reason="why not")
    message = str(refused.value)
    assert message.startswith(f"version {version_id} is {current}")
    assert message.endswith(f"not {requested}") or message.endswith(f"cannot go to {requested}")
    assert registry.get(version_id).state == current and registry.audit(version_id) == trail


def test_the_refusal_names_the_states_the_version_can_go_to(zoo: tuple[Registry, dict[str, int]]) -> None:
    registry, ids = zoo
    queued = ids["queued"]
    with pytest.raises(IllegalTransition) as refused:
        registry.transition(queued, "production", actor="mallory", reason="skip the queue")
    assert str(refused.value) == f"version {queued} is queued; it can go to experimenting or rejected, not production"
    with pytest.raises(IllegalTransition, match="a final state"):
        registry.transition(ids["rejected"], "queued", actor="mallory", reason="revive")
    with pytest.raises(IllegalTransition, match="by a rollback"):
        registry.transition(ids["retired"], "production", actor="mallory", reason="sneak back")
    with pytest.raises(RegistryError, match="unknown state 'shipped'"):
        registry.transition(queued, "shipped", actor="mallory", reason="typo")


@pytest.mark.parametrize(("actor", "reason"), [("", "why"), ("  ", "why"), ("alice", ""), ("alice", " \n")])
def test_every_change_needs_an_actor_and_a_reason(registry: Registry, actor: str, reason: str) -> None:
    version_id = _awaiting(registry)
    changes: list[Callable[[], Any]] = [
        lambda: registry.transition(version_id, "approved", actor=actor, reason=reason),
        lambda: registry.approve(version_id, actor, reason),
        lambda: registry.reject(version_id, actor, reason),
        lambda: registry.rollback(actor=actor, reason=reason),
        lambda: registry.register(
            candidate_id="c", content_hash="h", artifact_uri="/m", metrics={}, actor=actor, reason=reason
        ),
    ]
    for change in changes:
        with pytest.raises(RegistryError, match="needs an actor" if not actor.strip() else "needs a reason"):
            change()
    assert registry.get(version_id).state == "awaiting_approval" and len(registry.versions()) == 1


def test_unknown_versions_and_states_are_clear_errors(registry: Registry) -> None:
    for lookup in (
        lambda: registry.get(42),
        lambda: registry.audit(42),
        lambda: registry.transition(42, "queued", actor="a", reason="b"),
        lambda: registry.approve(42, "alice", "ship"),
    ):
        with pytest.raises(RegistryError, match="no model version 42 in the registry"):
            lookup()
    with pytest.raises(RegistryError, match="unknown state 'live'"):
        registry.versions(state="live")


def test_register_accepts_only_first_states_and_plain_metrics(registry: Registry) -> None:
    with pytest.raises(IllegalTransition, match="starts as proposed or evaluated, not queued"):
        _register(registry, state="queued")
    for metrics in ({"ndcg": float("nan")}, {"when": datetime.now(UTC)}, [0.1]):
        with pytest.raises(RegistryError, match="metrics must be a JSON object"):
            registry.register(
                candidate_id="c", content_hash="h", artifact_uri="/m", metrics=metrics, actor="a", reason="b"
            )
    with pytest.raises(RegistryError, match="non-empty content_hash"):
        registry.register(candidate_id="c", content_hash=" ", artifact_uri="/m", metrics={}, actor="a", reason="b")
    assert registry.versions() == []


def test_expected_state_refuses_a_move_someone_else_made_first(registry: Registry) -> None:
    version_id = _register(registry)
    _advance(registry, version_id, "queued")
    registry.transition(version_id, "experimenting", actor="a", reason="b", expected_state="queued")
    with pytest.raises(StateChanged, match=f"version {version_id} is experimenting, not queued as expected"):
        registry.transition(version_id, "rejected", actor="a", reason="b", expected_state="queued")
    assert registry.get(version_id).state == "experimenting"


def test_nothing_reaches_production_without_an_approval_row(registry: Registry, registry_url: str) -> None:
    version_id = _awaiting(registry)
    with create_engine(registry_url).begin() as connection:  # edited behind the registry's back
        connection.execute(text("UPDATE model_versions SET state = 'approved' WHERE id = :id"), {"id": version_id})
    with pytest.raises(RegistryError, match=f"version {version_id} has no approval in the audit log"):
        registry.transition(version_id, "production", actor="mallory", reason="ship it")
    assert registry.production() is None


def test_versions_are_listed_newest_first(registry: Registry) -> None:
    ids = [_register(registry, candidate=f"c{i}") for i in range(3)]
    registry.reject(ids[1], "bob", "worse")
    assert [v.id for v in registry.versions()] == ids[::-1]
    assert [v.id for v in registry.versions(state="evaluated")] == [ids[2], ids[0]]


def test_default_url_is_a_file_in_the_data_dir_unless_the_environment_names_one(
    settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("EVOREC_REGISTRY_URL", raising=False)
    assert default_registry_url(settings) == f"sqlite:///{settings.data_dir / 'registry.db'}"
    monkeypatch.setenv("EVOREC_REGISTRY_URL", "postgresql+psycopg://registry@db/evorec")
    assert default_registry_url(settings) == "postgresql+psycopg://registry@db/evorec"


def _alembic_versions(url: str) -> list[str]:
    with create_engine(url).connect() as connection:
        return list(connection.scalars(text("SELECT version_num FROM alembic_version")))


def test_a_fresh_database_is_at_the_alembic_head(tmp_path: Path) -> None:
    url = _url(tmp_path / "registry.db")
    Registry(url).close()
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None and _alembic_versions(url) == [head]
    assert {"model_versions", "audit_log", "runs"} <= set(inspect(create_engine(url)).get_table_names())


def test_the_migrations_build_exactly_the_tables_the_models_declare(tmp_path: Path) -> None:
    url = _url(tmp_path / "registry.db")
    Registry(url).close()
    with create_engine(url).connect() as connection:
        command.check(alembic_config(connection))  # raises when a model changed without a revision


def test_opening_an_existing_database_again_keeps_it_as_it_is(tmp_path: Path) -> None:
    url = _url(tmp_path / "registry.db")
    with Registry(url) as registry:
        version_id = _register(registry)
        before = registry.audit()
    with Registry(url) as registry, Registry(url) as again:
        assert registry.audit() == before and again.get(version_id).state == "evaluated"
    assert len(_alembic_versions(url)) == 1


def test_downgrade_to_base_and_upgrade_to_head_again(tmp_path: Path) -> None:
    url = _url(tmp_path / "registry.db")
    with Registry(url) as registry:
        _register(registry)
    engine = create_engine(url)
    with engine.begin() as connection:
        command.downgrade(alembic_config(connection), "base")
    assert set(inspect(engine).get_table_names()) == {"alembic_version"} and _alembic_versions(url) == []
    with engine.begin() as connection:
        command.upgrade(alembic_config(connection), "head")
    with Registry(url) as registry:
        assert registry.versions() == []
        registry.approve(_awaiting(registry), "alice", "works after a round trip")


WORKERS = 4
REGISTERS_PER_WORKER = 5


def _attempt(outcomes: list[tuple[str, str]], label: str, action: Callable[[], Any]) -> None:
    try:
        action()
    except EvorecError as exc:
        outcomes.append((label, type(exc).__name__))
    else:
        outcomes.append((label, "ok"))


def _race(url: str, fresh_url: str, ids: dict[str, Any], worker: int, barrier: Any, results: Any) -> None:
    """One process of the race; a crash is reported (and frees the others) instead of hanging the test."""
    try:
        results.put(_race_operations(url, fresh_url, ids, worker, barrier))
    except BaseException as exc:
        barrier.abort()
        results.put([("crashed", repr(exc))])
        raise


def _race_operations(url: str, fresh_url: str, ids: dict[str, Any], worker: int, barrier: Any) -> list[tuple[str, str]]:
    """10 registry operations, contended by the other workers."""
    actor = f"worker-{worker}"
    outcomes: list[tuple[str, str]] = []
    barrier.wait(timeout=60)
    Registry(fresh_url).close()  # every worker migrates the same fresh database at once
    with Registry(url) as registry:
        barrier.wait(timeout=60)
        _attempt(
            outcomes,
            "take the queued version",
            lambda: registry.transition(
                ids["queued"], "experimenting", actor=actor, reason="mine", expected_state="queued"
            ),
        )
        _attempt(outcomes, "reject", lambda: registry.reject(ids["evaluated"], actor, "race"))
        for i in range(REGISTERS_PER_WORKER):
            _attempt(outcomes, "register", functools.partial(_register, registry, candidate=f"{actor}-{i}"))
        _attempt(outcomes, "promote default", lambda: registry.approve(ids["default"][worker], actor, "race"))
        _attempt(outcomes, "promote ranker", lambda: registry.approve(ids["ranker"][worker], actor, "race"))
        _attempt(outcomes, "rollback", lambda: registry.rollback("default", actor=actor, reason="race"))
    return outcomes


def test_concurrent_processes_serialise_and_keep_the_invariants(database_url: Callable[[str], str]) -> None:
    url, fresh_url = database_url("registry"), database_url("fresh")
    with Registry(url) as registry:
        queued = _register(registry)
        _advance(registry, queued, "queued")
        ids = {
            "queued": queued,
            "evaluated": _register(registry),
            "default": [_awaiting(registry) for _ in range(WORKERS)],
            "ranker": [_awaiting(registry, "ranker") for _ in range(WORKERS)],
        }
    context = multiprocessing.get_context("spawn")
    barrier, results = context.Barrier(WORKERS), context.Queue()
    workers = [
        context.Process(target=_race, args=(url, fresh_url, ids, worker, barrier, results)) for worker in range(WORKERS)
    ]
    for process in workers:
        process.start()
    outcomes = Counter(outcome for _ in workers for outcome in results.get(timeout=120))
    for process in workers:
        process.join(timeout=60)

    rollbacks = outcomes["rollback", "ok"]
    assert outcomes == Counter(
        {
            ("take the queued version", "ok"): 1,
            ("take the queued version", "StateChanged"): WORKERS - 1,
            ("reject", "ok"): 1,
            ("reject", "IllegalTransition"): WORKERS - 1,
            ("register", "ok"): WORKERS * REGISTERS_PER_WORKER,
            ("promote default", "ok"): WORKERS,
            ("promote ranker", "ok"): WORKERS,
            ("rollback", "ok"): rollbacks,
            ("rollback", "RegistryError"): WORKERS - rollbacks,
        }
    )
    assert [process.exitcode for process in workers] == [0] * WORKERS
    assert _alembic_versions(fresh_url) == _alembic_versions(url) == ["0002"]
    with Registry(url) as registry:
        versions = registry.versions()
        assert len(versions) == 2 + 2 * WORKERS + WORKERS * REGISTERS_PER_WORKER
        for name in ("default", "ranker"):
            assert len([v for v in versions if v.name == name and v.state == "production"]) == 1
        assert len(registry.versions(state="rolled_back")) == rollbacks
        trail = registry.audit()
        for version in versions:
            moves = [(e.from_state, e.to_state) for e in trail if e.version_id == version.id]
            assert moves[0][0] is None and moves[-1][1] == version.state
            assert all(previous[1] == move[0] for previous, move in itertools.pairwise(moves))
            assert all(move[1] in TRANSITIONS[move[0]] for move in moves[1:])
            if any(to == "production" for _, to in moves):
                assert ("awaiting_approval", "approved") in moves
        assert Counter(e.to_state for e in trail)["production"] == 2 * WORKERS + rollbacks


@pytest.fixture
def cli() -> typer.Typer:
    app = typer.Typer()
    app.add_typer(promote_app, name="promote")
    app.add_typer(registry_app, name="registry")
    return app


def test_cli_registers_promotes_rejects_rolls_back_and_shows(
    cli: typer.Typer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    runner, url = CliRunner(), _url(tmp_path / "registry.db")
    at = ["--registry", url]
    register = [
        *("registry", "register", "--candidate-id", "sasrec", "--content-hash", "ab12", "--artifact-uri", "/m"),
        *("--metrics-json", '{"ndcg@10": 0.1}', "--reason", "trained", "--actor", "bot", *at),
    ]
    for expected in (1, 2, 3):
        result = runner.invoke(cli, register)
        assert result.exit_code == 0, result.output
        assert f"registered version {expected} as evaluated" in result.output
    with Registry(url) as registry:
        for version_id in (1, 2):
            _advance(registry, version_id, *TO_AWAITING)

    monkeypatch.setattr("getpass.getuser", lambda: "carol")
    result = runner.invoke(cli, ["promote", "approve", "1", "--reason", "retention up", *at])
    assert result.exit_code == 0 and "version 1 of 'default' is in production" in result.output
    assert runner.invoke(cli, ["promote", "approve", "2", "--reason", "better", "--by", "dan", *at]).exit_code == 0
    result = runner.invoke(cli, ["promote", "reject", "3", "--reason", "worse", *at])
    assert result.exit_code == 0 and "version 3 is rejected" in result.output
    result = runner.invoke(cli, ["promote", "rollback", "--reason", "latency", *at])
    assert result.exit_code == 0 and "version 1 of 'default' is back in production" in result.output

    listing = _rows(runner.invoke(cli, ["registry", "list", *at]).output)
    assert [(row[0], row[2]) for row in listing] == [("3", "rejected"), ("2", "rolled_back"), ("1", "production")]
    assert [row[0] for row in _rows(runner.invoke(cli, ["registry", "list", "--state", "production", *at]).output)] == [
        "1"
    ]
    shown = runner.invoke(cli, ["registry", "show", "1", *at]).output
    for fragment in ("carol", "retention up", "approved", "retired", "dan", "latency", '{"ndcg@10": 0.1}'):
        assert fragment in shown
    with Registry(url) as registry:
        assert [e.actor for e in registry.audit(1) if e.to_state == "approved"] == ["carol"]


def _rows(table: str) -> list[list[str]]:
    """The body rows of a rich table, as stripped cells (lines that continue a wrapped row are left out)."""
    rows = [[cell.strip() for cell in line.split("│")[1:-1]] for line in table.splitlines() if line.startswith("│")]
    return [row for row in rows if row[0]]


def test_cli_refusals_exit_non_zero_with_the_message(cli: typer.Typer, tmp_path: Path) -> None:
    runner, url = CliRunner(), _url(tmp_path / "registry.db")
    with Registry(url) as registry:
        _advance(registry, _register(registry), "queued")
    result = runner.invoke(cli, ["promote", "approve", "1", "--reason", "ship", "--actor", "eve", "--registry", url])
    assert result.exit_code != 0 and isinstance(result.exception, IllegalTransition)
    assert "version 1 is queued; it can go to experimenting or rejected, not approved" in str(result.exception)
    result = runner.invoke(cli, ["promote", "rollback", "--reason", "undo", "--actor", "eve", "--registry", url])
    assert isinstance(result.exception, RegistryError) and "nothing to roll back" in str(result.exception)
    result = runner.invoke(cli, ["promote", "reject", "1", "--registry", url])
    assert result.exit_code == 2 and "--reason" in result.output
    bad_metrics = ["--metrics-json", "[1]", "--candidate-id", "c", "--content-hash", "h", "--artifact-uri", "/m"]
    result = runner.invoke(cli, ["registry", "register", *bad_metrics, "--reason", "r", "--registry", url])
    assert result.exit_code == 2 and "must be a JSON object" in result.output


@pytest.mark.parametrize(
    "command",
    [
        ["promote", "approve"],
        ["promote", "reject"],
        ["promote", "rollback"],
        ["registry", "list"],
        ["registry", "show"],
        ["registry", "register"],
    ],
)
def test_every_registry_command_has_help(cli: typer.Typer, command: list[str]) -> None:
    result = CliRunner().invoke(cli, [*command, "--help"])
    assert result.exit_code == 0 and "Usage:" in result.output and "--registry" in result.output


def test_runs_are_indexed_once_by_folder_under_unique_human_names(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'registry.db'}"
    first, second, other = tmp_path / "a" / "v2-vs-v1", tmp_path / "b" / "v2-vs-v1", tmp_path / "evo"
    with Registry(url) as registry:
        one = registry.record_run("experiment", first)
        two = registry.record_run("experiment", second, pipeline="two-loop-1")
        again = registry.record_run("experiment", first, report=first / "report-treatment.html", pipeline="p")
        evolution = registry.record_run("evolution", other, name="two-loop-1-evolution")
        assert (one.name, two.name, evolution.name) == ("v2-vs-v1", "v2-vs-v1-2", "two-loop-1-evolution")
        assert again.id == one.id and again.name == "v2-vs-v1" and again.report == first / "report-treatment.html"
        assert [run.name for run in registry.runs("experiment")] == ["v2-vs-v1-2", "v2-vs-v1"]
        assert [run.kind for run in registry.runs()] == ["evolution", "experiment", "experiment"]
        with pytest.raises(RegistryError, match="unknown run kind"):
            registry.record_run("training", other)


def test_a_registry_path_in_a_missing_folder_is_an_error_not_a_new_registry(tmp_path: Path) -> None:
    with pytest.raises(RegistryError, match="does not exist"):
        Registry(f"sqlite:///{tmp_path / 'typo' / 'registry.db'}")
    assert not (tmp_path / "typo").exists()
    with pytest.raises(RegistryError, match="not a registry URL"):
        Registry("bogus://x")
    with pytest.raises(RegistryError, match="not a registry URL") as error:
        Registry("postgresql+nosuchdriver://alice:secret@host/db")
    assert "secret" not in str(error.value)
