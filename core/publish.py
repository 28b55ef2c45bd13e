"""Publishing a data file and its signed manifest as one unit under outbox/, never replacing one.

Order: each file written under a temporary name, fsynced and renamed (core.storage.publishing): the
data file, then the manifest, then the marker `<name>.ok` (holding both SHA-256s) last. A reader
that trusts the marker therefore never sees a mismatched pair, and a run killed before the marker leaves nothing published: the next
run overwrites those unmarked leftovers. Once a marker exists the file is published and is never
replaced: different bytes for the same business date go out as a new version (`<stem>_v2<ext>`)
whose manifest names the file it supersedes. Files are 0600 and folders 0700 (personal data).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from core.signing import SigningKey, sign_manifest
from core.storage import PRIVATE_DIR_MODE, Storage, publish_bytes, publishing

log = logging.getLogger(__name__)

MARKER = ".ok"
MANIFEST = ".manifest.json"


@dataclass(frozen=True)
class Published:
    """One published unit: the data file, its manifest and marker, and what the manifest says."""

    path: Path
    manifest: Path
    marker: Path
    rows: int
    sha256: str
    version: int
    supersedes: str | None
    reused: bool  # the same bytes were already published: nothing was written


def private_dir(path: Path) -> Path:
    """Create a folder (and its parents under it) 0700, whatever the umask."""
    path.mkdir(mode=PRIVATE_DIR_MODE, parents=True, exist_ok=True)
    os.chmod(path, PRIVATE_DIR_MODE)
    return path


def marker_text(name: str, sha256: str, manifest_sha256: str) -> bytes:
    """The marker's content: the pair it vouches for, in sha256sum's format."""
    return f"{sha256}  {name}\n{manifest_sha256}  {name}{MANIFEST}\n".encode("ascii")


def versioned_name(name: str, version: int) -> str:
    """`x_20260301.csv` for version 1, `x_20260301_v2.csv` for the corrections that follow."""
    if version == 1:
        return name
    stem, dot, ext = name.rpartition(".")
    return f"{stem}_v{version}.{ext}" if dot else f"{name}_v{version}"


def published_versions(folder: Path, name: str) -> list[tuple[int, Path]]:
    """The published (marked) versions of a file name in a folder, oldest first."""
    stem, dot, ext = name.rpartition(".")
    pattern = re.compile(
        re.escape(stem if dot else name) + r"(?:_v(\d+))?" + (re.escape("." + ext) if dot else "")
    )
    found = []
    if folder.is_dir():
        for marker in folder.glob(f"*{MARKER}"):
            match = pattern.fullmatch(marker.name.removesuffix(MARKER))
            if match:
                found.append((int(match.group(1) or 1), marker.with_name(marker.name.removesuffix(MARKER))))
    return sorted(found)


def publish_unit(
    folder: Path, name: str, payload: bytes, manifest: dict[str, Any], key: SigningKey
) -> Published:
    """Publish `payload` as `name` (or its next version) with its signed manifest and marker.

    Same bytes as the newest published version: nothing is written, that version is returned.
    """
    private_dir(folder)
    digest = hashlib.sha256(payload).hexdigest()
    versions = published_versions(folder, name)
    supersedes: str | None = None
    version = 1
    if versions:
        last_version, last = versions[-1]
        last_manifest = json.loads(last.with_name(last.name + MANIFEST).read_text(encoding="utf-8"))
        if last_manifest.get("sha256") == digest:
            return Published(
                last,
                last.with_name(last.name + MANIFEST),
                last.with_name(last.name + MARKER),
                int(last_manifest["rows"]),
                digest,
                last_version,
                last_manifest.get("supersedes"),
                reused=True,
            )
        version, supersedes = last_version + 1, last.name
    target = folder / versioned_name(name, version)
    for leftover in folder.glob(f".{target.name}*.tmp-*"):  # from a run killed before its renames
        leftover.unlink()
    body = {
        **manifest,
        "file": target.name,
        "file_version": version,
        "supersedes": supersedes,
        "bytes": len(payload),
        "sha256": digest,
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    signed = sign_manifest(body, key)
    manifest_bytes = (json.dumps(signed, ensure_ascii=False, indent=2) + "\n").encode("utf-8")
    manifest_path = target.with_name(target.name + MANIFEST)
    marker_path = target.with_name(target.name + MARKER)
    marker = marker_text(target.name, digest, hashlib.sha256(manifest_bytes).hexdigest())
    # nested so that the renames run data, manifest, marker: the marker appears only after the pair
    with publishing(marker_path) as tmp_marker:
        with publishing(manifest_path) as tmp_manifest:
            with publishing(target) as tmp_data:
                tmp_data.write_bytes(payload)
            tmp_manifest.write_bytes(manifest_bytes)
        tmp_marker.write_bytes(marker)
    if supersedes:
        log.warning(
            "%s: corrected re-run published as version %d, superseding %s", target, version, supersedes
        )
    return Published(
        target, manifest_path, marker_path, int(manifest["rows"]), digest, version, supersedes, False
    )


def state_dir(storage: Storage, contract: str) -> Path:
    """Per-contract state: the full table behind each published file, and the one the partner acknowledged."""
    return storage.var / "state" / "exchange" / contract


def acknowledge(storage: Storage, contract: str, file_name: str) -> None:
    """Record that the partner acknowledged `file_name`: the next delta is computed against its state."""
    publish_bytes(private_dir(state_dir(storage, contract)) / "ACKED", file_name.encode("utf-8"))
