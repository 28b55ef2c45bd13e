"""Alembic environment of the master store: target metadata from store.schema (built from schemas/master.yaml), online and offline."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context

from store.schema import metadata

config = context.config


def _url() -> str:
    url = config.get_main_option("sqlalchemy.url")
    if url:
        return url
    from core.settings import load_settings

    settings = load_settings()
    return settings.expand(settings.master_url)


def run_offline() -> None:
    """Emit the SQL instead of running it (`upgrade head --sql`, for a DBA to review)."""
    context.configure(url=_url(), target_metadata=metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


def _run(connection: sa.Connection) -> None:
    context.configure(connection=connection, target_metadata=metadata)
    with context.begin_transaction():
        context.run_migrations()


def run_online() -> None:
    """Use the caller's connection (MasterStore, tests) or open one from the URL (command line)."""
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    engine = sa.create_engine(_url())
    try:
        with engine.begin() as conn:
            _run(conn)
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_offline()
else:
    run_online()
