"""The landing manifest: what one landed batch holds, as a typed object with one writer and one reader.

connectors/landing.py writes it (`Manifest.write`) into the batch folder before the folder is renamed
into place; every reader (staging, the merge's delta chains, the SFTP connector's re-sent files) goes
through `Manifest.read`, which names the file and what was expected when it is not a manifest.
The JSON on disk is unchanged from before it was typed (docs/architecture.md, Batches).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

from core.storage import write_json_atomic

MANIFEST_NAME = "manifest.json"


class ManifestError(ValueError):
    """A landing manifest that cannot be read as one (names the file and the field)."""


@dataclass(frozen=True)
class LandedFile:
    """One file of the batch as received: its SHA-256, size and rows."""

    name: str
    sha256: str
    bytes: int
    rows: int


@dataclass(frozen=True)
class HeldOut:
    """Rows the connector wrote beside the data but kept out of it (an untrusted watermark value):
    staging quarantines them with `reason` on `column`; they never move the bookmark."""

    name: str
    sha256: str
    rows: int
    reason: str
    column: str


@dataclass(frozen=True)
class Manifest:
    source: str
    batch_id: str
    window: str
    transport: str
    files: list[LandedFile]
    rows: int
    received_at: str
    watermark: str | None = None
    delta: bool = False  # only rows changed since the previous batch (SQL incremental, a REST change feed)
    held_out: list[HeldOut] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        doc = dataclasses.asdict(self)
        if not self.held_out:
            del doc["held_out"]
        return doc

    def write(self, folder: Path) -> Path:
        """The one writer: manifest.json in `folder` (published atomically, private)."""
        path = folder / MANIFEST_NAME
        write_json_atomic(path, self.as_json())
        return path

    @classmethod
    def read(cls, folder: Path) -> Self:
        """The one reader: the manifest of the batch in `folder`."""
        path = folder / MANIFEST_NAME
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise ManifestError(f"{path}: line {exc.lineno}: not valid JSON: {exc.msg}") from exc
        if not isinstance(doc, dict):
            raise ManifestError(f"{path}: expected an object, got {type(doc).__name__}")
        try:
            return cls(
                source=str(doc["source"]),
                batch_id=str(doc["batch_id"]),
                window=str(doc.get("window", "")),
                transport=str(doc.get("transport", "")),
                files=[LandedFile(**f) for f in doc["files"]],
                rows=int(doc.get("rows") or 0),
                received_at=str(doc.get("received_at", "")),
                watermark=doc.get("watermark"),
                delta=bool(doc.get("delta", False)),
                held_out=[HeldOut(**h) for h in doc.get("held_out") or []],
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ManifestError(
                f"{path}: field {exc}: expected source, batch_id and files "
                "(each with name, sha256, bytes and rows)"
            ) from exc


def is_delta(folder: Path) -> bool:
    """Whether the batch in `folder` holds only changed rows; a batch without a manifest counts as full."""
    return (folder / MANIFEST_NAME).exists() and Manifest.read(folder).delta
