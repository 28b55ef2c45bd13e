"""Landing: the raw bytes of one pull plus its manifest (core/landing.py), immutable once written.

A batch is assembled in a temporary folder and renamed into place only when whole, so a
crash never leaves half a batch; its id is source + window + content hash, so re-pulling
the same window lands nothing new. The watermark is committed after the rename.

A pull killed mid-way leaves its temporary folder of raw personal data behind: each pull removes
those of earlier pulls. A writer holds an flock on `.tmp-<id>.lock` (taken before the folder is
made) for its whole life; the kernel drops it when the process dies, so a folder whose lock can be
taken, or that has no lock file, belongs to no live pull, while a concurrent pull's folder is left
alone. Landed files and folders are private (0600 / 0700, or group-readable by configuration).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import shutil
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from core.landing import HeldOut, LandedFile, Manifest
from core.storage import Storage, sha256_file, utcnow

log = logging.getLogger(__name__)
ORPHAN_LOCK_SECONDS = 600


@dataclass
class Landed:
    """What a pull produced: the batch id and its manifest."""

    batch_id: str
    path: Path
    rows: int
    new: bool
    manifest: Manifest


class BatchWriter:
    """Collects the files of one batch in a temporary folder, then publishes them atomically."""

    def __init__(self, storage: Storage, source: str, window: str, transport: str) -> None:
        self.storage = storage
        self.source = source
        self.window = window
        self.transport = transport
        root = storage.private_dir(storage.var / "landing" / source)
        remove_stale(root)
        token = uuid.uuid4().hex
        self.lock_path = root / f".tmp-{token}.lock"
        self._lock = os.open(self.lock_path, os.O_CREAT | os.O_RDWR | os.O_NOFOLLOW, storage.file_mode)
        fcntl.flock(self._lock, fcntl.LOCK_EX)
        self.tmp = root / f".tmp-{token}"
        self.tmp.mkdir(mode=storage.dir_mode)
        os.chmod(self.tmp, storage.dir_mode)
        self.files: list[LandedFile] = []
        self.held_out: list[HeldOut] = []

    def __enter__(self) -> BatchWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)
        self.lock_path.unlink(missing_ok=True)
        os.close(self._lock)

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
        self.held_out.append(HeldOut(name, sha256_file(path), rows, reason, column))

    def publish(self, watermark: str | None, delta: bool = False) -> Landed:
        """Rename the batch into place (or drop it if this exact content already landed), then bookmark.

        `delta`: the batch holds only rows changed since the previous one (SQL incremental, a REST change
        feed after a cursor); the merge applies it on top of the source's last full batch.
        """
        parts = [f.name + f.sha256 for f in self.files] + [h.name + h.sha256 for h in self.held_out]
        content = hashlib.sha256("".join(parts).encode()).hexdigest()
        batch_id = f"{self.source}-{self.window}-{content[:12]}"
        rows = sum(f.rows for f in self.files)
        final = self.storage.landing(self.source, batch_id)
        manifest = Manifest(
            source=self.source,
            batch_id=batch_id,
            window=self.window,
            transport=self.transport,
            files=list(self.files),
            rows=rows,
            received_at=utcnow(),
            watermark=watermark,
            delta=delta,
            held_out=list(self.held_out),
        )
        new = not final.exists()
        if new:
            manifest.write(self.tmp)
            self.storage.seal(self.tmp)
            os.replace(self.tmp, final)
            log.info("landed %s: %d rows in %d files", batch_id, rows, len(self.files))
        else:
            log.info("batch %s already landed; nothing new", batch_id)
        self.storage.record_batch(batch_id, self.source, self.window, rows)
        if watermark is not None:
            self.storage.commit_watermark(self.source, watermark, batch_id)
        return Landed(batch_id, final, rows, new, manifest)


def remove_stale(root: Path) -> list[str]:
    """Remove the temporary folders (and lock files) of pulls that are no longer running; their names."""
    removed = []
    for entry in sorted(root.glob(".tmp-*")):
        if entry.name.endswith(".lock"):
            continue
        lock = entry.with_name(entry.name + ".lock")
        with _taken(lock) as free:
            if free:
                shutil.rmtree(entry, ignore_errors=True)
                lock.unlink(missing_ok=True)
                removed.append(entry.name)
    # a pull killed between taking its lock and making its folder; only old ones, since a pull starting
    # now has its lock file before its folder
    cutoff = time.time() - ORPHAN_LOCK_SECONDS
    for lock in sorted(root.glob(".tmp-*.lock")):
        if not lock.with_name(lock.name.removesuffix(".lock")).exists() and lock.lstat().st_mtime < cutoff:
            with _taken(lock) as free:
                if free:
                    lock.unlink(missing_ok=True)
    if removed:
        log.warning(
            "%s: removed %d temporary folder(s) left by killed pulls: %s", root, len(removed), removed
        )
    return removed


@contextlib.contextmanager
def _taken(lock: Path) -> Iterator[bool]:
    """Whether no live process holds `lock` (true too when there is no lock file at all)."""
    try:
        fd = os.open(lock, os.O_RDWR | os.O_NOFOLLOW)
    except FileNotFoundError:
        yield True
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)
