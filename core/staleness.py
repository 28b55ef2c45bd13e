"""Refused pulls: which department is stale, since when and why, so the cycle can run without it.

When a source's pull is refused (HTTP 401, an HTML page with status 200, a truncated page, a dead
host, an unreadable drop), the pull stage records the refusal under var/state/refused/<source>.json
and fails. The cycle still runs on the other sources' new data and on the refused source's last
accepted batch (the merge always reads each source's last accepted state); the report and `hub run`
say which source is stale, since which batch and why. A later successful pull clears the record.
"""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path
from typing import Any

from core.storage import Storage, utcnow, write_json_atomic


def _path(storage: Storage, source: str) -> Path:
    return storage.var / "state" / "refused" / f"{source}.json"


def record_refusal(storage: Storage, source: str, as_of: date, error: BaseException) -> None:
    """Remember a refused pull (the error text names source, transport, target and cause)."""
    last = storage.last_accepted(source)
    write_json_atomic(
        _path(storage, source),
        {
            "source": source,
            "as_of": as_of.isoformat(),
            "refused_at": utcnow(),
            "error": f"{type(error).__name__}: {error}",
            "last_good_batch": last["batch_id"] if last else None,
            "last_good_window": last["window"] if last else None,
        },
    )


def clear_refusal(storage: Storage, source: str) -> None:
    _path(storage, source).unlink(missing_ok=True)


def refusal(storage: Storage, source: str) -> dict[str, Any] | None:
    path = _path(storage, source)
    if not path.exists():
        return None
    data = json.loads(path.read_text(encoding="utf-8"))
    return data if isinstance(data, dict) else None


def stale_sources(storage: Storage, sources: list[str]) -> list[dict[str, Any]]:
    """One entry per source whose latest pull was refused: since (last good batch), refused on, why."""
    return [r for r in (refusal(storage, s) for s in sources) if r is not None]


def stale_warning(entry: dict[str, Any]) -> str:
    """The report's line for a stale source, in the same bilingual style as the held-batch warning."""
    kept = (
        f"主档沿用上一批合格数据 the master keeps batch {entry['last_good_batch']} "
        f"(window {entry['last_good_window']})"
        if entry.get("last_good_batch")
        else "主档没有该来源的合格数据 no accepted batch to fall back on"
    )
    return (
        f"{entry['source']}: 数据过期 STALE since {entry.get('last_good_window') or 'never'}: "
        f"{entry['as_of']} 拉取被拒 pull refused ({entry['error']}). {kept}; "
        f"其他来源照常处理 the other sources ran as usual."
    )
