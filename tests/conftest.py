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
