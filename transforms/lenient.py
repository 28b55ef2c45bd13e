"""Reading a batch held for bad bytes, once an operator accepts it in part (`hub batch release --partial`).

Staging decodes strictly and holds a file with one invalid byte as unreadable. Accepting it in part
reads a working copy in which each undecodable byte sequence is replaced by U+FFFD, through the same
reader as any batch, and flags every record that touches a replaced byte: those rows are quarantined
(ENCODING_INVALID) and returned to the department, the others go on like any row. The landed bytes
are never changed.
"""

from __future__ import annotations

import codecs
import hashlib
import json
import shutil
import threading
import uuid
from pathlib import Path

import numpy as np
import pandas as pd

from core.contracts import SourceContract
from core.storage import sha256_file
from transforms.standardise import LandingCorrupt, read_landed

_ERRORS = "lianban-mark-undecodable"
_offsets = threading.local()


def _mark(exc: UnicodeError) -> tuple[str, int]:
    if not isinstance(exc, UnicodeDecodeError):  # pragma: no cover - registered for decoding only
        raise exc
    _offsets.found.append(exc.start)
    return "\ufffd", exc.end


codecs.register_error(_ERRORS, _mark)


def _decode_marking(data: bytes, encoding: str) -> tuple[str, np.ndarray]:
    """The text with undecodable sequences replaced, and the 1-based physical line of each of them."""
    _offsets.found = []
    try:
        text = data.decode(encoding, errors=_ERRORS)
        offsets = np.asarray(_offsets.found, dtype=np.int64)
    finally:
        _offsets.found = []
    newlines = np.flatnonzero(np.frombuffer(data, dtype=np.uint8) == ord("\n"))
    return text, np.unique(np.searchsorted(newlines, offsets, side="left") + 1)


def _rows_touching(starts: np.ndarray, bad_lines: np.ndarray) -> np.ndarray:
    """Positions of the records (by first physical line, ascending) whose lines contain a bad line."""
    hit = np.searchsorted(starts, bad_lines, side="right") - 1
    return np.unique(hit[hit >= 0])


def read_landed_lenient(
    batch_dir: Path, contract: SourceContract, work: Path
) -> tuple[pd.DataFrame, np.ndarray]:
    """The batch's rows as read_landed gives them, and a mask of rows that held undecodable bytes.

    `work` is a private scratch folder (created 0700, removed afterwards).
    """
    manifest = json.loads((batch_dir / "manifest.json").read_text(encoding="utf-8"))
    bad: dict[str, np.ndarray] = {}
    tmp = work / f".lenient-{uuid.uuid4().hex}"
    tmp.mkdir(parents=True, mode=0o700)
    tmp.chmod(0o700)
    try:
        files = []
        for entry in manifest["files"]:
            source = batch_dir / entry["name"]
            if entry.get("sha256") and sha256_file(source) != entry["sha256"]:
                raise LandingCorrupt(
                    f"{contract.source}: {entry['name']}: SHA-256 differs from manifest.json"
                )
            data = source.read_bytes()
            if source.suffix.lower() == ".csv":
                text, lines = _decode_marking(data, contract.encoding)
                if lines.size:
                    data = text.encode(contract.encoding)
                    bad[entry["name"]] = lines
            (tmp / entry["name"]).write_bytes(data)
            files.append({**entry, "sha256": hashlib.sha256(data).hexdigest()})
        (tmp / "manifest.json").write_text(json.dumps({**manifest, "files": files}), encoding="utf-8")
        native = read_landed(tmp, contract)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    mask = np.zeros(len(native), dtype=bool)
    for name, lines in bad.items():
        positions = np.flatnonzero((native["_source_file"] == name).to_numpy(dtype=bool))
        starts = native["_source_line"].to_numpy(dtype=np.int64)[positions]
        mask[positions[_rows_touching(starts, lines)]] = True
    return native, mask
