"""Reading a landed batch back: the files its manifest names, checked against their SHA-256 and
parsed as the contract says into one frame of native columns as text, with lineage (`_source_file`,
`_source_line`). Part of the ingest stage (stages/ingest.py); the parsing of the text into canonical
columns is pure (transforms/standardise.py).

A batch held for bad bytes can be read once an operator accepts it in part (`hub batch release
--partial`): staging decodes strictly and holds a file with one invalid byte as unreadable; accepting
it in part reads a working copy in which each undecodable byte sequence is replaced by U+FFFD, through
the same reader as any batch, and flags every record that touches a replaced byte: those rows are
quarantined (ENCODING_INVALID) and returned to the department. The landed bytes are never changed.
"""

from __future__ import annotations

import codecs
import dataclasses
import hashlib
import io
import json
import logging
import shutil
import threading
import uuid
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from core.contracts import SourceContract
from core.landing import Manifest, ManifestError
from core.storage import sha256_file
from transforms.ids import join_flags
from transforms.standardise import (
    LINEAGE,
    NON_RECORD,
    NUMBER_OK,
    STRING,
    WRONG_TYPE,
    LandingCorrupt,
    LandingDecodeError,
    SchemaDrift,
    mask_of,
)

log = logging.getLogger(__name__)


def _manifest(batch_dir: Path) -> Manifest:
    try:
        return Manifest.read(batch_dir)
    except ManifestError as exc:
        raise LandingCorrupt(str(exc)) from exc


# -- reading the landing directory (strict) -----------------------------------------------------------------


def _check_columns(contract: SourceContract, file: str, found: list[str]) -> None:
    if sorted(found) != sorted(contract.natives) or len(found) != len(set(found)):
        raise SchemaDrift(contract.source, file, contract.natives, found)


def _as_text(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.astype(STRING) if len(frame.columns) else frame


def _read_parquet(path: Path, contract: SourceContract) -> pd.DataFrame:
    try:
        table = pq.read_table(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise LandingCorrupt(f"{contract.source}: {path.name}: not a readable parquet file: {exc}") from exc
    _check_columns(contract, path.name, table.column_names)
    frame = table.to_pandas(types_mapper={pa.string(): STRING, pa.large_string(): STRING}.get)
    return _as_text(frame[contract.natives])


def _read_csv(path: Path, contract: SourceContract) -> pd.DataFrame:
    """Strictly decoded CSV; `_source_line` is the physical line (header = 1), even with quoted newlines."""
    data = path.read_bytes()
    try:
        text = data.decode(contract.encoding)  # strict: a bad byte is an error, never a replacement character
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise LandingDecodeError(
            f"{contract.source}: {path.name} line {line}: bytes {data[exc.start : exc.end].hex(' ')} are not "
            f"valid {contract.encoding} (byte offset {exc.start}: {exc.reason})"
        ) from exc
    text = text.removeprefix("\ufeff")
    text, counts = _blank_non_records(text)
    try:
        frame = pd.read_csv(
            io.StringIO(text),
            dtype=str,
            keep_default_na=False,
            na_filter=False,
            skip_blank_lines=False,
            engine="c",
        )
    except pd.errors.EmptyDataError as exc:
        raise LandingCorrupt(f"{contract.source}: {path.name}: empty file, expected a header line") from exc
    except pd.errors.ParserError as exc:
        raise LandingCorrupt(f"{contract.source}: {path.name}: {exc}") from exc
    _check_columns(contract, path.name, [str(c) for c in frame.columns])
    frame = _as_text(frame[contract.natives])
    # A quoted field may span lines: count the newlines inside each record to keep physical line numbers.
    extra = np.zeros(len(frame), dtype=np.int64)
    if '"' in text:
        for column in contract.natives:
            extra += frame[column].str.count("\n").fillna(0).to_numpy(dtype=np.int64)
    lines = (
        2 + np.arange(len(frame), dtype=np.int64) + np.concatenate([[0], np.cumsum(extra)[:-1]])[: len(frame)]
    )
    frame["_source_line"] = lines
    # skip_blank_lines=False keeps numbering right; now drop the rows that were empty physical lines.
    blank = (frame[contract.natives] == "").all(axis=1).to_numpy(dtype=bool)
    if blank.any():  # rare: look only at the candidate lines
        physical = text.split("\n")
        empty_line = np.zeros(len(frame), dtype=bool)
        empty_line[blank] = [physical[i - 1].strip("\r") == "" for i in lines[blank]]
        if empty_line.any():
            frame = frame[~empty_line]
            log.info("%s: %s: skipped %d blank lines", contract.source, path.name, int(empty_line.sum()))
    frame.attrs["non_record_rows"] = counts
    return frame


def _blank_non_records(text: str) -> tuple[str, dict[str, int]]:
    """Totals, notes and repeated header lines become empty lines (so line numbers stay right).

    They are not records: counting them as such would send a department its own totals row back
    as a bad ID, and a totals row with extra commas would make the whole file unreadable.
    """
    lines = pa.array(text.split("\n"), pa.large_string())
    if len(lines) < 2:
        return text, {}
    stripped = pc.utf8_rtrim(lines, "\r")
    header = stripped[0]
    masks = {kind: mask_of(pc.match_substring_regex(stripped, rx)) for kind, rx in NON_RECORD.items()}
    repeated = mask_of(pc.equal(stripped, header))
    repeated[0] = False
    masks["header"] = repeated
    counts = {kind: int(m.sum()) for kind, m in masks.items() if m.any()}
    if not counts:
        return text, {}
    drop = np.logical_or.reduce(list(masks.values()))
    kept = pc.if_else(pa.array(drop), pa.scalar("", pa.large_string()), lines)
    return "\n".join(kept.to_pylist()), counts


def _read_page(path: Path, contract: SourceContract) -> pd.DataFrame:
    try:
        doc = json.loads(path.read_bytes())
        items = doc["items"]
    except (ValueError, KeyError, TypeError) as exc:
        raise LandingCorrupt(
            f"{contract.source}: {path.name}: expected a JSON object with 'items': {exc}"
        ) from exc
    if not isinstance(items, list) or not all(isinstance(item, dict) for item in items):
        raise LandingCorrupt(f"{contract.source}: {path.name}: 'items' must be a list of objects")
    frame = pd.DataFrame.from_records(items)
    wrong = pd.Series(pd.NA, index=frame.index, dtype=STRING)
    if items:
        for column in contract.columns:  # JSON leaves an empty optional field out: read it as null
            if not column.required and column.native not in frame.columns:
                frame[column.native] = None
        _check_columns(contract, path.name, [str(c) for c in frame.columns])
        frame, wrong = _text_only(frame[contract.natives], contract)
    else:
        frame = pd.DataFrame({c: pd.Series(dtype=STRING) for c in contract.natives})
    frame = _as_text(frame[contract.natives])
    if wrong.notna().any():
        frame[WRONG_TYPE] = wrong
    frame["_source_line"] = np.arange(1, len(frame) + 1, dtype=np.int64)
    return frame


def _text_only(frame: pd.DataFrame, contract: SourceContract) -> tuple[pd.DataFrame, pd.Series]:
    """JSON values of the wrong type (a list, an object, a boolean; a number where text is expected)
    are never stringified.

    The cell keeps the JSON text of what was sent (for the reject file) and the row names the column
    in WRONG_TYPE, so standardise quarantines it (FIELD_TYPE) instead of parsing "['张', '三']".
    A number is text's equal only in a code or numeric column (hkztdm: 1); in a name, an ID or a
    date it is not what the contract says (an ID as a number has already lost digits). A missing
    key (NaN from from_records) is a null, not a wrong type.
    """
    flags: list[tuple[str, np.ndarray]] = []
    out = {}
    for column in contract.columns:
        values = frame[column.native]
        kinds = values.map(type)  # the JSON parser already built Python objects: type() per cell is its cost
        allowed = [str, type(None)] + ([int, float] if column.type in NUMBER_OK else [])
        bad = ~kinds.isin(allowed).to_numpy(dtype=bool)
        bad &= values.notna().to_numpy(dtype=bool) | kinds.isin([list, dict]).to_numpy(dtype=bool)
        if bad.any():
            values = values.astype(object).copy()
            values[bad] = [json.dumps(v, ensure_ascii=False) for v in values[bad]]
            flags.append((column.native, bad))
        out[column.native] = values
    wrong = pd.Series(join_flags(flags, len(frame)), index=frame.index, dtype=STRING).replace("", pd.NA)
    return pd.DataFrame(out, index=frame.index), wrong


def read_landed(batch_dir: Path, contract: SourceContract) -> pd.DataFrame:
    """The native rows of a landed batch as text, with `_source_file` and `_source_line`."""
    batch_dir = Path(batch_dir)
    manifest = _manifest(batch_dir)
    if manifest.source != contract.source:
        raise LandingCorrupt(
            f"{batch_dir}: manifest source {manifest.source!r} != contract {contract.source!r}"
        )
    frames: list[pd.DataFrame] = []
    non_records: dict[str, int] = {}
    line_base = 0
    for entry in manifest.files:
        path = batch_dir / entry.name
        if not path.exists():
            raise LandingCorrupt(f"{contract.source}: {entry.name} is in the manifest but not in {batch_dir}")
        if entry.sha256 and sha256_file(path) != entry.sha256:
            raise LandingCorrupt(f"{contract.source}: {entry.name}: SHA-256 differs from manifest.json")
        suffix = path.suffix.lower()
        if suffix == ".parquet":
            frame = _read_parquet(path, contract)
            # parquet: 1-based row number across the parts in order
            frame["_source_line"] = np.arange(line_base + 1, line_base + len(frame) + 1, dtype=np.int64)
            line_base += len(frame)
        elif suffix == ".csv":
            frame = _read_csv(path, contract)
        elif suffix == ".json":
            frame = _read_page(path, contract)
        else:
            raise LandingCorrupt(
                f"{contract.source}: {entry.name}: no reader for {suffix or 'a file without suffix'}"
            )
        if entry.rows is not None and int(entry.rows) != len(frame):
            log.warning(
                "%s: %s: manifest says %s rows, read %d",
                contract.source,
                entry.name,
                entry.rows,
                len(frame),
            )
        for kind, count in frame.attrs.pop("non_record_rows", {}).items():
            non_records[kind] = non_records.get(kind, 0) + count
        frame["_source_file"] = pd.Series(entry.name, index=frame.index, dtype=STRING)
        frames.append(frame)
    if not frames:
        empty = {c: pd.Series(dtype=STRING) for c in contract.natives}
        return pd.DataFrame(
            empty | {"_source_file": pd.Series(dtype=STRING), "_source_line": pd.Series(dtype="int64")}
        )
    native = pd.concat(frames, ignore_index=True)
    extra = [WRONG_TYPE] if WRONG_TYPE in native.columns else []
    native = native[[*contract.natives, *LINEAGE, *extra]]
    native.attrs["non_record_rows"] = non_records
    return native


# -- reading a batch accepted in part (lenient)

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
    manifest = _manifest(batch_dir)
    bad: dict[str, np.ndarray] = {}
    tmp = work / f".lenient-{uuid.uuid4().hex}"
    tmp.mkdir(parents=True, mode=0o700)
    tmp.chmod(0o700)
    try:
        files = []
        for entry in manifest.files:
            source = batch_dir / entry.name
            if entry.sha256 and sha256_file(source) != entry.sha256:
                raise LandingCorrupt(f"{contract.source}: {entry.name}: SHA-256 differs from manifest.json")
            data = source.read_bytes()
            if source.suffix.lower() == ".csv":
                text, lines = _decode_marking(data, contract.encoding)
                if lines.size:
                    data = text.encode(contract.encoding)
                    bad[entry.name] = lines
            (tmp / entry.name).write_bytes(data)
            files.append(dataclasses.replace(entry, sha256=hashlib.sha256(data).hexdigest()))
        dataclasses.replace(manifest, files=files).write(tmp)
        native = read_landed(tmp, contract)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    mask = np.zeros(len(native), dtype=bool)
    for name, lines in bad.items():
        positions = np.flatnonzero((native["_source_file"] == name).to_numpy(dtype=bool))
        starts = native["_source_line"].to_numpy(dtype=np.int64)[positions]
        mask[positions[_rows_touching(starts, lines)]] = True
    return native, mask
