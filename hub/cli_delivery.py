"""The `hub` commands for delivery: verify (for partners), deliver, deliveries, redeliver."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from core.settings import load_settings
from hub.cli_common import Config, console


def verify(
    file: Annotated[Path, typer.Argument(help="the delivered data file")],
    public_key: Annotated[
        Path | None, typer.Option("--public-key", help="the hub's Ed25519 public key (PEM)")
    ] = None,
    manifest: Annotated[Path | None, typer.Option(help="default: FILE.manifest.json beside it")] = None,
) -> None:
    """Check a delivered file offline: manifest signature, SHA-256 and rows, with only the public key."""
    from core.publish import MANIFEST
    from core.signing import PUBLIC_NAME, VerifyError, verify_delivery

    key = public_key or load_settings().var_dir / "keys" / PUBLIC_NAME
    try:
        checked = verify_delivery(file, manifest or file.with_name(file.name + MANIFEST), key)
    except VerifyError as exc:
        console.print(f"[red]FAILED[/red] {exc}", highlight=False)
        raise typer.Exit(1) from exc
    console.print(
        f"OK {file.name}: contract {checked['contract']} v{checked['version']}, {checked['rows']} rows, "
        f"sha256 {checked['sha256']}, signed by {checked['key_id']}",
        highlight=False,
    )


def deliver(
    partner: Annotated[str | None, typer.Option(help="only this partner")] = None,
    config: Config = None,
) -> None:
    """Send every published file not yet delivered, collect receipts, re-send overdue ones (补传)."""
    from stages.deliver import DeliveryError
    from stages.deliver import deliver as run_delivery

    try:
        counts = run_delivery(load_settings(config), partner=partner)
    except DeliveryError as exc:
        console.print(f"[red]{exc}[/red]", highlight=False)
        raise typer.Exit(1) from exc
    console.print(json.dumps(counts))


def deliveries(
    partner: Annotated[str | None, typer.Option(help="only this partner")] = None,
    status: Annotated[str | None, typer.Option(help="pending | failed | acked")] = None,
    config: Config = None,
) -> None:
    """Every delivered file with its status, attempts and receipt (the delivery ledger)."""
    from core.storage import Storage
    from stages.deliver import STATUSES
    from stages.deliver import deliveries as listed

    if status is not None and status not in STATUSES:
        raise typer.BadParameter(f"expected one of {list(STATUSES)}, got {status!r}", param_hint="--status")
    rows = listed(Storage(load_settings(config)), partner, status)
    table = Table(title="deliveries")
    for column in ("partner", "file", "status", "attempts", "transport", "last", "receipt / error"):
        table.add_column(column, overflow="fold")
    for r in rows:
        table.add_row(
            r["partner"], r["file"], r["status"], str(r["attempts"]), r["transport"],
            r["finished_at"] or r["started_at"], (r["receipt"] or r["error"] or "")[:120],
        )  # fmt: skip
    console.print(table)


def redeliver(
    file: Annotated[
        list[str] | None, typer.Argument(help="file names (default: every pending or failed file)")
    ] = None,
    partner: Annotated[str | None, typer.Option(help="only this partner")] = None,
    config: Config = None,
) -> None:
    """Re-send (补传) pending or failed files now; acknowledged files are never sent again."""
    from stages.deliver import DeliveryError
    from stages.deliver import deliver as run_delivery

    try:
        counts = run_delivery(load_settings(config), partner=partner, files=file or None, force=True)
    except DeliveryError as exc:
        console.print(f"[red]{exc}[/red]", highlight=False)
        raise typer.Exit(1) from exc
    console.print(json.dumps(counts))


def register(app: typer.Typer) -> None:
    for command in (verify, deliver, deliveries, redeliver):
        app.command()(command)
