"""`hub bench-validate`: validation throughput at provincial scale (issue 4 target: the cdpf suite over
1,320,000 certificate rows at >= 500,000 rows/s).

Input: the cdpf 前置库 table (CJR_CJRZ) of a generated sandbox province (100,000 persons, with its
injected defects), tiled to the requested row count; each copy gets its own update second so copies are
not exact duplicates. Two figures, each the median of `rounds`, with the peak RSS while they ran:
- suite: the Great Expectations suite alone (`run_suite`: its validation definition in the runtime file
  context, the result stored as a staged batch's is) over the standardised canonical frame;
- stage: `stage_batch` itself on that batch landed as parquet parts, as the connector lands it: read,
  standardise, duplicate check, suite, quarantine split, gates, accepted/quarantine parquet,
  validation.json and validation.html.
"""

from __future__ import annotations

import gc
import sqlite3
import statistics
import tempfile
import time
from datetime import date
from pathlib import Path
from typing import Any

import pandas as pd

from bench.cycle import PeakRss
from connectors.landing import BatchWriter
from core.contracts import contract_for
from core.settings import Settings, load_settings
from core.storage import Storage
from sandbox.generator import init_sandbox
from stages.ingest import stage_batch
from transforms.standardise import standardise_rows
from transforms.validate import for_gx, load_suite, run_suite, suite_parameters, suite_path

AS_OF = date(2026, 11, 1)
PART_ROWS = 250_000


def cdpf_native(rows: int, persons: int = 100_000, seed: int = 20261101) -> pd.DataFrame:
    """`rows` native cdpf rows (text, as landed): a sandbox province's 前置库 table tiled."""
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
    return pd.concat(parts, ignore_index=True).iloc[:rows]


def _timed(rounds: int, run: Any) -> tuple[list[float], int]:
    seconds = []
    with PeakRss() as rss:
        for _ in range(rounds):
            gc.collect()  # garbage left by earlier work is not this round's cost
            started = time.perf_counter()
            run()
            seconds.append(time.perf_counter() - started)
    return seconds, rss.peak


def _time_suite(settings: Settings, native: pd.DataFrame, rounds: int) -> tuple[int, list[float], int]:
    """The suite alone over the standardised frame, as `apply_suite` hands it to GX."""
    contract = contract_for(settings, "cdpf")
    path = suite_path(settings, "cdpf")
    doc = load_suite(path, set(contract.names))
    frame, _ = standardise_rows(native, contract, AS_OF)
    checked = for_gx(frame[contract.names])
    suite = (checked, doc, path, Storage(settings).gx_context(), suite_parameters(settings, AS_OF))
    outcomes = run_suite(checked.head(1000), *suite[1:])  # imports and GX registration, not timed
    seconds, peak = _timed(rounds, lambda: run_suite(*suite, run_name="bench"))
    return len(outcomes), seconds, peak


def run_bench_validate(rows: int = 1_320_000, rounds: int = 3, persons: int = 100_000) -> dict[str, Any]:
    """Median seconds and rows/s of the suite alone and of the whole stage, with peak RSS of each."""
    native = cdpf_native(rows, persons)
    with tempfile.TemporaryDirectory(prefix="lianban-bench-validate-") as tmp:
        settings = load_settings(var_dir=tmp)
        with BatchWriter(Storage(settings), "cdpf", AS_OF.strftime("%Y%m%d"), "sql") as batch:
            for number, start in enumerate(range(0, rows, PART_ROWS), start=1):
                name = f"part-{number:05d}.parquet"
                part = native.iloc[start : start + PART_ROWS]
                part.to_parquet(batch.path_for(name), index=False)
                batch.added(name, len(part))
            batch_id = batch.publish(None).batch_id

        native = native.assign(_source_file="part", _source_line=range(1, rows + 1))
        expectations, suite_s, suite_rss = _time_suite(settings, native, rounds)
        del native
        results = []
        stage_s, stage_rss = _timed(
            rounds,
            lambda: results.append(stage_batch(settings, "cdpf", batch_id, AS_OF, max_invalid_ratio=1.0)),
        )
    suite, stage = statistics.median(suite_s), statistics.median(stage_s)
    last = results[-1]
    return {
        "rows": rows,
        "expectations": expectations,
        "suite_seconds": round(suite, 3),
        "suite_rows_per_s": round(rows / suite),
        "suite_seconds_all": [round(s, 3) for s in suite_s],
        "suite_peak_rss_mib": round(suite_rss / 2**20),
        "stage_seconds": round(stage, 3),
        "stage_rows_per_s": round(rows / stage),
        "stage_seconds_all": [round(s, 3) for s in stage_s],
        "stage_peak_rss_mib": round(stage_rss / 2**20),
        "stage_accepted": last.accepted,
        "stage_quarantined": last.quarantined,
        "rounds": rounds,
    }
