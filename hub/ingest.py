"""Ingestion stages the per-source DAGs call: pull (land raw bytes) and stage (standardise + validate)."""

from __future__ import annotations

import logging
from datetime import date
from typing import Any

from hub.settings import FolderSource, RestSource, Settings, SftpSource, SqlSource
from hub.storage import Storage

log = logging.getLogger(__name__)


def pull_stage(settings: Settings, source: str, as_of: date) -> dict[str, Any]:
    """Pull one batch from the source's transport and land it; returns the batch id and row count.

    A refused pull is recorded (hub.staleness) before the error propagates, so the cycle and the
    report know the source is stale; a successful one clears that record.
    """
    from hub.staleness import clear_refusal, record_refusal

    storage = Storage(settings)
    try:
        result = _pull(settings, storage, source, as_of)
    except Exception as exc:
        record_refusal(storage, source, as_of, exc)
        raise
    clear_refusal(storage, source)
    return result


def _pull(settings: Settings, storage: Storage, source: str, as_of: date) -> dict[str, Any]:
    from connectors.folder import pull_folder
    from connectors.rest import pull_rest
    from connectors.sftp import pull_sftp
    from connectors.sql import pull_sql
    from transforms.contracts import load_contract

    config = settings.sources[source]
    contract = load_contract(settings.path(config.contract))
    native = {c.name: c.native for c in contract.columns}
    if isinstance(config, SqlSource):
        landed = pull_sql(
            storage, source, config, as_of, order_by=[native["updated_at"], native["id_number"]]
        )
    elif isinstance(config, FolderSource):
        landed = pull_folder(storage, source, config, as_of)
    elif isinstance(config, SftpSource):
        landed = pull_sftp(storage, source, config, as_of)
    elif isinstance(config, RestSource):
        required = [c.native for c in contract.columns if c.required]
        landed = pull_rest(storage, source, config, as_of, required, native.get("updated_at"))
    else:  # pragma: no cover - the settings model admits no other transport
        raise TypeError(f"unknown transport for {source}")
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
