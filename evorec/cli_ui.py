"""`evorec ui`: the review console, served by uvicorn (a thin command over :mod:`evorec.ui`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

error_console = Console(stderr=True)
LOOPBACK = ("127.0.0.1", "localhost", "::1")


def ui(
    config: Annotated[
        Path | None, typer.Option("--config", "-c", help="YAML with a `ui` section (paths, session settings).")
    ] = None,
    host: Annotated[str | None, typer.Option(help="Address to listen on (default 127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option(help="Port to listen on (default 8001).", min=1, max=65535)] = None,
    registry: Annotated[
        str | None, typer.Option(help="Registry SQLAlchemy URL (default: $EVOREC_REGISTRY_URL or the data dir's).")
    ] = None,
    runs_dir: Annotated[
        Path | None, typer.Option(help="Folder whose sub-folders are evolution runs (default: runs).")
    ] = None,
    experiments_dir: Annotated[
        Path | None, typer.Option(help="Folder of experiment runs and their reports (default: runs/experiments).")
    ] = None,
    rewards_dir: Annotated[
        Path | None, typer.Option(help="Store of versioned reward specs (default: runs/rewards).")
    ] = None,
    data_dir: Annotated[
        Path | None, typer.Option("--data-dir", help="Cache of prepared data (the default registry, item genres).")
    ] = None,
) -> None:
    """The review console: evolution runs, the experiment queue, A/B reports, approvals and rollbacks, reward weights.

    Reviewers sign in with their name and password or token, set in the environment, e.g.
    EVOREC_UI_USERS='{"alice": "a long passphrase"}' (or ui.users in --config). Every action is an
    audit row in the registry with the reviewer as the actor.
    """
    from evorec.ui.config import load_ui_config, require_reviewers
    from recsys.config_files import with_overrides

    settings = load_ui_config(config)
    overrides = {"host": host, "port": port, "registry_url": registry, "runs_dir": runs_dir,
                 "experiments_dir": experiments_dir, "rewards_dir": rewards_dir, "data_dir": data_dir}  # fmt: skip
    settings = with_overrides(settings, overrides, "console settings")
    require_reviewers(settings)
    if settings.host not in LOOPBACK and not settings.secure_cookies:
        error_console.print("warning: serve the console behind HTTPS and set secure_cookies, or keep it on loopback")
    import uvicorn

    from evorec.ui.app import create_app
    from recsys.settings import get_settings
    from serving.registry import Registry, default_registry_url

    with Registry(settings.registry_url or default_registry_url(get_settings(settings.data_dir))) as store:
        uvicorn.run(create_app(settings, store), host=settings.host, port=settings.port, log_level="info")
