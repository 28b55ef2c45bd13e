"""`hub bench-validate`: throughput of the cdpf validation suite at provincial scale (issue target 500k rows/s).

Input: the cdpf 前置库 rows of a generated sandbox province (100,000 persons, with its defects), tiled to the
requested row count; each copy gets its own update second so copies are not exact duplicates. Timed
separately, each as the median of `rounds`:
- suite: the Great Expectations suite alone over the standardised frame (what the target is about);
- stage: standardise + duplicate check + suite + quarantine split, without the file writes.
"""

from __future__ import annotations

import sqlite3
import statistics
import tempfile
import time
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from hub.bench import PeakRss
from hub.sandbox.generator import init_sandbox
from hub.settings import load_settings
from transforms.contracts import contract_for
from transforms.standardise import standardise_rows
from transforms.validate import VALID_ID, _for_gx, load_suite, run_suite, suite_path

AS_OF = date(2026, 11, 1)


def cdpf_rows(rows: int, persons: int = 100_000, seed: int = 20261101) -> pd.DataFrame:
    """`rows` native cdpf rows: a sandbox province's 前置库 table tiled, with lineage columns."""
    with tempfile.TemporaryDirectory(prefix="lianban-bench-validate-") as tmp:
        settings = load_settings(var_dir=tmp)
        init_sandbox(settings, persons=persons, seed=seed)
        with sqlite3.connect(Path(tmp) / "sandbox" / "frontdb_cdpf.sqlite") as con:
            base = pd.read_sql("SELECT * FROM CJR_CJRZ", con).astype("string")
    copies = -(-rows // len(base))
    parts = []
    for i in range(copies):
        part = base.copy()
        part["GXSJ"] = part["GXSJ"].str.slice(0, 17) + f"{i % 60:02d}"
        parts.append(part)
    native = pd.concat(parts, ignore_index=True).iloc[:rows]
    native["_source_file"] = pd.Series("CJR_CJRZ", index=native.index, dtype="string")
    native["_source_line"] = np.arange(1, len(native) + 1)
    return native


def run_bench_validate(rows: int, rounds: int = 3, persons: int = 100_000) -> dict[str, Any]:
    """Median seconds and rows/s of the suite alone and of the in-memory stage, with peak RSS."""
    settings = load_settings()
    contract = contract_for(settings, "cdpf")
    native = cdpf_rows(rows, persons)
    path = suite_path(settings, "cdpf")
    doc = load_suite(path, set(contract.names))
    for exp in doc["expectations"]:
        if exp["type"] == VALID_ID:
            exp["kwargs"]["as_of"] = AS_OF.isoformat()
    frame, _ = standardise_rows(native.head(1000), contract, AS_OF)
    run_suite(_for_gx(frame[contract.names]), doc, path)  # imports and GX registration, not timed

    suite_s, stage_s = [], []
    with PeakRss() as rss:
        for _ in range(rounds):
            started = time.perf_counter()
            frame, reasons = standardise_rows(native, contract, AS_OF)
            native.duplicated(subset=contract.natives, keep="first")
            checked = _for_gx(frame[contract.names])
            suite_started = time.perf_counter()
            outcomes = run_suite(checked, doc, path)
            suite_s.append(time.perf_counter() - suite_started)
            frame.loc[~reasons.any(), contract.names]
            stage_s.append(time.perf_counter() - started)
    suite, stage = statistics.median(suite_s), statistics.median(stage_s)
    return {
        "rows": rows,
        "expectations": len(outcomes),
        "suite_seconds": round(suite, 3),
        "suite_rows_per_s": round(rows / suite),
        "stage_seconds": round(stage, 3),
        "stage_rows_per_s": round(rows / stage),
        "rounds": rounds,
        "suite_seconds_all": [round(s, 3) for s in suite_s],
        "peak_rss_mib": round(rss.peak / 2**20),
    }
