"""One backend class per database the master store runs on."""

from __future__ import annotations

import sqlalchemy as sa

from store.backends.base import Backend, BulkSession
from store.backends.postgres import PostgresBackend
from store.backends.sqlite import SqliteBackend

__all__ = ["Backend", "BulkSession", "PostgresBackend", "SqliteBackend", "backend_for"]


def backend_for(url: str) -> Backend:
    """The backend for a store URL: sqlite:///FILE, or postgresql+psycopg://... (COPY needs psycopg 3)."""
    parsed = sa.make_url(url)
    if parsed.get_backend_name() == "sqlite":
        return SqliteBackend(url)
    if parsed.get_backend_name() == "postgresql" and parsed.get_driver_name() == "psycopg":
        return PostgresBackend(url)
    raise ValueError(
        f"master store {parsed.render_as_string(hide_password=True)}: unsupported database; "
        "expected sqlite:///FILE or postgresql+psycopg://USER@HOST/DATABASE"
    )
