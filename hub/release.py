"""`hub batch release`: accept a held batch, whole or in part, as an explicit decision in the ledger.

A release is recorded in the ledger's decisions table (who, when, why the batch was held, rows each
way) and staging honours it whenever the batch is staged again, so a same-day re-run does not hold it
again. A batch held because it cannot be read has no rows to merge: a plain release is refused; when
only some lines carry bad bytes, `--partial` accepts the readable rows and quarantines the others
(they go back to the department with the next exchange).
"""

from __future__ import annotations

import json
from datetime import date
from typing import Any

from core.settings import Settings
from core.storage import Storage, decision_note

PARTIAL_ERRORS = ("LandingDecodeError",)  # unreadable for bad bytes in some lines: the rest can be read


def release_batch(settings: Settings, ref: str, who: str, partial: bool = False) -> dict[str, Any]:
    """Accept the held batch `ref` (its id or a unique prefix); returns its ledger row after the decision.

    Raises KeyError (unknown batch) or ValueError (not held, ambiguous prefix, or cannot be accepted).
    """
    from stages.ingest import stage_batch

    storage = Storage(settings)
    batch_id = storage.resolve_batch(ref)
    held = storage.batch(batch_id)
    if held is None:  # pragma: no cover - resolve_batch found it
        raise KeyError(f"no batch {batch_id} in the ledger")
    if held["status"] != "held":
        raise ValueError(f"batch {batch_id} is {held['status']}, not held")
    source = str(held["source"])
    unreadable = storage.unreadable_reason(source, batch_id)
    if not partial:
        try:
            return storage.release(batch_id, who)
        except ValueError as exc:
            if unreadable in PARTIAL_ERRORS:
                raise ValueError(
                    f"{exc}; to accept its readable rows and return the bad lines to {source}, "
                    f"use: hub batch release {batch_id} --by {who} --partial"
                ) from exc
            raise ValueError(f"{exc}; ask {source} to send the file again") from exc
    if unreadable is not None and unreadable not in PARTIAL_ERRORS:
        raise ValueError(
            f"batch {batch_id} cannot be accepted in part: it cannot be read at all ({unreadable}: "
            f"{held['note']}); ask {source} to send the file again"
        )
    decision = storage.record_decision(held, "partial", who)
    if unreadable is None:  # held by a gate: its good rows are staged already, its bad ones quarantined
        storage.set_verdict(
            batch_id,
            "accepted",
            held["accepted_rows"] or 0,
            held["quarantined_rows"] or 0,
            decision_note(decision),
        )
    else:
        summary = json.loads(
            (storage.staged(source, batch_id) / "validation.json").read_text(encoding="utf-8")
        )
        result = stage_batch(settings, source, batch_id, date.fromisoformat(str(summary["as_of"])))
        if result.status != "accepted":
            latest = storage.decision(batch_id)
            if latest is not None:
                storage.withdraw_decision(int(latest["id"]))
            raise ValueError(f"batch {batch_id} cannot be accepted in part: {result.note}")
    return storage.batch(batch_id) or held
