"""Ingestion stages the per-source DAGs call: pull (land raw bytes) and stage (standardise + validate)."""

from __future__ import annotations

import logging
from datetime import date
from typing import Any

from core.settings import Settings
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
