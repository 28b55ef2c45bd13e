"""What every `hub` command module shares: the --config option, the console, dates, logging, side commands.

The sandbox and the benchmarks are not part of the runtime path (docs/architecture.md): hub imports
neither. Each registers its commands through the `lianban.cli` entry point group of pyproject.toml
(`register(app)`), which an installation of the project (`pip install -e .`, the wheel) records; the
packages' own dependencies are the `sandbox` extra, so `hub sandbox init` says which extra is missing.
"""

from __future__ import annotations

import logging
from datetime import date, datetime
from importlib.metadata import entry_points
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

SIDE_COMMANDS = "lianban.cli"  # the entry point group of the side packages' `register(app)`

console = Console()

Config = Annotated[
    Path | None, typer.Option(help="config YAML (default: LIANBAN_CONFIG or config/sandbox.yaml)")
]


def parse_date(text: str | None) -> date | None:
    if text is None:
        return None
    try:
        return datetime.strptime(text, "%Y-%m-%d").date()
    except ValueError as exc:
        raise typer.BadParameter(f"expected a date as YYYY-MM-DD, got {text!r}") from exc


# the project's packages, whose INFO lines -v shows (Airflow's and the libraries' stay at WARNING)
PACKAGES = ("hub", "core", "store", "stages", "reports", "sandbox", "bench", "connectors", "transforms")


def set_logging(verbose: bool) -> None:
    """Warnings only, or the hub's own INFO lines with -v; the progress lines (stage, rows, seconds) always."""
    from hub.progress import show_progress

    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    for name in PACKAGES:
        logging.getLogger(name).setLevel(logging.INFO if verbose else logging.WARNING)
    show_progress()


def side_commands(app: typer.Typer) -> None:
    """Add the commands of every installed side package (sandbox, bench) to `app`."""
    for entry in sorted(entry_points(group=SIDE_COMMANDS), key=lambda e: e.name):
        entry.load()(app)
