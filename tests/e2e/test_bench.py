"""`hub bench` times every stage, and its DuckDB floor decides exactly what the pipeline decides."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]


def test_bench_prints_stages_and_floor_agrees(tmp_path: Path) -> None:
    env = {**os.environ, "LIANBAN_VAR": str(tmp_path / "var")}
    env.pop("LIANBAN_POLICE_URL", None)
    done = subprocess.run(
        [sys.executable, "-m", "hub.cli", "bench", "--persons", "1500", "--seed", "3"],
        env=env, cwd=ROOT, capture_output=True, text=True,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "duckdb floor" in done.stdout and "ratio" in done.stdout
    [figures_path] = (tmp_path / "var" / "bench").glob("bench-1500-*.json")
    figures = json.loads(figures_path.read_text(encoding="utf-8"))
    stages = {s["stage"] for s in figures["stages"]}
    assert {"merge", "eligibility", "exchange", "report", "duckdb floor (merge + eligibility)"} <= stages
    assert all(s["seconds"] > 0 and s["peak_rss_mib"] > 0 for s in figures["stages"])
    incremental = next(s for s in figures["stages"] if s["stage"].startswith("merge incremental"))
    merged = next(s for s in figures["stages"] if s["stage"] == "merge")
    assert 0 < incremental["rows"] <= merged["rows"] // 50  # about 1% of persons rewritten, not all
    # compute without store writes against the DuckDB floor; the store write against a bulk ingest
    steps = figures["merge_seconds_by_step"]
    elig = figures["eligibility_seconds_by_step"]
    assert set(elig) == {"read", "evaluate", "store"}
    compute = steps["read_and_scope"] + steps["merge"] + elig["read"] + elig["evaluate"]
    assert figures["compute_seconds"] == pytest.approx(compute)
    assert figures["compute_ratio_to_floor"] == pytest.approx(compute / figures["duckdb_floor_seconds"])
    assert figures["store_floor"]["rows"] == merged["rows"] and figures["store_floor"]["seconds"] > 0
    assert figures["store_ratio_to_floor"] == pytest.approx(
        steps["store"] / figures["store_floor"]["seconds"]
    )
    day = figures["one_percent_day"]
    assert [s.split(" ")[0] for s in day["stages"]] == [
        "merge",
        "eligibility",
        "exchange",
        "deliver",
        "report",
    ]
    assert day["seconds"] == pytest.approx(sum(day["stages"].values()))
    assert sum(day["share"].values()) == pytest.approx(1.0)
    assert {"cdpf", "civil", "hrss", "police"} <= set(figures["pull_rows_per_second"])
    assert "compute (merge + eligibility" in done.stdout and "1%-change day" in done.stdout
    run = tmp_path / "var" / "bench" / "p1500-s3"
    ours = pd.read_parquet(run / "runs" / f"bench-{figures['as_of']}" / "decisions.parquet")
    # decisions are stored as changes: every one on the first run, about 1% on the 1%-change day
    assert figures["decisions_written_full"] == len(ours)
    assert 0 < figures["decisions_written_incremental"]["opened"] <= len(ours) // 50
    # the partners acknowledged the first run's files: the day's delta files send changes only
    exchanged = json.loads(
        (run / "runs" / f"bench-{figures['as_of']}-1pct" / "exchange.json").read_text("utf-8")
    )
    manifests = [json.loads(Path(f["manifest"]).read_text("utf-8")) for f in exchanged["files"]]
    deltas = [m for m in manifests if m["kind"] == "delta"]
    assert deltas and all(m["delta_base"] and m["rows"] <= len(ours) // 50 for m in deltas)
    floor = pd.read_parquet(run / "bench-floor-decisions.parquet")
    key = ["id_number", "service"]
    both = ours.merge(floor, on=key, suffixes=("", "_floor"), validate="one_to_one")
    assert len(both) == len(ours) == len(floor)
    assert (both["eligible"] == both["eligible_floor"]).all()
    assert ((both["amount"] - both["amount_floor"]).abs() < 0.005).all()


def test_bench_validate_times_the_whole_cdpf_suite() -> None:
    from bench.validate import run_bench_validate
    from core.settings import ROOT

    figures = run_bench_validate(rows=20_000, rounds=3, persons=2_000)  # medians: one round can stall
    suite = json.loads((ROOT / "gx" / "expectations" / "cdpf.json").read_text(encoding="utf-8"))
    assert figures["expectations"] == len(suite["expectations"])
    assert 0 < figures["suite_seconds"] <= figures["stage_seconds"]
    # rows/s is rows over the unrounded seconds; the seconds shown are rounded to the millisecond
    rate = figures["suite_rows_per_s"]
    assert abs(rate * figures["suite_seconds"] - 20_000) <= rate * 0.0005 + 1
