"""The console's first page: what waits for a person, what serves traffic, the latest runs and experiments."""

from __future__ import annotations

from collections import Counter

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from evorec.ui.experiments import queue, reports
from evorec.ui.rendering import render
from evorec.ui.runs import summaries
from serving.registry import STATES, Registry

router = APIRouter()
LATEST = 5


@router.get("/", response_class=HTMLResponse)
def overview_page(request: Request) -> Response:
    registry: Registry = request.app.state.registry
    versions = registry.versions()
    root = request.app.state.config.experiments_dir
    counts = Counter(version.state for version in versions)
    context = {
        "waiting": [entry for entry in queue(registry, root) if entry.version.state == "awaiting_approval"],
        "production": [version for version in versions if version.state == "production"],
        "counts": [(state, counts[state]) for state in STATES if counts[state]],
        "runs": summaries(request.app.state.runs)[:LATEST],
        "reports": reports(registry, root)[:LATEST],
    }
    return render(request, "overview.html", context)
