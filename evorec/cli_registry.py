"""`evorec promote` and `evorec registry`: thin commands over `serving.registry`.

Every change names who (``--actor``, by default the OS user) and why (``--reason``); the registry
keeps both in its audit log. Library errors propagate as `EvorecError`, which `evorec.cli.main`
turns into a message on stderr and exit code 2.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Column, Table
from rich.text import Text

from recsys.errors import EvorecError

if TYPE_CHECKING:
    from serving.registry import AuditInfo, Registry, VersionInfo

console = Console()
promote_app = typer.Typer(
    help="Approve, reject or roll back model versions; each action is kept in the audit log.", no_args_is_help=True
)
registry_app = typer.Typer(help="List, inspect and register model versions.", no_args_is_help=True)

VersionId = Annotated[int, typer.Argument(help="The version's id (see `evorec registry list`).")]
Reason = Annotated[str, typer.Option(help="Why: kept in the audit log.")]
Actor = Annotated[str | None, typer.Option("--by", "--actor", help="Who acts (default: your OS user name).")]
Name = Annotated[str, typer.Option(help="The model line.")]
RegistryUrl = Annotated[
    str | None,
    typer.Option(
        "--registry", help="SQLAlchemy URL of the registry (default: $EVOREC_REGISTRY_URL or <data-dir>/registry.db)."
    ),
]


@promote_app.command("approve")
def approve(version_id: VersionId, reason: Reason, actor: Actor = None, registry: RegistryUrl = None) -> None:
    """Approve a version awaiting approval: it goes to production, and the version it replaces is retired."""
    with _open(registry) as opened:
        version = opened.approve(version_id, _who(actor), reason)
    console.print(f"version {version.id} of {escape(repr(version.name))} is in production")


@promote_app.command("reject")
def reject(version_id: VersionId, reason: Reason, actor: Actor = None, registry: RegistryUrl = None) -> None:
    """Reject a version, so it is never experimented with or promoted."""
    with _open(registry) as opened:
        version = opened.reject(version_id, _who(actor), reason)
    console.print(f"version {version.id} is rejected")


@promote_app.command("rollback")
def rollback(reason: Reason, name: Name = "default", actor: Actor = None, registry: RegistryUrl = None) -> None:
    """Undo the last promotion: production goes to rolled_back, the version it replaced comes back."""
    with _open(registry) as opened:
        version = opened.rollback(name, actor=_who(actor), reason=reason)
    console.print(f"version {version.id} of {escape(repr(version.name))} is back in production")


@registry_app.command("list")
def list_versions(
    state: Annotated[str | None, typer.Option(help="Only versions in this state.")] = None,
    name: Annotated[str | None, typer.Option(help="Only versions of this model line.")] = None,
    registry: RegistryUrl = None,
) -> None:
    """List model versions, newest first."""
    with _open(registry) as opened:
        versions = opened.versions(state=state, name=name)
    if not versions:
        console.print("no model versions match")
        return
    console.print(_versions_table(versions))


@registry_app.command("show")
def show(version_id: VersionId, registry: RegistryUrl = None) -> None:
    """Show one version and its audit trail: every move, who made it, when and why."""
    with _open(registry) as opened:
        version = opened.get(version_id)
        trail = opened.audit(version_id)
    console.print(_version_table(version))
    console.print(_audit_table(trail))


@registry_app.command("register")
def register(
    candidate_id: Annotated[str, typer.Option(help="The candidate's name or id.")],
    content_hash: Annotated[str, typer.Option(help="The candidate's content hash.")],
    artifact_uri: Annotated[str, typer.Option(help="The exported model: a local folder or any fsspec URL.")],
    metrics_json: Annotated[str, typer.Option(help="Metrics as a JSON object, e.g. '{\"ndcg@10\": 0.12}'.")],
    reason: Reason,
    state: Annotated[str, typer.Option(help="The first state: proposed or evaluated.")] = "evaluated",
    name: Name = "default",
    actor: Actor = None,
    registry: RegistryUrl = None,
) -> None:
    """Register a trained candidate as a new model version."""
    metrics = _parse_metrics(metrics_json)
    with _open(registry) as opened:
        version = opened.register(
            candidate_id=candidate_id,
            content_hash=content_hash,
            artifact_uri=artifact_uri,
            metrics=metrics,
            actor=_who(actor),
            reason=reason,
            name=name,
            state=state,
        )
    console.print(f"registered version {version.id} as {version.state}")


def _open(url: str | None) -> Registry:
    from serving.registry import Registry

    return Registry(url)


def _who(actor: str | None) -> str:
    """The named actor, else the OS user: every audit row must say who acted."""
    if actor is not None:
        return actor
    import getpass

    try:
        return getpass.getuser()
    except (KeyError, OSError) as exc:
        raise EvorecError("cannot tell who you are from the OS: pass --actor NAME") from exc


def _parse_metrics(metrics_json: str) -> dict[str, Any]:
    try:
        metrics = json.loads(metrics_json)
    except json.JSONDecodeError as exc:
        raise typer.BadParameter(f"not JSON: {exc}", param_hint="--metrics-json") from exc
    if not isinstance(metrics, dict):
        raise typer.BadParameter("must be a JSON object", param_hint="--metrics-json")
    return metrics


def _time(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S")


def _versions_table(versions: list[VersionInfo]) -> Table:
    table = Table(
        Column("id", no_wrap=True),
        "name",
        Column("state", no_wrap=True),
        "candidate",
        Column("content hash", no_wrap=True),
        Column("updated (UTC)", no_wrap=True),
    )
    for version in versions:
        cells = (version.name, version.state, version.candidate_id, version.content_hash[:12])
        table.add_row(str(version.id), *map(Text, cells), _time(version.updated_at))
    return table


def _version_table(version: VersionInfo) -> Table:
    table = Table("field", "value", title=f"version {version.id}", show_header=False)
    rows = {
        "name": version.name,
        "state": version.state,
        "candidate": version.candidate_id,
        "content hash": version.content_hash,
        "artifact": version.artifact_uri,
        "metrics": json.dumps(version.metrics, sort_keys=True),
        "created (UTC)": f"{_time(version.created_at)} by {version.created_by}",
        "updated (UTC)": _time(version.updated_at),
    }
    for field, value in rows.items():
        table.add_row(field, Text(value))
    return table


def _audit_table(trail: list[AuditInfo]) -> Table:
    table = Table("at (UTC)", "from", "to", "actor", "reason", title="audit trail")
    for entry in trail:
        cells = (entry.from_state or "—", entry.to_state, entry.actor, entry.reason)
        table.add_row(_time(entry.at), *map(Text, cells))
    return table
