"""Reject files: each quarantined row goes back to the department that sent it (docs/architecture.md, Batches).

One file per batch with quarantined rows, under outbox/<source>/rejects/. The department gets its own
row back, under its own column names and in its own encoding, followed by where the row was (file and
line) and why it was refused (reason codes and their Chinese text), so it can correct and resend it.
The file carries the department's own ID numbers: it goes only to the department they came from.
"""

from __future__ import annotations

import codecs
import io
import json
import logging
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import pandas as pd
import sqlalchemy as sa

from core.contracts import SourceContract
from core.publish import MANIFEST, MARKER, publish_unit
from core.signing import load_signing_key
from core.storage import Storage, batches
from transforms.exchange import encode_table, neutralise_formulas

log = logging.getLogger(__name__)

TRAILER = {
    "_source_file": "源文件",
    "_source_line": "行号",
    "reason_codes": "错误代码",
    "reasons_zh": "错误原因",
}


@dataclass(frozen=True)
class RejectFile:
    source: str
    batch_id: str
    path: Path
    manifest: Path
    rows: int
    sha256: str


def reject_table(quarantine: pd.DataFrame, contract: SourceContract) -> pd.DataFrame:
    """The department's rows as it sent them (native headers, in contract order), then where and why."""
    if quarantine.empty:
        native = pd.DataFrame({name: pd.Series([], dtype="string") for name in contract.natives})
    else:
        lines = io.StringIO("\n".join(quarantine["raw"].astype(str)))
        native = pd.read_json(lines, lines=True, dtype=False, convert_dates=False).astype("string")
        native = native.reindex(columns=contract.natives)
    native.index = quarantine.index
    trailer = quarantine[list(TRAILER)].astype("string").rename(columns=TRAILER)
    trailer["错误代码"] = trailer["错误代码"].str.replace(";", ",", regex=False)
    # a SQL pull lands as parquet parts, names the department never saw: its rows are numbered across
    # the parts in key order, so the department's "file" is its front database table
    internal = trailer["源文件"].str.fullmatch(r"part-\d+\.parquet").fillna(False).astype(bool)
    trailer["源文件"] = trailer["源文件"].where(~internal, f"前置库 {contract.source}")
    return neutralise_formulas(pd.concat([native, trailer], axis=1))


def write_reject_file(
    storage: Storage, contract: SourceContract, batch_id: str, run_id: str, as_of: date
) -> RejectFile | None:
    """Write rejects_<batch>.csv and its manifest for one staged batch; None when nothing was quarantined.

    Once per batch: a batch an earlier run already answered keeps its file and manifest (the department
    has it); a retry of the same run rewrites the same bytes, so a retried task returns what a clean one does.
    """
    source = contract.source
    staged = storage.staged(source, batch_id) / "quarantine.parquet"
    if not staged.exists():  # held before staging (schema drift, encoding): validation.html says why
        return None
    name = f"rejects_{batch_id}.csv"
    target = storage.var / "outbox" / source / "rejects" / name
    sent = target.with_name(name + MANIFEST)
    published = target.with_name(name + MARKER).exists()
    if published and json.loads(sent.read_text(encoding="utf-8")).get("run_id") != run_id:
        return None
    quarantine = pd.read_parquet(staged)
    if quarantine.empty:
        return None
    quarantine = quarantine.sort_values(["_source_file", "_source_line"], kind="stable")
    # UTF-8 gets its BOM, or Excel on a Chinese Windows shows the department's own rows garbled
    encoding = "utf-8-sig" if codecs.lookup(contract.encoding).name == "utf-8" else contract.encoding
    payload = encode_table(reject_table(quarantine, contract), encoding, "\r\n", str(target))
    manifest = {
        "contract": f"{source}_rejects",
        "partner": source,
        "department": contract.department,
        "purpose": "退回未通过校验的数据行，供来源部门核实更正后重新报送。",
        "onward_transfer": "本文件仅退回数据来源部门，不得向第三方提供。",
        "run_id": run_id,
        "batch_id": batch_id,
        "period": f"{as_of:%Y-%m}",
        "business_date": as_of.isoformat(),
        "kind": "rejects",
        "rows": len(quarantine),
        "format": "csv",
        "encoding": encoding,
        "id_mode": "raw",
        "columns": [*contract.natives, *TRAILER.values()],
    }
    unit = publish_unit(target.parent, name, payload, manifest, load_signing_key(storage.var))
    log.info(
        "rejects %s batch %s: %d rows back to %s", source, batch_id, len(quarantine), contract.department
    )
    return RejectFile(source, batch_id, unit.path, unit.manifest, unit.rows, unit.sha256)


def write_pending_rejects(
    storage: Storage, contracts: dict[str, SourceContract], run_id: str, as_of: date
) -> list[RejectFile]:
    """Reject files for every staged batch in the ledger that has quarantined rows and none yet."""
    with storage.engine().connect() as conn:
        rows = conn.execute(
            sa.select(batches.c.source, batches.c.batch_id)
            .where(batches.c.quarantined_rows > 0, batches.c.source.in_(list(contracts)))
            .order_by(batches.c.source, batches.c.landed_at)
        ).all()
    written = []
    for source, batch_id in rows:
        made = write_reject_file(storage, contracts[source], batch_id, run_id, as_of)
        if made is not None:
            written.append(made)
    return written
