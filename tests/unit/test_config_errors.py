"""A config mistake exits with file, line, field and what was expected; --config reaches the tasks."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.settings import ROOT, load_settings


def _broken(tmp_path: Path, old: str, new: str) -> Path:
    text = (ROOT / "config" / "sandbox.yaml").read_text(encoding="utf-8")
    assert old in text
    path = tmp_path / "broken.yaml"
    path.write_text(text.replace(old, new, 1), encoding="utf-8")
    return path


def test_wrong_type_names_file_line_and_field(tmp_path: Path) -> None:
    path = _broken(tmp_path, "page_size: 5000", "page_size: lots")
    line = next(i for i, t in enumerate(path.read_text().splitlines(), 1) if "page_size: lots" in t)
    with pytest.raises(SystemExit) as caught:
        load_settings(path, tmp_path / "var")
    message = str(caught.value)
    assert f"{path}:{line}: sources.police.page_size:" in message
    assert "valid integer" in message and "'lots'" in message
    assert "Traceback" not in message


def test_missing_field_points_at_its_section(tmp_path: Path) -> None:
    path = _broken(tmp_path, "    table: MZ_JZDX\n", "")
    with pytest.raises(SystemExit, match=r"sources\.civil\.table: Field required"):
        load_settings(path, tmp_path / "var")


def test_settings_remember_their_file(tmp_path: Path) -> None:
    path = _broken(tmp_path, "region:", "region:")
    assert load_settings(path, tmp_path / "var").config_file == path.resolve()
