"""Landing protocol, folder transport and SQL transport on SQLite: whole batches, idempotent, bookmarked."""

from __future__ import annotations

import json
import sqlite3
from datetime import date
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from connectors.errors import ConnectorError
from connectors.folder import pull_folder
from connectors.sql import pull_sql
from core.settings import FolderSource, SqlSource
from core.storage import Storage

AS_OF = date(2026, 11, 1)


def _drop(folder: Path, name: str, text: str, marker: bool) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_bytes(text.encode("gb18030"))
    if marker:
        (folder / (name + ".ok")).write_bytes(b"")
    return path


def test_folder_takes_only_marked_files_byte_identical(settings, tmp_path: Path) -> None:
    drops = tmp_path / "drops"
    marked = _drop(
        drops, "hrss_persons_20261031.csv", "公民身份号码,姓名\r\n330106199001011234,王䶮\r\n", True
    )
    _drop(drops, "hrss_persons_20261101.csv", "公民身份号码,姓名\r\n", False)
    config = FolderSource(transport="folder", contract="x", path=str(drops), pattern="hrss_persons_*.csv")
    landed = pull_folder(Storage(settings), "hrss", config, AS_OF)
    assert (landed.path / marked.name).read_bytes() == marked.read_bytes()
    manifest = json.loads((landed.path / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["rows"] == 1 and manifest["files"][0]["name"] == marked.name
    assert Storage(settings).watermark("hrss") == marked.name


def test_same_window_and_content_lands_once(settings, tmp_path: Path) -> None:
    drops = tmp_path / "drops"
    _drop(drops, "a.csv", "h\r\nv\r\n", True)
    config = FolderSource(transport="folder", contract="x", path=str(drops), pattern="*.csv")
    first = pull_folder(Storage(settings), "hrss", config, AS_OF)
    again = pull_folder(Storage(settings), "hrss", config, AS_OF)
    assert first.batch_id == again.batch_id and first.new and not again.new
    assert len(list((settings.var_dir / "landing" / "hrss").iterdir())) == 1


def test_folder_without_marker_is_an_error_naming_the_folder(settings, tmp_path: Path) -> None:
    drops = tmp_path / "drops"
    _drop(drops, "a.csv", "h\r\n", False)
    config = FolderSource(transport="folder", contract="x", path=str(drops), pattern="*.csv")
    with pytest.raises(ConnectorError, match=r"hrss via folder.*drops.*\.ok marker"):
        pull_folder(Storage(settings), "hrss", config, AS_OF)


def test_sql_pull_lands_chunks_in_order_with_watermark(settings, tmp_path: Path) -> None:
    db = tmp_path / "front.sqlite"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE T (SFZH TEXT, XM TEXT, GXSJ TEXT)")
        rows = [(f"3301061990010{i:05d}", f"名{i}", f"2026-10-{1 + i % 28:02d} 08:00:00") for i in range(25)]
        conn.executemany("INSERT INTO T VALUES (?, ?, ?)", rows)
    config = SqlSource(transport="sql", contract="x", url=f"sqlite:///{db}", table="T", chunk_rows=10)
    landed = pull_sql(Storage(settings), "cdpf", config, AS_OF, order_by=["GXSJ", "SFZH"])
    parts = sorted(landed.path.glob("part-*.parquet"))
    assert [pq.read_metadata(p).num_rows for p in parts] == [10, 10, 5]
    names = [n for p in parts for n in pq.read_table(p).column("GXSJ").to_pylist()]
    assert names == sorted(names)
    last = max(rows, key=lambda r: (r[2], r[0]))
    assert Storage(settings).watermark("cdpf") == f"{last[2]}|{last[0]}"


def test_sql_missing_table_names_source_and_table(settings, tmp_path: Path) -> None:
    db = tmp_path / "empty.sqlite"
    sqlite3.connect(db).close()
    config = SqlSource(transport="sql", contract="x", url=f"sqlite:///{db}", table="MISSING")
    with pytest.raises(ConnectorError, match=r"cdpf via sql.*MISSING.*not found"):
        pull_sql(Storage(settings), "cdpf", config, AS_OF, order_by=["GXSJ"])
