"""What two runs of the same day must share, as hashes: the store's tables and the partner files
(test_partitions, test_celery compare a partitioned run with a single one)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pandas as pd
import sqlalchemy as sa


def store_digest(url: str) -> dict[str, str]:
    """SHA-256 per store table over its rows in a canonical order, without the wall-clock columns."""
    engine = sa.create_engine(url)
    digests = {}
    with engine.connect() as conn:
        for table in ("person_version", "conflict", "id_change", "decision_version", "run"):
            frame = pd.read_sql_table(table, conn)
            frame = frame[[c for c in frame.columns if not c.endswith("_at")]]
            frame = frame.astype("string").sort_values(list(frame.columns)).reset_index(drop=True)
            digests[table] = hashlib.sha256(frame.to_csv(index=False).encode()).hexdigest()
    engine.dispose()
    return digests


def partner_files(var: Path, run_id: str) -> dict[str, str]:
    """Each partner file of a run (outbox path) and the SHA-256 of its bytes."""
    found = {}
    for manifest in sorted((var / "outbox").glob("*/*/*.manifest.json")):
        if json.loads(manifest.read_text(encoding="utf-8")).get("run_id") != run_id:
            continue
        data = manifest.with_name(manifest.name.removesuffix(".manifest.json"))
        found[str(data.relative_to(var))] = hashlib.sha256(data.read_bytes()).hexdigest()
    return found


def decisions_digest(var: Path, run_id: str) -> str:
    """The SHA-256 of a run's decisions, as its eligibility record states it."""
    return str(json.loads((var / "runs" / run_id / "eligibility.json").read_text())["decisions_sha256"])
