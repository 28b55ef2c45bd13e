"""`hub bench`, `hub bench-pull`, `hub bench-validate`, registered through the `lianban.cli` entry point.

hub never imports this package (docs/architecture.md); hub.cli_common.side_commands calls `register`.
"""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from core.settings import load_settings
from hub.cli_common import Config, console, set_logging


def register(app: typer.Typer) -> None:
    app.command()(bench)
    app.command("bench-pull")(bench_pull)
    app.command("bench-validate")(bench_validate)
    app.command("bench-national")(bench_national)


def bench(
    persons: Annotated[int, typer.Option(min=100, help="sandbox size")] = 100_000,
    seed: Annotated[int, typer.Option(help="sandbox seed")] = 20261101,
    master_url: Annotated[
        str | None, typer.Option(help="an empty database for the master store (default: a new SQLite file)")
    ] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Time each stage in-process on a sandbox of N persons and compare with a DuckDB floor."""
    from bench.cycle import run_bench

    set_logging(verbose)
    with console.status(f"benchmarking {persons:,} persons"):
        figures = run_bench(persons, seed, master_url=master_url)
    table = Table(title=f"hub bench: {persons:,} persons (seed {seed}, as of {figures['as_of']})")
    for column in ("stage", "rows", "seconds", "peak RSS MiB"):
        table.add_column(column, justify="left" if column == "stage" else "right")
    for t in figures["stages"]:
        table.add_row(t["stage"], f"{t['rows']:,}", f"{t['seconds']:.2f}", f"{t['peak_rss_mib']:.0f}")
    console.print(table)
    console.print(
        f"cycle stages (pull to report): {figures['cycle_seconds']:.2f} s; merge + eligibility "
        f"{figures['merge_plus_eligibility_seconds']:.2f} s vs DuckDB floor {figures['duckdb_floor_seconds']:.2f} s "
        f"= ratio {figures['ratio_to_floor']:.2f}; peak RSS {figures['peak_rss_mib']:.0f} MiB"
    )
    console.print(
        f"master store {figures['master_backend']}: incremental merge after 1% changes "
        f"{figures['incremental_merge_seconds']:.2f} s = {figures['incremental_share_of_full']:.1%} of the full merge"
    )
    console.print(
        f"decision versions written: {figures['decisions_written_full']:,} on the first run, "
        f"{figures['decisions_written_incremental']['opened']:,} after 1% changes "
        f"({figures['decisions_written_share']:.2%}) in {figures['eligibility_incremental_seconds']:.2f} s"
    )
    console.print(
        f"compute (merge + eligibility without store writes) {figures['compute_seconds']:.2f} s = ratio "
        f"{figures['compute_ratio_to_floor']:.2f} to the DuckDB floor; store write "
        f"{figures['store_write_seconds']:.2f} s vs bulk-ingest floor {figures['store_floor']['seconds']:.2f} s "
        f"= ratio {figures['store_ratio_to_floor']:.2f}"
    )
    day = figures["one_percent_day"]
    shares = ", ".join(f"{k.split(' ')[0]} {v:.0%}" for k, v in day["share"].items())
    console.print(f"1%-change day: {day['seconds']:.2f} s ({shares})")
    pulls = ", ".join(f"{k} {v:,.0f}" for k, v in figures["pull_rows_per_second"].items())
    console.print(f"pull rows/s: {pulls}")
    for label, key in (
        ("full merge", "merge_seconds_by_step"),
        ("incremental", "incremental_seconds_by_step"),
        ("eligibility", "eligibility_seconds_by_step"),
    ):
        steps = ", ".join(f"{k} {v:.2f} s" for k, v in figures.get(key, {}).items())
        console.print(f"  {label}: {steps}")
    console.print(f"figures: {figures['json']}")


def bench_national(
    provinces: Annotated[int, typer.Option(min=1, help="provinces in the sandbox")] = 2,
    prefectures: Annotated[int, typer.Option(min=1, help="prefectures (partitions) per province")] = 3,
    persons_per_partition: Annotated[
        int, typer.Option(min=100, help="certificate holders per partition")
    ] = 20_000,
    workers: Annotated[int, typer.Option(min=1, help="partitions run at once (one child process each)")] = 1,
    seed: Annotated[int, typer.Option(help="first partition's sandbox seed")] = 20261101,
    keep: Annotated[bool, typer.Option(help="keep each partition's var directory")] = False,
) -> None:
    """Run a sandbox partitioned by province and prefecture, one partition per child process; per-partition
    costs for the national model (docs/scale.md)."""
    from bench.national import STAGES, run_bench_national

    total = provinces * prefectures * persons_per_partition
    if total > 2_000_000:
        console.print(
            f"[yellow]{total:,} persons: above 2 million, run it on a machine of its own (docs/scale.md)"
        )
    with console.status(f"{provinces} x {prefectures} partitions of {persons_per_partition:,} persons"):
        f = run_bench_national(provinces, prefectures, persons_per_partition, workers, seed, keep=keep)
    table = Table(title=f"hub bench-national: {f['persons']:,} persons, {workers} worker(s)")
    for column in ("partition", *STAGES, "peak RSS MiB"):
        table.add_column(column, justify="left" if column == "partition" else "right")
    for p in f["partitions"]:
        table.add_row(p["partition"], *(f"{p['seconds'][s]:.1f}" for s in STAGES), f"{p['peak_rss_mib']:.0f}")
    console.print(table)
    per = f["cycle_seconds_per_partition"]
    console.print(
        f"cycle per partition (pull to exchange, without sandbox generation): min {per['min']:.1f} s, "
        f"median {per['median']:.1f} s, max {per['max']:.1f} s; {f['cycle_seconds_per_million_persons']:.0f} s "
        f"per million persons on one core; wall {f['wall_seconds']:.1f} s; peak RSS {f['peak_rss_mib_max']:.0f} MiB"
    )
    console.print(f"figures: {f['json']}")


def bench_pull(
    url: Annotated[
        str | None, typer.Option(help="a throwaway PostgreSQL/MariaDB database to copy the table into first")
    ] = None,
    chunk_rows: Annotated[int, typer.Option(min=1000, help="rows per landed part")] = 50_000,
    config: Config = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Rows/s of one full SQL pull of the sandbox's cdpf 前置库 table (SQLite, or a copy at --url)."""
    from bench.pull import run_bench_pull

    set_logging(verbose)
    f = run_bench_pull(load_settings(config), url, chunk_rows)
    console.print(
        f"pull cdpf from {f['backend']}: {f['rows']:,} rows in {f['seconds']:.2f} s = "
        f"{f['rows_per_second']:,.0f} rows/s ({f['cpu_seconds']:.2f} CPU s in this process = "
        f"{f['rows_per_cpu_second']:,.0f} rows per CPU s); peak RSS {f['peak_rss_mib']:.0f} MiB; figures: {f['json']}"
    )


def bench_validate(
    rows: Annotated[int, typer.Option(min=1000, help="cdpf certificate rows to validate")] = 1_320_000,
    rounds: Annotated[int, typer.Option(min=1, help="timed rounds; the median is reported")] = 3,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Throughput of the cdpf validation suite and of the whole validate stage over N certificate rows."""
    from bench.validate import run_bench_validate

    set_logging(verbose)
    with console.status(f"validating {rows:,} cdpf rows x {rounds}"):
        f = run_bench_validate(rows, rounds)
    console.print(
        f"cdpf suite ({f['expectations']} expectations) over {f['rows']:,} rows: median {f['suite_seconds']:.2f} s "
        f"= {f['suite_rows_per_s']:,} rows/s (rounds {f['suite_seconds_all']}; peak RSS "
        f"{f['suite_peak_rss_mib']} MiB)\nwhole stage_batch (read landing, standardise, suite, split, write): "
        f"median {f['stage_seconds']:.2f} s = {f['stage_rows_per_s']:,} rows/s (rounds {f['stage_seconds_all']}; "
        f"peak RSS {f['stage_peak_rss_mib']} MiB; {f['stage_accepted']:,} accepted, "
        f"{f['stage_quarantined']:,} quarantined)"
    )
