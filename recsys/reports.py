"""The one report renderer: every report (A/B experiment, evolution, reward alignment) is written as
Markdown and turned into a self-contained HTML page here, with its plots embedded.

The page puts the verdict first (the Markdown before its first ``##`` section: title, decision and
reasons), then the plots, then the evidence. Markdown is rendered with markdown-it (tables
included), raw HTML in it escaped, so text that came from a candidate or an LLM cannot inject markup,
and secret values redacted (:mod:`recsys.redaction`), so such text cannot carry a key into a report.
"""

from __future__ import annotations

import base64
import io
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, select_autoescape
from markdown_it import MarkdownIt
from markupsafe import Markup

from recsys.redaction import redact

TEMPLATES = Path(__file__).resolve().parent / "templates"
_MARKDOWN = MarkdownIt("commonmark", {"html": False}).enable("table")
_ENVIRONMENT = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(default=True))


def markdown_html(text: str) -> Markup:
    """Markdown as HTML, each table in a box that scrolls when it is wider than the page; raw HTML in the
    text is escaped, not rendered."""
    rendered = _MARKDOWN.render(text)  # with html=False markdown-it escapes every tag in the text
    return Markup(rendered.replace("<table>", '<div class="table-box"><table>').replace("</table>", "</table></div>"))


def figure_png(figure: Any) -> str:
    """A matplotlib figure as base64 PNG for an ``<img>`` in a self-contained page (the figure is closed)."""
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    figure.tight_layout()
    figure.savefig(buffer, format="png")
    plt.close(figure)
    return base64.b64encode(buffer.getvalue()).decode()


def split_verdict(markdown: str) -> tuple[str, str]:
    """The Markdown before its first ``## `` heading (the verdict), and the rest (the evidence)."""
    lines = markdown.splitlines(keepends=True)
    cut = next((i for i, line in enumerate(lines) if line.startswith("## ")), len(lines))
    return "".join(lines[:cut]), "".join(lines[cut:])


def html_page(title: str, markdown: str, plots: list[tuple[str, str]] | None = None) -> str:
    """A self-contained page: the verdict, the ``(caption, base64 PNG)`` plots, then the evidence."""
    verdict, evidence = split_verdict(markdown)
    template = _ENVIRONMENT.get_template("report.html")
    return template.render(
        title=title, verdict=markdown_html(verdict), plots=plots or [], evidence=markdown_html(evidence)
    )


def write_report_files(
    stem: Path, title: str, markdown: str, plots: list[tuple[str, str]] | None = None
) -> dict[str, Path]:
    """``<stem>.md`` and ``<stem>.html``; the paths by kind."""
    paths = {"md": stem.with_suffix(".md"), "html": stem.with_suffix(".html")}
    title, markdown = redact(title), redact(markdown)
    paths["md"].write_text(markdown, encoding="utf-8")
    paths["html"].write_text(html_page(title, markdown, plots), encoding="utf-8")
    return paths
