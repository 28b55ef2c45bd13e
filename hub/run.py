"""`hub run`: one whole exchange cycle through the real Airflow DAGs, in-process with dag.test()."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import date, datetime, time
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from core.settings import Settings
from core.storage import Storage
from hub.airflow_env import DAGS_FOLDER, configure, ensure_metadata_db

log = logging.getLogger(__name__)
TZ = ZoneInfo("Asia/Shanghai")
SERVICES = "lianban.services"  # entry point group: context managers started around a cycle


EXIT_STALE = 3  # `hub run`: the cycle ran, but on stale data for at least one source


class CycleFailed(RuntimeError):
    """The cycle DAG did not succeed (or the DAGs could not be loaded): nothing was delivered."""


@dataclass
class CycleOutcome:
    as_of: date
    run_id: str
    dag_states: dict[str, str] = field(default_factory=dict)
    outputs: dict[str, Any] = field(default_factory=dict)
    stale: list[dict[str, Any]] = field(default_factory=list)  # core.staleness entries


@contextmanager
def side_services(settings: Settings) -> Iterator[None]:
    """Run the services installed side packages start for a cycle (the sandbox's police simulator).

    hub does not import the sandbox (docs/architecture.md): each service is a `lianban.services` entry
    point of pyproject.toml, a context manager factory given the settings, which starts only when the
    configuration needs it.
    """
    with ExitStack() as stack:
        for entry in sorted(entry_points(group=SERVICES), key=lambda e: e.name):
            stack.enter_context(entry.load()(settings))
        yield


def _hub_info_through() -> None:
    """`hub run -v`: Airflow's console handler filters at Airflow's level (WARNING unless -vv); lower it
    so the records of the hub's loggers, set to INFO by the command line, are shown too. Airflow's own
    loggers stay at their level."""
    if logging.getLogger("hub").getEffectiveLevel() <= logging.INFO:
        for handler in logging.getLogger().handlers:
            handler.setLevel(min(handler.level, logging.INFO))


def run_cycle(
    settings: Settings, as_of: date, verbose: bool = False, airflow_home: Path | None = None
) -> CycleOutcome:
    """Run every ingestion DAG, then the cycle DAG, for the logical date `as_of`.

    A failed ingestion DAG does not stop the others or the cycle: the cycle runs on that source's
    last accepted batch and `outcome.stale` says which source is stale and why. Only a failed
    cycle raises CycleFailed.

    The logical date is midnight of `as_of` in Asia/Shanghai, so the tasks' business date
    (core.business_date) is `as_of` exactly as under the scheduler.
    """
    home = configure(settings, verbose, airflow_home)
    ensure_metadata_db(home)
    from airflow.dag_processing.dagbag import DagBag

    _hub_info_through()
    bag = DagBag(str(DAGS_FOLDER))
    if bag.import_errors:
        raise CycleFailed(f"DAG import errors: {bag.import_errors}")
    logical = datetime.combine(as_of, time(), tzinfo=TZ)
    outcome = CycleOutcome(as_of, f"cycle-{as_of}")
    order = sorted(d for d in bag.dag_ids if d.startswith("ingest_")) + ["cycle"]
    with side_services(settings):
        for dag_id in order:
            log.info("running %s for %s", dag_id, as_of)
            run = bag.get_dag(dag_id).test(logical_date=logical)
            state = str(getattr(run.state, "value", run.state))
            outcome.dag_states[dag_id] = state
            # a task that failed under an all_done successor (the report after a failed delivery)
            # leaves the run "success": the run still fails
            failed = [ti.task_id for ti in run.get_task_instances() if str(ti.state) != "success"]
            if state != "success" or failed:
                if dag_id == "cycle":
                    raise CycleFailed(f"DAG {dag_id} ended {state}; tasks not successful: {failed}")
                log.warning(
                    "%s ended %s (tasks %s); the cycle runs without its new data", dag_id, state, failed
                )
    storage = Storage(settings)
    from core.staleness import stale_sources

    outcome.stale = stale_sources(storage, sorted(settings.sources))
    outcome.outputs = {
        "master": settings.expand(settings.master_url),
        "outbox": str(storage.var / "outbox"),
        "report": str(storage.report_dir(outcome.run_id) / "report.html"),
    }
    return outcome
