"""`hub sandbox ...`: the embedded default province, registered through the `lianban.cli` entry point.

hub never imports this package (docs/architecture.md); hub.cli_common.side_commands calls `register`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from core.settings import load_settings
from hub.cli_common import Config, console, parse_date, set_logging

sandbox_app = typer.Typer(help="The embedded default: a synthetic province.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(sandbox_app, name="sandbox")


def _reset_hub_state(var_dir: Path) -> None:
    """A new province is a new world: drop the ledger, landings and outputs of the previous one."""
    import shutil

    for name in ("landing", "staged", "state", "runs", "outbox", "reports"):
        shutil.rmtree(var_dir / name, ignore_errors=True)
    for master in var_dir.glob("master.sqlite*"):
        master.unlink()


@sandbox_app.command("init")
def sandbox_init(
    persons: Annotated[int, typer.Option(min=10, help="number of certificate holders")] = 20_000,
    seed: Annotated[int, typer.Option(help="random seed; the same seed gives the same province")] = 20261101,
    as_of: Annotated[str | None, typer.Option("--as-of", help="the sandbox's run date, YYYY-MM-DD")] = None,
    force: Annotated[
        bool, typer.Option("--force", help="delete the existing master file and hub state of var/")
    ] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
    config: Config = None,
) -> None:
    """Generate a synthetic province with defects and ground truth under var/sandbox."""
    from sandbox.generator import init_sandbox

    settings = load_settings(config)
    day = parse_date(as_of)
    masters = sorted(settings.var_dir.glob("master.sqlite"))
    if masters and not force:
        console.print(
            f"[red]{masters[0]} exists[/red]: a new province replaces it and every batch, run, report and "
            "outbox file under that var/. Run `hub sandbox init --force` to delete them, or set LIANBAN_VAR "
            "to another directory.",
            highlight=False,
        )
        raise typer.Exit(1)
    set_logging(verbose)
    _reset_hub_state(settings.var_dir)
    console.print(f"generating a sandbox province of {persons:,} persons under {settings.var_dir}")
    if day is None:
        info = init_sandbox(settings, persons=persons, seed=seed)
    else:
        info = init_sandbox(settings, persons=persons, seed=seed, as_of=day)
    console.print(
        f"[green]sandbox ready[/green] at {info.root} ({persons:,} persons, seed {seed}, as of {info.as_of})"
    )
