"""Ingestion stages the per-source DAGs call: pull (land raw bytes) and stage (standardise + validate)."""

from __future__ import annotations

import logging
from datetime import date, datetime, timedelta
from typing import Any

from core.settings import FolderSource, Settings, SftpSource
from core.storage import Storage

log = logging.getLogger(__name__)


def pull_stage(settings: Settings, source: str, as_of: date) -> dict[str, Any]:
    """Pull one batch from the source's transport and land it; returns the batch id and row count.

    A refused pull is recorded (core.staleness) before the error propagates, so the cycle and the
    report know the source is stale; a successful one clears that record.
    """
    from core.staleness import clear_refusal, record_refusal

    storage = Storage(settings)
    try:
        result = _pull(settings, storage, source, as_of)
    except Exception as exc:
        record_refusal(storage, source, as_of, exc)
        raise
    clear_refusal(storage, source)
    return result


def wait_stage(settings: Settings, source: str, as_of: date, started: datetime, now: datetime) -> bool:
    """One look at a drop source's folder for the ingestion DAG's wait: True once a file is ready.

    A late file only waits (one log line per look); at the configured deadline, counted from the
    wait's first look, the wait fails with one error naming source, transport, folder and cause, and
    the refusal is recorded so the cycle runs on the source's last accepted batch (core.staleness).
    """
    from connectors import drop_ready
    from connectors.errors import ConnectorError
    from core.business_date import TZ
    from core.staleness import record_refusal

    config = settings.sources[source]
    if not isinstance(config, FolderSource | SftpSource) or config.wait is None:
        raise ValueError(f"{source}: no `wait:` configured for this drop source")
    wait = config.wait
    target, ready = drop_ready(Storage(settings), source, config)
    waited = now - started
    if ready:
        log.info("%s: %d file(s) ready in %s after %.0f s", source, ready, target, waited.total_seconds())
        return True
    deadline = timedelta(minutes=wait.deadline_minutes)
    if waited >= deadline:
        error = ConnectorError(
            source,
            config.transport,
            target,
            f"no file matching {config.pattern} with its {config.marker} marker arrived by the deadline "
            f"({wait.deadline_minutes:g} min after the wait began at {started.astimezone(TZ):%Y-%m-%d %H:%M:%S} "
            "Asia/Shanghai)",
        )
        record_refusal(Storage(settings), source, as_of, error)
        raise error
    log.info(
        "%s: no ready file in %s yet; waited %.0f s of %.0f, next look in %g s",
        source,
        target,
        waited.total_seconds(),
        deadline.total_seconds(),
        wait.poke_seconds,
    )
    return False


def _pull(settings: Settings, storage: Storage, source: str, as_of: date) -> dict[str, Any]:
    from connectors import puller
    from core.contracts import load_contract

    config = settings.sources[source]
    contract = load_contract(settings.path(config.contract))
    landed = puller(config.transport)(storage, source, config, as_of, contract)
    return {"source": source, "batch_id": landed.batch_id, "rows": landed.rows, "new": landed.new}


def validate_stage(settings: Settings, source: str, batch_id: str, as_of: date) -> dict[str, Any]:
    """Standardise and validate a landed batch; the verdict goes to the ledger."""
    from transforms.validate import stage_batch

    result = stage_batch(settings, source, batch_id, as_of)
    return {
        "source": source,
        "batch_id": batch_id,
        "status": result.status,
        "accepted": result.accepted,
        "quarantined": result.quarantined,
    }
