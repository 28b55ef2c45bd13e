"""Shared fixtures: a throwaway var directory per test and settings pointing at it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")


@pytest.fixture
def settings(tmp_path: Path):
    from hub.settings import load_settings

    return load_settings(var_dir=tmp_path / "var")


def _throwaway(admin_url: str, make_url: str, create: str, drop: str):
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


PG_HOST = os.environ.get("LIANBAN_TEST_PG", "postgres@127.0.0.1:5432")
MYSQL_HOST = os.environ.get("LIANBAN_TEST_MYSQL", "root@127.0.0.1:3306")


@pytest.fixture
def pg_url():
    """A throwaway PostgreSQL database (credentials from LIANBAN_TEST_PG, dev default: trust auth)."""
    yield from _throwaway(
        f"postgresql+psycopg://{PG_HOST}/postgres",
        f"postgresql+psycopg://{PG_HOST}/{{name}}",
        "CREATE DATABASE {name}",
        "DROP DATABASE IF EXISTS {name} WITH (FORCE)",
    )


@pytest.fixture
def mysql_url():
    """A throwaway MariaDB/MySQL database (LIANBAN_TEST_MYSQL, dev default: root without password)."""
    yield from _throwaway(
        f"mysql+pymysql://{MYSQL_HOST}/",
        f"mysql+pymysql://{MYSQL_HOST}/{{name}}?charset=utf8mb4",
        "CREATE DATABASE {name} CHARACTER SET utf8mb4",
        "DROP DATABASE IF EXISTS {name}",
    )
