"""`hub bench-national`: a sandbox partitioned by province and prefecture, run partition by partition.

Each partition (one province's prefecture) is its own var directory with its own sandbox (seed per
partition), store and outbox, and runs in its own child process: pull and stage every source, full merge,
eligibility, exchange. So memory is bounded by one partition per worker (the child exits and gives its
memory back), and disk by keeping only each partition's figures (its var directory is removed after,
unless `keep`). `workers` runs that many partitions at once. The figures (per partition: seconds per
stage, peak RSS) are what docs/scale.md's model of the national run rests on.

The sandbox generator knows one province's county codes (Zhejiang's), so every partition's persons carry
those codes: a partition stands for a prefecture by its size and shape, not by its address codes. The
cycle's cost does not depend on which codes they are.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from core.settings import load_settings
from core.storage import write_json_atomic

STAGES = ("sandbox", "pull_and_stage", "merge", "eligibility", "exchange")


def run_partition(root: Path, persons: int, seed: int) -> dict[str, Any]:
    """One partition's cycle in this process (the child): seconds per stage and this process's peak RSS."""
    from hub.run import side_services
    from sandbox.generator import init_sandbox
    from stages.eligibility import eligibility_stage
    from stages.exchange import exchange_stage
    from stages.ingest import pull_stage, validate_stage
    from stages.merge import merge_stage

    settings = load_settings(var_dir=root)
    seconds: dict[str, float] = {}
    started = time.perf_counter()
    info = init_sandbox(settings, persons=persons, seed=seed)
    seconds["sandbox"] = time.perf_counter() - started
    as_of: date = info.as_of
    run_id = f"cycle-{as_of}"
    os.environ["LIANBAN_VAR"] = str(root)
    started = time.perf_counter()
    with side_services(settings):
        for source in settings.sources:
            landed = pull_stage(settings, source, as_of)
            validate_stage(settings, source, landed.batch_id, as_of)
    seconds["pull_and_stage"] = time.perf_counter() - started
    rows = {}
    for name, stage in (
        ("merge", merge_stage),
        ("eligibility", eligibility_stage),
        ("exchange", exchange_stage),
    ):
        started = time.perf_counter()
        result = stage(settings, as_of, run_id)
        seconds[name] = time.perf_counter() - started
        rows[name] = result.rows
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    return {
        "persons": persons,
        "seconds": {k: round(v, 3) for k, v in seconds.items()},
        "rows": rows,
        "peak_rss_mib": round(peak, 1),
    }


def _child(root: Path, persons: int, seed: int, keep: bool) -> dict[str, Any]:
    """Run one partition in a fresh interpreter; its figures come back as the last line of its output."""
    done = subprocess.run(  # noqa: S603 - argv list, no shell; this interpreter and module
        [sys.executable, "-m", "bench.national", str(root), str(persons), str(seed)],
        capture_output=True,
        text=True,
        env={**os.environ, "LIANBAN_VAR": str(root)},
    )
    if done.returncode != 0:
        raise RuntimeError(f"partition {root} failed ({done.returncode}): {done.stderr[-2000:]}")
    figures: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    if not keep:
        shutil.rmtree(root, ignore_errors=True)
    return figures


def run_bench_national(
    provinces: int,
    prefectures: int,
    persons_per_partition: int,
    workers: int = 1,
    seed: int = 20261101,
    base: Path | None = None,
    keep: bool = False,
) -> dict[str, Any]:
    """Every partition once, `workers` at a time; per-partition figures, totals and the wall time."""
    bench_dir = (base or load_settings().var_dir) / "bench"
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    work = bench_dir / f"national-{stamp}"
    jobs = [
        (
            f"province-{p:02d}/prefecture-{k:02d}",
            work / f"province-{p:02d}" / f"prefecture-{k:02d}",
            seed + p * 100 + k,
        )
        for p in range(provinces)
        for k in range(prefectures)
    ]
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=workers) as pool:  # each job is a child process
        results = list(pool.map(lambda j: _child(j[1], persons_per_partition, j[2], keep), jobs))
    wall = time.perf_counter() - started
    partitions = [{"partition": name, **figures} for (name, _, _), figures in zip(jobs, results, strict=True)]
    cycle_stages = [s for s in STAGES if s != "sandbox"]
    per_partition = [sum(p["seconds"][s] for s in cycle_stages) for p in partitions]
    figures: dict[str, Any] = {
        "provinces": provinces,
        "prefectures_per_province": prefectures,
        "persons_per_partition": persons_per_partition,
        "persons": persons_per_partition * len(jobs),
        "workers": workers,
        "cpus": os.cpu_count(),
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "wall_seconds": round(wall, 3),
        "cycle_seconds_per_partition": {
            "min": round(min(per_partition), 3),
            "median": round(sorted(per_partition)[len(per_partition) // 2], 3),
            "max": round(max(per_partition), 3),
        },
        "cycle_seconds_per_million_persons": round(
            sum(per_partition) / (persons_per_partition * len(jobs)) * 1e6, 1
        ),
        "stage_seconds_total": {s: round(sum(p["seconds"][s] for p in partitions), 3) for s in STAGES},
        "peak_rss_mib_max": max(p["peak_rss_mib"] for p in partitions),
        "partitions": partitions,
    }
    write_json_atomic(bench_dir / f"bench-national-{stamp}.json", figures)
    figures["json"] = str(bench_dir / f"bench-national-{stamp}.json")
    return figures


if __name__ == "__main__":  # the child of _child: one partition, its figures as one JSON line
    import logging

    logging.basicConfig(level=logging.WARNING)
    sys.stdout.write(json.dumps(run_partition(Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]))) + "\n")
