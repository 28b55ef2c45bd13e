"""The `hub` command line: run, batch, approve, master, report, runs (and the side commands sandbox, bench)."""

from __future__ import annotations

import json
from datetime import date, datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Column, Table

from core.settings import load_settings
from hub.cli_common import Config, console, parse_date, set_logging, side_commands
from hub.cli_delivery import register as register_delivery

app = typer.Typer(help="Lianban (联办) data-exchange hub.", no_args_is_help=True, add_completion=False)
batch_app = typer.Typer(help="Landed batches and their verdicts.", no_args_is_help=True)
app.add_typer(batch_app, name="batch")
master_app = typer.Typer(help="The master file (一人一档) and its history.", no_args_is_help=True)
app.add_typer(master_app, name="master")
register_delivery(app)  # verify, deliver, deliveries, redeliver (hub/cli_delivery.py)


def _sandbox_as_of(var_dir: Path) -> date | None:
    meta = var_dir / "sandbox" / "sandbox.json"
    if not meta.exists():
        return None
    return date.fromisoformat(json.loads(meta.read_text(encoding="utf-8"))["as_of"])


@app.command()
def run(
    run_date: Annotated[
        str | None, typer.Option("--date", help="logical date YYYY-MM-DD (default: the sandbox's)")
    ] = None,
    config: Config = None,
    verbose: Annotated[
        int,
        typer.Option(
            "--verbose", "-v", count=True, help="-v: the hub's own log lines; -vv: Airflow's task logs too"
        ),
    ] = 0,
    airflow_home: Annotated[
        Path | None,
        typer.Option(
            "--airflow-home",
            help="the team's AIRFLOW_HOME (migrated metadata DB) so runs show in its UI; "
            "default LIANBAN_AIRFLOW_HOME or a private one under var/airflow",
        ),
    ] = None,
) -> None:
    """Run one full exchange cycle through the Airflow DAGs, in-process."""
    from hub.run import EXIT_STALE, CycleFailed, run_cycle

    set_logging(verbose >= 1)
    settings = load_settings(config)
    as_of = parse_date(run_date) or _sandbox_as_of(settings.var_dir)
    if as_of is None:
        raise typer.BadParameter(
            "no --date given and no sandbox found: run `hub sandbox init` first", param_hint="--date"
        )
    if as_of < date(2016, 1, 1):
        raise typer.BadParameter(f"{as_of} is before 2016-01-01, when the DAGs start", param_hint="--date")
    started = datetime.now()
    try:
        outcome = run_cycle(settings, as_of, verbose >= 2, airflow_home)
    except CycleFailed as exc:
        console.print(f"[red]cycle failed:[/red] {exc}")
        raise typer.Exit(1) from exc
    table = Table(
        title=f"Lianban cycle {outcome.run_id} ({(datetime.now() - started).total_seconds():.0f} s)"
    )
    table.add_column("DAG")
    table.add_column("state")
    for dag_id, state in outcome.dag_states.items():
        table.add_row(dag_id, state)
    console.print(table)
    for label, where in outcome.outputs.items():
        console.print(f"{label:>7}: {where}")
    if outcome.stale:  # exit 3: delivered, but not on today's data for every source (1: nothing delivered)
        for entry in outcome.stale:
            console.print(
                f"[bold yellow]STALE {entry['source']}[/bold yellow]: pull refused on {entry['as_of']}: "
                f"{entry['error']}; the cycle used its last accepted batch {entry['last_good_batch']}"
            )
        raise typer.Exit(EXIT_STALE)


@batch_app.command("list")
def batch_list(
    source: Annotated[str | None, typer.Option(help="only this source")] = None, config: Config = None
) -> None:
    """Show every batch in the ledger with its verdict (held batches say why)."""
    import sqlalchemy as sa

    from core.storage import Storage, batches

    storage = Storage(load_settings(config))
    query = sa.select(batches).order_by(batches.c.source, batches.c.landed_at)
    if source:
        query = query.where(batches.c.source == source)
    with storage.engine().connect() as conn:
        rows = conn.execute(query).mappings().all()
    table = Table(title="batches")
    width = max((len(row["batch_id"]) for row in rows), default=5)
    table.add_column("batch", no_wrap=True, min_width=width)  # whole ids: `hub batch release` takes them
    for column in ("status", "rows", "accepted", "quarantined", "note"):
        table.add_column(column)
    for row in rows:
        table.add_row(
            row["batch_id"], row["status"], str(row["rows"]), str(row["accepted_rows"]),
            str(row["quarantined_rows"]), row["note"] or "",
        )  # fmt: skip
    console.print(table)


@batch_app.command("release")
def batch_release(
    batch_id: Annotated[str, typer.Argument(help="the held batch to accept (its id or a unique prefix)")],
    who: Annotated[str, typer.Option("--by", help="who takes the decision (kept in the ledger)")],
    partial: Annotated[
        bool,
        typer.Option(
            "--partial",
            help="accept the readable rows, quarantine and return the bad ones (bad bytes in a few lines)",
        ),
    ] = False,
    config: Config = None,
) -> None:
    """Accept a held batch: the next cycle merges it. An explicit decision, recorded with its author,
    honoured by every later staging of the batch."""
    from hub.release import release_batch

    try:
        released = release_batch(load_settings(config), batch_id, who, partial)
    except (KeyError, ValueError) as exc:
        console.print(f"[red]{exc.args[0]}[/red]", highlight=False)
        raise typer.Exit(1) from exc
    console.print(
        f"[green]released[/green] {released['batch_id']}: {released['accepted_rows']} rows accepted, "
        f"{released['quarantined_rows']} quarantined; {released['note']}",
        highlight=False,
    )


@app.command()
def approve(
    run_id: Annotated[str, typer.Argument(metavar="RUN", help="the run whose outbound files the guard held")],
    who: Annotated[str, typer.Option("--by", help="who approves (recorded with the time)")],
    reason: Annotated[str, typer.Option("--reason", help="why the mass change is right (recorded)")],
    config: Config = None,
) -> None:
    """Release the outbound files the mass-change guard held for a run: recorded, then built."""
    from stages.eligibility import approve_and_build

    try:
        done = approve_and_build(load_settings(config), run_id, who, reason)
    except (LookupError, ValueError) as exc:
        console.print(f"[red]{exc.args[0]}[/red]")
        raise typer.Exit(1) from exc
    console.print(
        f"[green]approved[/green] {run_id} by {done['by']} at {done['at']} ({', '.join(done['services'])}); "
        f"{len(done['files'])} files built"
    )


@master_app.command("show")
def master_show(
    id_number: Annotated[
        str, typer.Argument(metavar="ID", help="18-character ID number (a former number is followed)")
    ],
    as_of: Annotated[str | None, typer.Option("--as-of", help="the record as it stood on YYYY-MM-DD")] = None,
    unmasked: Annotated[
        bool, typer.Option("--unmasked", help="show raw ID, certificate number and name (audited)")
    ] = False,
    config: Config = None,
) -> None:
    """Print a person's master record as it stood, with each attribute's source and batch."""
    from hub.master_view import (
        MalformedId,
        RecordNotFound,
        attribute_rows,
        audit_unmasked,
        header_lines,
        lookup,
    )
    from store.master_store import MasterStore

    settings = load_settings(config)
    day = parse_date(as_of)
    store = MasterStore(settings.expand(settings.master_url))
    try:
        view = lookup(store, id_number, day, date.today())
    except MalformedId as exc:
        raise typer.BadParameter(str(exc), param_hint="ID") from exc
    except RecordNotFound as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from exc
    finally:
        store.dispose()
    if unmasked:
        audit_unmasked(settings.var_dir, "hub master show --unmasked")
    for line in header_lines(view, unmasked):
        console.print(line, highlight=False)
    table = Table(title=f"as of {day}" if day else "latest version")
    for column in ("属性 attribute", "值 value", "来源 source", "批次 batch"):
        table.add_column(column, overflow="fold")
    for row in attribute_rows(view, unmasked):
        table.add_row(*row)
    console.print(table)


@app.command()
def explain(
    id_number: Annotated[
        str, typer.Argument(metavar="ID", help="18-character ID number (a former number is followed)")
    ],
    as_of: Annotated[
        str | None, typer.Option("--as-of", help="decide as of YYYY-MM-DD (default: the sandbox's date)")
    ] = None,
    lang: Annotated[str, typer.Option("--lang", help="zh or en")] = "zh",
    as_json: Annotated[bool, typer.Option("--json", help="print JSON instead of text")] = False,
    unmasked: Annotated[
        bool, typer.Option("--unmasked", help="show raw ID, certificate number and name (audited)")
    ] = False,
    config: Config = None,
) -> None:
    """Explain every service for one person: each criterion with its facts, sources and parameters."""
    from hub.explain import explain as explain_person
    from hub.explain import render
    from hub.master_view import MalformedId, RecordNotFound, audit_unmasked, lookup
    from store.master_store import MasterStore
    from transforms.eligibility import PolicyError, load_policy

    if lang not in ("zh", "en"):
        raise typer.BadParameter("expected zh or en", param_hint="--lang")
    settings = load_settings(config)
    day = parse_date(as_of) or _sandbox_as_of(settings.var_dir) or date.today()
    store = MasterStore(settings.expand(settings.master_url))
    try:
        view = lookup(store, id_number, day, date.today())
        policy = load_policy(settings.path(settings.policy), day)
    except MalformedId as exc:
        raise typer.BadParameter(str(exc), param_hint="ID") from exc
    except (RecordNotFound, PolicyError) as exc:
        console.print(f"[red]{exc}[/red]", highlight=False)
        raise typer.Exit(1) from exc
    finally:
        store.dispose()
    if unmasked:
        audit_unmasked(settings.var_dir, "hub explain --unmasked")
    result = explain_person(view, policy, day, unmasked)
    if as_json:
        typer.echo(json.dumps(result, ensure_ascii=False, indent=1))
        return
    for line in render(result, lang):
        console.print(line, highlight=False, markup=False)


@app.command()
def merge(
    run_date: Annotated[
        str | None, typer.Option("--date", help="the run's date YYYY-MM-DD (default: the sandbox's)")
    ] = None,
    full: Annotated[
        bool, typer.Option("--full", help="recompute every person from the staged batches (a rebuild)")
    ] = False,
    config: Config = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Merge the accepted batches into the master file now, outside a cycle (e.g. a rebuild after a fix)."""
    from stages.merge import merge_stage

    set_logging(verbose >= 1)
    settings = load_settings(config)
    as_of = parse_date(run_date) or _sandbox_as_of(settings.var_dir)
    if as_of is None:
        raise typer.BadParameter("no --date given and no sandbox found", param_hint="--date")
    done = merge_stage(settings, as_of, f"merge-{as_of}-{'full' if full else 'incremental'}", full=full)
    console.print(
        f"{done.mode} merge {done.run_id}: {done.persons:,} persons, scope {done.scope:,}, "
        f"written {done.written}, {done.conflicts:,} conflicts, {done.id_changes:,} ID changes"
    )


@app.command()
def report(
    run_id: Annotated[
        str | None, typer.Argument(help="run id, e.g. cycle-2026-11-01 (default: the latest)")
    ] = None,
    config: Config = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Write (again) a run's auditor report: report.html, report.json and the index across runs."""
    from stages.report import rebuild_report

    set_logging(verbose)
    path = rebuild_report(load_settings(config), run_id)
    console.print(
        f"report: {path}\njson:   {path.with_suffix('.json')}\nindex:  {path.parent.parent / 'index.html'}"
    )


@app.command()
def runs(config: Config = None) -> None:
    """Every run with a report: headline figures, and the index page with their trends."""
    from core.storage import Storage
    from stages.report import run_rows, write_index

    storage = Storage(load_settings(config))
    table = Table(
        Column("run", no_wrap=True, min_width=16),  # whole, never cropped: it is what one types next
        Column("as of", no_wrap=True, min_width=10),
        *("persons", "eligible", "quarantined", "conflicts", "not paid", "not eligible", "fund"),
    )
    for r in reversed(run_rows(storage)):
        eligible = ", ".join(f"{k} {v}" for k, v in r["eligible"].items())
        cells = [r[k] for k in ("quarantined", "conflicts", "not_paid", "not_eligible", "fund")]
        table.add_row(
            r["run_id"],
            r["as_of"],
            str(r["persons"]),
            eligible,
            *("—" if c is None else str(c) for c in cells),
        )
    console.print(table)
    console.print(f"index: {write_index(storage)}")


side_commands(app)  # `hub sandbox ...`, `hub bench ...`: side packages, see hub/cli_common.py

if __name__ == "__main__":
    app()
