"""Progress of long steps (stage, rows, elapsed): one line per finished step on the `hub.progress` logger.

Stages and the sandbox generator report here; the command line shows these lines even when quiet
(`show_progress`), so `hub run` and `hub sandbox init` say what they are doing without Airflow's logs.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

log = logging.getLogger("hub.progress")


def line(stage: str, rows: int | None, seconds: float) -> str:
    counted = f"{rows:>12,} rows" if rows is not None else " " * 17
    return f"{stage:<28} {counted} {seconds:7.1f} s"


@contextmanager
def step(stage: str, rows: int | None = None) -> Iterator[dict[str, Any]]:
    """Time a step; set `["rows"]` on the yielded dict to report its row count. A failed step is not
    reported (its error is)."""
    started = time.perf_counter()
    counted: dict[str, Any] = {"rows": rows}
    yield counted
    log.info(line(stage, counted["rows"], time.perf_counter() - started))


def show_progress() -> None:
    """Print the progress lines on stderr, whatever the logging level of the rest (once per process)."""
    if any(getattr(h, "_lianban_progress", False) for h in log.handlers):
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    handler._lianban_progress = True  # type: ignore[attr-defined]
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False
