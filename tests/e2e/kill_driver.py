"""Run a cycle's stages in this process, optionally dying by SIGKILL at a named point; and hash its outcome.

Used by tests/e2e/test_kill_retry.py: `child(var, as_of, from_step, kill, ...)`, each time in a process of
its own forked from a fork server that has imported PRELOAD (a fresh interpreter would import them
again for every one of some seventy runs), runs the steps of STEPS from from_step to the end, calling the
stage functions as the DAG tasks do (same run id), with the pulled batch ids kept in VAR/../steps.json
(what XCom carries between pull and stage). `kill` is `-` (run to the end), `snapshots=DIR` (see
run_steps) or `what:target:n[:within]`, which replaces a function by one that SIGKILLs this process at its n-th call,
counting only calls made while `within` runs, when given:

- `call:module.attr:n` dies on entering the n-th call, `after:module.attr:n` right after it returned;
- `execute:-:n:module.attr` dies at the n-th SQLAlchemy `Connection.execute` inside `within`;
- `replace:-:n:module.attr` dies at the n-th `os.replace` inside `within`.

Nothing in production code knows about this: the kill points are monkeypatches of ordinary functions.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import io
import json
import os
import re
import shutil
import signal
import sys
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any

SOURCES = ("cdpf", "civil", "hrss", "police")
STEPS = (
    *(f"{kind}:{s}" for s in SOURCES for kind in ("pull", "validate")),
    "merge",
    "eligibility",
    "exchange",
    "audit",
    "deliver",
    "report",
)

# Fields whose values legitimately differ between two runs of the same data: wall-clock times of a write
# (ledger landed_at/verdict_at, watermark updated_at, landing manifest received_at, staged_at of a
# validation, the store's master/decisions_written_at, a partner manifest's generated_at and the signature
# over it) and run durations
# (the merge record's `seconds`). They say when, not what; every other field must be identical.
WALL_CLOCK_FIELDS = frozenset(
    {
        "landed_at",
        "verdict_at",
        "updated_at",
        "received_at",
        "staged_at",
        "master_written_at",
        "decisions_written_at",
        "generated_at",  # a partner manifest's time of writing
        "signature",  # the manifest's signature covers generated_at
        "seconds",
    }
)
# Per attempt, not per run: a stage record's count of what this attempt itself wrote. A merge retried
# after its first attempt committed writes nothing, so its `written` counts are zeros (the run's total,
# the store's run.written, accumulates over attempts and is compared); an eligibility retried after its
# decisions committed first undoes that attempt's versions (`undone`, zero on a first attempt), then
# writes the same ones again (its other counts are compared).
ATTEMPT_FIELDS = {"merge.json": frozenset({"written"}), "eligibility.json": frozenset({"undone"})}
# Empty lock files of the landing (connectors/landing.py): a pull killed after renaming its batch into
# place leaves its `.tmp-<id>.lock`; the next pulls remove it once it is old enough to belong to no
# starting pull. They hold no data (checked: they must be empty).
EMPTY_LOCKS = re.compile(r"landing/[^/]+/\.tmp-[0-9a-f]+\.lock")
# A wall-clock instant as the hub writes them (UTC, microseconds); a date alone is data, never matched
INSTANT = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}\+00:00")
# Absolute paths in records written by the run: the var directory's own path differs between runs
VAR_PATH = re.compile(r"/[^\s\"']*/var(?=/|$)")


def _resolve(dotted: str) -> tuple[Any, str]:
    """The owner (module or class) and attribute name of `package.module[.Class].attr`."""
    parts = dotted.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        try:
            owner: Any = importlib.import_module(".".join(parts[:cut]))
        except ModuleNotFoundError:
            continue
        for name in parts[cut:-1]:
            owner = getattr(owner, name)
        return owner, parts[-1]
    raise ValueError(f"cannot resolve {dotted}")


def _die() -> None:
    sys.stdout.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def install_kill(spec: str) -> None:
    """Patch the named function(s) so that this process is SIGKILLed at the point `spec` names."""
    what, target, nth, *rest = spec.split(":")
    n = int(nth)
    inside = [0]
    if rest:
        owner, name = _resolve(rest[0])
        original_within = getattr(owner, name)

        @functools.wraps(original_within)
        def within(*args: Any, **kwargs: Any) -> Any:
            inside[0] += 1
            try:
                return original_within(*args, **kwargs)
            finally:
                inside[0] -= 1

        setattr(owner, name, within)
    else:
        inside[0] = 1  # no scope: every call counts
    if what == "execute":
        import sqlalchemy as sa

        owner, name = sa.engine.Connection, "execute"
    elif what == "replace":
        owner, name = os, "replace"
    else:
        owner, name = _resolve(target)
    original: Callable[..., Any] = getattr(owner, name)
    calls = [0]

    @functools.wraps(original)
    def killer(*args: Any, **kwargs: Any) -> Any:
        if inside[0] > 0:
            calls[0] += 1
            if calls[0] == n and what != "after":
                _die()
        result = original(*args, **kwargs)
        if inside[0] > 0 and calls[0] == n and what == "after":
            _die()
        return result

    setattr(owner, name, killer)


def run_steps(var: Path, as_of: date, first: str, snapshots: Path | None = None) -> None:
    """Run STEPS from `first` on, as the ingestion and cycle DAGs' tasks call them; with `snapshots`, copy
    the var directory (and the side file) after each step to snapshots/<step index>."""
    from core.settings import load_settings
    from stages import ingest

    settings = load_settings(var_dir=var)
    run_id = f"cycle-{as_of}"
    side = var.parent / "steps.json"
    pulled: dict[str, str] = json.loads(side.read_text()) if side.exists() else {}
    for step in STEPS[STEPS.index(first) :]:
        kind, _, source = step.partition(":")
        if kind == "pull":
            pulled[source] = ingest.pull_stage(settings, source, as_of).batch_id
            side.write_text(json.dumps(pulled))
        elif kind == "validate":
            ingest.validate_stage(settings, source, pulled[source], as_of)
        else:
            getattr(importlib.import_module(f"stages.{kind}"), f"{kind}_stage")(settings, as_of, run_id)
        if snapshots is not None:
            shutil.copytree(var.parent, snapshots / str(STEPS.index(step)), symlinks=True)
    print("done")


# -- canonical outcome ----------------------------------------------------------------------------------


def _canonical(value: Any, skip: frozenset[str] = frozenset()) -> Any:
    """JSON content without wall-clock (and `skip`) fields, with any var directory's path written as {var}."""
    if isinstance(value, dict):
        return {
            k: _canonical(v, skip)
            for k, v in sorted(value.items())
            if k not in WALL_CLOCK_FIELDS and k not in skip
        }
    if isinstance(value, list):
        return [_canonical(v, skip) for v in value]
    if isinstance(value, str):
        return VAR_PATH.sub("{var}", value)
    return value


def _frame_digest(frame: Any) -> str:
    """SHA-256 of a table's rows sorted on every column (row order is not content)."""
    frame = frame.drop(columns=[c for c in frame.columns if c in WALL_CLOCK_FIELDS])
    frame = frame.reindex(sorted(frame.columns), axis=1).astype("string").fillna("<null>")
    frame = frame.sort_values(list(frame.columns)).reset_index(drop=True)
    buffer = io.StringIO()
    frame.to_csv(buffer, index=False)
    return hashlib.sha256(buffer.getvalue().encode()).hexdigest()


def outcome(var: Path) -> dict[str, str]:
    """A digest per part of what a run leaves behind: store tables, ledger, staged and landed batches,
    partner files, run records and the report's data; plus any leftover temporary file."""
    import pandas as pd
    import sqlalchemy as sa

    digests: dict[str, str] = {}
    for db in ("master.sqlite", "state/ledger.sqlite"):
        engine = sa.create_engine(f"sqlite:///{var / db}")
        inspector = sa.inspect(engine)
        # every table and view (the person view is the current master), whatever the schema's version
        for name in sorted({*inspector.get_table_names(), *inspector.get_view_names()} - {"alembic_version"}):
            table = sa.Table(name, sa.MetaData(), autoload_with=engine)
            with engine.connect() as conn:
                digests[f"{db}:{name}"] = _frame_digest(pd.read_sql(sa.select(table), conn))
        engine.dispose()
    for path in sorted(p for p in var.rglob("*") if p.is_file()):
        rel = path.relative_to(var).as_posix()
        if rel.startswith(("sandbox/", "airflow/")) or rel.endswith(
            (".sqlite", ".sqlite-wal", ".sqlite-shm")
        ):
            continue
        if rel.startswith("master/"):
            continue  # the store's Arrow cache: compared through what eligibility and exchange read from it
        if rel.startswith("gx/"):
            # GX's runtime context: a random store id per context and one result per validation attempt,
            # named by its time (a log of attempts); each batch's validation.json holds what is compared
            continue
        if EMPTY_LOCKS.fullmatch(rel) and path.stat().st_size == 0:
            continue
        if path.suffix == ".json":
            skip = ATTEMPT_FIELDS.get(path.name, frozenset())
            content = json.dumps(
                _canonical(json.loads(path.read_text(encoding="utf-8")), skip), sort_keys=True
            )
            digests[rel] = hashlib.sha256(content.encode()).hexdigest()
        elif path.suffix == ".parquet":
            digests[rel] = _frame_digest(pd.read_parquet(path))
        elif path.suffix == ".ok":  # the marker lists the files with their SHA-256: the manifest's
            # changes with its generated_at; the files themselves are compared
            text = re.sub(r"\b[0-9a-f]{64}\b", "{sha256}", path.read_text(encoding="utf-8"))
            digests[rel] = hashlib.sha256(text.encode()).hexdigest()
        elif path.suffix == ".html":  # a validation page shows its staged_at: a wall-clock instant
            text = INSTANT.sub("{instant}", path.read_text(encoding="utf-8"))
            digests[rel] = hashlib.sha256(text.encode()).hexdigest()
        else:
            digests[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
    return digests


# -- the child process ----------------------------------------------------------------------------------

# What the runs import, loaded once in the fork server; only imported, never run there: each child
# starts as a fresh process that has imported them would (no module reads the environment on import).
PRELOAD = [
    "kill_driver",
    "core.settings",
    *(
        f"stages.{kind}"
        for kind in ("ingest", "merge", "eligibility", "exchange", "audit", "deliver", "report")
    ),
    "great_expectations",  # imported by every validation (transforms.validate), seconds on its own
]


def child(var: str, as_of: str, first: str, kill: str, env: dict[str, str], cwd: str, log: str) -> None:
    """One run in a forked child: `env` is its whole environment, stdout and stderr go to log.stdout and
    log.stderr. An exception exits with status 1 and its traceback on stderr, a kill with -SIGKILL."""
    os.environ.clear()
    os.environ.update(env)
    os.chdir(cwd)
    for fd, suffix in ((1, "stdout"), (2, "stderr")):
        out = os.open(f"{log}.{suffix}", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.dup2(out, fd)
        os.close(out)
    if kill.startswith("snapshots="):
        run_steps(Path(var), date.fromisoformat(as_of), first, Path(kill.removeprefix("snapshots=")))
        return
    if kill != "-":
        install_kill(kill)
    run_steps(Path(var), date.fromisoformat(as_of), first)
