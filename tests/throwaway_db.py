"""Throwaway databases on the local servers, named with a uuid (credentials from the environment)."""

from __future__ import annotations

import os

import pytest


def throwaway(admin_url: str, make_url: str, create: str, drop: str):
    """Create a uniquely named database on a running server; yield its URL; drop it afterwards."""
    import uuid

    import sqlalchemy as sa

    name = f"lianban_test_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(sa.text(create.format(name=name)))
    except sa.exc.OperationalError as exc:
        admin.dispose()
        pytest.fail(f"database server not reachable at {admin_url}: {exc.orig}")
    try:
        yield make_url.format(name=name)
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(drop.format(name=name)))
        admin.dispose()


def throwaway_pg(template: str | None = None):
    """A throwaway PostgreSQL database, empty or a copy of the database `template` (none may be connected
    to it)."""
    return throwaway(
        f"postgresql+psycopg://{PG_HOST}/postgres",
        f"postgresql+psycopg://{PG_HOST}/{{name}}",
        "CREATE DATABASE {name}" + (f" TEMPLATE {template}" if template else ""),
        "DROP DATABASE IF EXISTS {name} WITH (FORCE)",
    )


PG_HOST = os.environ.get("LIANBAN_TEST_PG", "postgres@127.0.0.1:5432")
MYSQL_HOST = os.environ.get("LIANBAN_TEST_MYSQL", "root@127.0.0.1:3306")
