"""Alembic environment of the registry.

evorec passes its own connection (``config.attributes["connection"]``), so migrations run inside the
registry's write transaction on any URL. From the alembic command line, ``-x url=...`` names the
database (default: ``$EVOREC_REGISTRY_URL`` or the registry in the data dir); ``--sql`` prints the DDL.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection, create_engine

from serving.registry import Base


def _run_on(connection: Connection) -> None:
    # Batch mode lets later revisions alter SQLite tables (copy and move) as they alter PostgreSQL ones.
    context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


def _url() -> str:
    from recsys.settings import get_settings
    from serving.registry import default_registry_url

    return context.get_x_argument(as_dictionary=True).get("url") or default_registry_url(get_settings())


def _run() -> None:
    connection = context.config.attributes.get("connection")
    if connection is not None:
        _run_on(connection)
    elif context.is_offline_mode():
        context.configure(url=_url(), target_metadata=Base.metadata, literal_binds=True)
        with context.begin_transaction():
            context.run_migrations()
    else:
        with create_engine(_url()).begin() as own_connection:
            _run_on(own_connection)


_run()
