"""Reject files: each quarantined row goes back to the department that sent it (docs/architecture.md, Batches).

One file per batch with quarantined rows, under outbox/<source>/rejects/, published by the exchange
stage (stages/exchange.py); here the table, pure. The department gets its own
row back, under its own column names and in its own encoding, followed by where the row was (file and
line) and why it was refused (reason codes and their Chinese text), so it can correct and resend it.
The file carries the department's own ID numbers: it goes only to the department they came from.
"""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from core.contracts import SourceContract
from transforms.exchange import neutralise_formulas

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
