"""Rendering pages: the Jinja2 environment, the context every page shares, flash messages, Markdown.

Templates autoescape everything; the only HTML that reaches a page unescaped is what
:func:`markdown_html` makes of Markdown written by evorec's own reports, with raw HTML disabled
(so a proposer's rationale cannot inject markup).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from fastapi import Request
from fastapi.responses import HTMLResponse
from jinja2 import Environment, FileSystemLoader, select_autoescape

from evorec.ui.auth import csrf_token
from recsys.reports import markdown_html

TEMPLATES = Path(__file__).resolve().parent / "templates"
NAVIGATION = (
    ("/", "Overview"),
    ("/runs", "Evolution runs"),
    ("/experiments", "Experiments"),
    ("/versions", "Model versions"),
    ("/audit", "Audit log"),
    ("/rewards", "Rewards"),
)
FlashKind = Literal["success", "error"]


def template_environment() -> Environment:
    environment = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(default=True))
    environment.filters["markdown"] = markdown_html
    environment.filters["number"] = format_number
    environment.filters["percent"] = format_percent
    return environment


def format_number(value: Any, digits: int = 4) -> str:
    """Numbers as people read them in a table; a dash for what is missing."""
    if value is None:
        return "—"
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    return f"{value:.{digits}g}" if isinstance(value, float) else f"{value:,}"


def format_percent(value: Any, signed: bool = True) -> str:
    if not isinstance(value, int | float) or value != value:  # None or NaN
        return "—"
    return f"{value:+.2%}" if signed else f"{value:.1%}"


def flash(request: Request, kind: FlashKind, text: str) -> None:
    """A message for the next page this browser shows (after a redirect)."""
    request.session["flash"] = [*request.session.get("flash", []), [kind, text]]


def render(request: Request, template: str, context: dict[str, Any], status_code: int = 200) -> HTMLResponse:
    """A page with the shared context: who is signed in, the CSRF token, navigation and flash messages."""
    environment: Environment = request.app.state.templates
    page = environment.get_template(template).render(
        request=request,
        user=request.session.get("user"),
        csrf_token=csrf_token(request),
        navigation=NAVIGATION,
        current_path=request.url.path,
        messages=request.session.pop("flash", []),
        **context,
    )
    return HTMLResponse(page, status_code=status_code)
