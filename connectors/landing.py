"""Landing: the raw bytes of one pull plus manifest.json, immutable once written.

A batch is assembled in a temporary folder and renamed into place only when whole, so a
crash never leaves half a batch; its id is source + window + content hash, so re-pulling
the same window lands nothing new. The watermark is committed after the rename.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hub.storage import Storage, sha256_file, utcnow, write_json_atomic

log = logging.getLogger(__name__)


@dataclass
class LandedFile:
    name: str
    sha256: str
    bytes: int
    rows: int


@dataclass
class Landed:
    """What a pull produced: the batch id and its manifest."""

    batch_id: str
    path: Path
    rows: int
    new: bool
    manifest: dict[str, Any] = field(default_factory=dict)


class BatchWriter:
    """Collects the files of one batch in a temporary folder, then publishes them atomically."""

    def __init__(self, storage: Storage, source: str, window: str, transport: str) -> None:
        self.storage = storage
        self.source = source
        self.window = window
        self.transport = transport
        self.tmp = storage.var / "landing" / source / f".tmp-{uuid.uuid4().hex}"
        self.tmp.mkdir(parents=True)
        self.files: list[LandedFile] = []
        self.held_out: list[dict[str, Any]] = []

    def __enter__(self) -> BatchWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)

    def path_for(self, name: str) -> Path:
        """Where a transport writes the next file itself (streamed downloads, parquet parts)."""
        return self.tmp / name

    def add_bytes(self, name: str, data: bytes, rows: int) -> None:
        self.path_for(name).write_bytes(data)
        self.added(name, rows)

    def added(self, name: str, rows: int) -> None:
        """Register a file already written at path_for(name)."""
        path = self.path_for(name)
        self.files.append(LandedFile(name, sha256_file(path), path.stat().st_size, rows))

    def hold_out(self, name: str, rows: int, reason: str, column: str) -> None:
        """Register rows written at path_for(name) that are not part of the data: staging quarantines them
        with `reason` (sent back to the department), and they never move the bookmark."""
        path = self.path_for(name)
        self.held_out.append(
            {"name": name, "sha256": sha256_file(path), "rows": rows, "reason": reason, "column": column}
        )

    def publish(self, watermark: str | None, delta: bool = False) -> Landed:
        """Rename the batch into place (or drop it if this exact content already landed), then bookmark.

        `delta`: the batch holds only rows changed since the previous one (SQL incremental, a REST change
        feed after a cursor); the merge applies it on top of the source's last full batch.
        """
        parts = [f.name + f.sha256 for f in self.files] + [h["name"] + h["sha256"] for h in self.held_out]
        content = hashlib.sha256("".join(parts).encode()).hexdigest()
        batch_id = f"{self.source}-{self.window}-{content[:12]}"
        rows = sum(f.rows for f in self.files)
        final = self.storage.landing(self.source, batch_id)
        manifest = {
            "source": self.source,
            "batch_id": batch_id,
            "window": self.window,
            "transport": self.transport,
            "files": [vars(f) for f in self.files],
            "rows": rows,
            "received_at": utcnow(),
            "watermark": watermark,
            "delta": delta,
        }
        if self.held_out:
            manifest["held_out"] = self.held_out
        new = not final.exists()
        if new:
            write_json_atomic(self.tmp / "manifest.json", manifest)
            os.replace(self.tmp, final)
            log.info("landed %s: %d rows in %d files", batch_id, rows, len(self.files))
        else:
            log.info("batch %s already landed; nothing new", batch_id)
        self.storage.record_batch(batch_id, self.source, self.window, rows)
        if watermark is not None:
            self.storage.commit_watermark(self.source, watermark, batch_id)
        return Landed(batch_id, final, rows, new, manifest)
