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
    environment.globals["metric_table"] = metric_table
    return environment


def metric_table(metrics: dict[str, Any]) -> tuple[list[str], list[tuple[str, list[Any]]]]:
    """Metrics as (columns, rows of name and values): ``{"valid": {"ndcg@10": ..}, "test": {..}}`` gives a
    column per split; flat metrics one ``value`` column; anything else is shown as text."""
    groups = {key: value for key, value in metrics.items() if isinstance(value, dict)}
    flat = {key: value for key, value in metrics.items() if not isinstance(value, dict)}
    columns = list(groups) if groups else []
    names = list(dict.fromkeys(name for group in groups.values() for name in group))
    rows = [(name, [groups[column].get(name) for column in columns]) for name in names]
    if flat:
        columns = columns or ["value"]
        rows += [(name, [value, *[None] * (len(columns) - 1)]) for name, value in flat.items()]
    return columns, rows


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
