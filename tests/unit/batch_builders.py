"""Small landed batches for gate, drift and reject tests: valid ID numbers, cdpf rows, landing helpers."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from landed_batches import write_landing

from core.settings import Settings
from core.storage import Storage

WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)


def check(first17: str) -> str:
    """first17 plus its GB 11643 check character."""
    return first17 + "10X98765432"[sum(int(c) * w for c, w in zip(first17, WEIGHTS, strict=True)) % 11]


def holders(n: int) -> list[str]:
    """n distinct valid ID numbers (Hangzhou 330106, born 1980, distinct days)."""
    return [check(f"33010619800{1 + i // 28:01d}{1 + i % 28:02d}001") for i in range(n)]


def cdpf_row(holder: str, **overrides: str) -> dict[str, str]:
    """One clean cdpf certificate row in the department's own columns (CJRZH = ID + category + level)."""
    row = {
        "CJRZH": holder + "11",
        "SFZH": holder,
        "XM": "李䶮",
        "XB": "2",
        "CSRQ": f"{holder[6:10]}-{holder[10:12]}-{holder[12:14]}",
        "CJLB": "1",
        "CJDJ": "1",
        "ZZZT": "1",
        "FZRQ": "2020-01-01",
        "YXQZ": "2030-01-01",
        "HJXZQH": holder[:6],
        "CQHL": "1",
        "JGYH": "0",
        "GXSJ": "2025-06-01 08:00:00",
    }
    return row | overrides


def land(
    settings: Settings,
    source: str,
    batch_id: str,
    transport: str,
    files: dict[str, bytes],
    rows: dict[str, int],
) -> None:
    write_landing(Storage(settings).landing(source, batch_id), source, transport, files, rows)
    Storage(settings).record_batch(batch_id, source, "20250630", sum(rows.values()))


def land_sql(settings: Settings, source: str, batch_id: str, rows: list[dict[str, str]], tmp: Path) -> None:
    """Land rows as the SQL connector does: one parquet part, every column text."""
    frame = pd.DataFrame(rows)
    path = tmp / f"{batch_id}.parquet"
    schema = pa.schema([(c, pa.string()) for c in frame.columns])
    pq.write_table(pa.Table.from_pandas(frame, schema=schema, preserve_index=False), path)
    land(
        settings,
        source,
        batch_id,
        "sql",
        {"part-00001.parquet": path.read_bytes()},
        {"part-00001.parquet": len(frame)},
    )


def land_csv(settings: Settings, source: str, batch_id: str, lines: list[str], encoding: str) -> None:
    """Land a CSV drop (header + rows, CRLF) as the folder connector does."""
    name = f"{source}_persons_20250630.csv"
    data = ("\r\n".join(lines) + "\r\n").encode(encoding)
    land(settings, source, batch_id, "folder", {name: data}, {name: len(lines) - 1})


def land_pages(settings: Settings, source: str, batch_id: str, items: list[dict[str, object]]) -> None:
    """Land one REST page of items as the REST connector does."""
    page = json.dumps({"page": 1, "page_size": len(items), "total": len(items), "items": items}).encode()
    land(settings, source, batch_id, "rest", {"page-00001.json": page}, {"page-00001.json": len(items)})


def staged_summary(settings: Settings, source: str, batch_id: str) -> dict:
    path = Storage(settings).staged(source, batch_id) / "validation.json"
    return json.loads(path.read_text(encoding="utf-8"))
