"""Hand-built landing directories for stage tests: raw files plus the manifest a connector would write."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path


def write_landing(
    batch: Path, source: str, transport: str, files: dict[str, bytes], rows: dict[str, int]
) -> Path:
    """Write `files` into `batch` with a manifest listing their rows and SHA-256."""
    batch.mkdir(parents=True, exist_ok=True)
    listed = []
    for name, data in files.items():
        (batch / name).write_bytes(data)
        listed.append(
            {"name": name, "sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data), "rows": rows[name]}
        )
    manifest = {
        "source": source,
        "batch_id": batch.name,
        "window": "20250630",
        "transport": transport,
        "files": listed,
        "rows": sum(rows.values()),
        "received_at": "2025-06-30T00:00:00+00:00",
        "watermark": None,
    }
    (batch / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    return batch
