"""Model versions in the console: their states and audit trails, and a reviewer's decisions.

Approve, reject and roll back call the same :class:`serving.registry.Registry` methods as
``evorec promote``, with the signed-in reviewer as the actor, so the audit rows are the CLI's.
Each action answers with a redirect to the page that shows its result (post/redirect/get), and a
refusal (e.g. a version someone else already moved) comes back as a message naming what to do.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

from fastapi import APIRouter, Form, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from evorec.ui.auth import CsrfChecked, Reviewer
from evorec.ui.experiments import reports_of
from evorec.ui.rendering import flash, render
from recsys.errors import EvorecError
from serving.registry import TRANSITIONS, Registry, RegistryError, VersionInfo

router = APIRouter()
Reason = Annotated[str, Form()]


def _registry(request: Request) -> Registry:
    registry: Registry = request.app.state.registry
    return registry


def _act(
    request: Request, action: Callable[[], VersionInfo], done: Callable[[VersionInfo], str], back: str
) -> Response:
    """Run a registry action; flash its outcome or the registry's refusal; go back to ``back``."""
    try:
        flash(request, "success", done(action()))
    except EvorecError as exc:
        flash(request, "error", f"Refused: {exc}")
    return RedirectResponse(back, status_code=303)


@router.get("/versions", response_class=HTMLResponse)
def versions_page(request: Request, state: str | None = None) -> Response:
    registry = _registry(request)
    try:
        versions = registry.versions(state=state or None)
    except RegistryError as exc:
        raise HTTPException(400, str(exc)) from exc
    names = sorted({version.name for version in registry.versions()})
    production = {name: registry.production(name) for name in names}
    context = {"versions": versions, "production": production, "selected": state, "states": list(TRANSITIONS)}
    return render(request, "versions.html", context)


@router.get("/versions/{version_id}", response_class=HTMLResponse)
def version_page(request: Request, version_id: int) -> Response:
    registry = _registry(request)
    try:
        version = registry.get(version_id)
    except RegistryError as exc:
        raise HTTPException(404, str(exc)) from exc
    context = {
        "version": version,
        "trail": registry.audit(version_id),
        "reports": reports_of(registry, request.app.state.config.experiments_dir, version_id),
        "can_approve": version.state == "awaiting_approval",
        "can_reject": "rejected" in TRANSITIONS[version.state],
    }
    return render(request, "version.html", context)


@router.post("/versions/{version_id}/approve", dependencies=[CsrfChecked])
def approve(request: Request, version_id: int, user: Reviewer, reason: Reason = "") -> Response:
    """Approve a version awaiting approval: it goes to production, the one it replaces is retired."""
    return _act(
        request,
        lambda: _registry(request).approve(version_id, user, reason),
        lambda version: f"Version {version.id} of {version.name!r} is in production.",
        f"/versions/{version_id}",
    )


@router.post("/versions/{version_id}/reject", dependencies=[CsrfChecked])
def reject(request: Request, version_id: int, user: Reviewer, reason: Reason = "") -> Response:
    """Reject a version, so it is never experimented with or promoted."""
    return _act(
        request,
        lambda: _registry(request).reject(version_id, user, reason),
        lambda version: f"Version {version.id} is rejected.",
        f"/versions/{version_id}",
    )


@router.post("/rollback", dependencies=[CsrfChecked])
def rollback(
    request: Request, user: Reviewer, name: Annotated[str, Form()] = "default", reason: Reason = ""
) -> Response:
    """Undo the last promotion of ``name``: the version it replaced is back in production."""
    return _act(
        request,
        lambda: _registry(request).rollback(name, actor=user, reason=reason),
        lambda version: f"Version {version.id} of {version.name!r} is back in production.",
        "/versions",
    )


@router.get("/audit", response_class=HTMLResponse)
def audit_page(request: Request) -> Response:
    """Every registry move, newest first: who, when, why."""
    return render(request, "audit.html", {"trail": _registry(request).audit()[::-1]})
