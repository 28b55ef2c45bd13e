"""Shared fixtures: a throwaway var directory per test and settings pointing at it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from skip_summary import pytest_terminal_summary  # noqa: F401  (a hook: the skipped tests and how to run them)
from throwaway_db import MYSQL_HOST, throwaway, throwaway_pg

os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")


@pytest.fixture
def settings(tmp_path: Path):
    from core.settings import load_settings

    return load_settings(var_dir=tmp_path / "var")


@pytest.fixture
def pg_url():
    """A throwaway PostgreSQL database (credentials from LIANBAN_TEST_PG, dev default: trust auth)."""
    yield from throwaway_pg()


@pytest.fixture
def mysql_url():
    """A throwaway MariaDB/MySQL database (LIANBAN_TEST_MYSQL, dev default: root without password)."""
    yield from throwaway(
        f"mysql+pymysql://{MYSQL_HOST}/",
        f"mysql+pymysql://{MYSQL_HOST}/{{name}}?charset=utf8mb4",
        "CREATE DATABASE {name} CHARACTER SET utf8mb4",
        "DROP DATABASE IF EXISTS {name}",
    )
