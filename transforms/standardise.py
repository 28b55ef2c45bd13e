"""Standardise a landed batch: native text in, canonical typed columns plus per-row reason codes out.

The ingest stage reads the raw files of a landing directory (stages/landed.py) into one frame of
native columns as text, with lineage (`_source_file`, `_source_line`); `standardise` parses that frame column by column into the canonical shape; every parse problem
becomes a reason code on its row (never an exception), so the validate stage can quarantine it.
Everything is vectorised: Arrow compute and numpy over whole columns, no loop over rows.
"""

from __future__ import annotations

import logging
import re
from datetime import date
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from core.contracts import REASONS, Column, SourceContract
from transforms.ids import (
    ID_UPGRADE_IMPLAUSIBLE,
    arrow_to_series,
    as_arrow,
    calendar_dates,
    char_matrix,
    join_flags,
    normalise_ids,
)

log = logging.getLogger(__name__)

STRING = pd.StringDtype()
LINEAGE = ["_source_file", "_source_line"]
EXCEL_EPOCH = np.datetime64("1899-12-30", "D")  # Excel's day 0 (with its 1900 leap-year bug folded in)

# Full-width ASCII (U+FF01..U+FF5E) and the ideographic space, as sent by Excel users and IMEs.
_WIDE = {chr(c): chr(c - 0xFEE0) for c in range(0xFF01, 0xFF5F)} | {"\u3000": " "}
# Middle-dot look-alikes in transliterated names (e.g. 阿依古丽·买买提) become the standard U+00B7.
_DOTS = {"\u30fb": "·", "\uff65": "·", "\u2022": "·", "\u2027": "·", "\u2219": "·"}
_WIDE_TABLE = str.maketrans(_WIDE)
_NAME_TABLE = str.maketrans(_WIDE | _DOTS)
_WIDE_CLASS = "[\uff01-\uff5e\u3000]"
_NAME_CLASS = "[\uff01-\uff5e\u3000" + "".join(_DOTS) + "]"

_DATE = (
    r"^(?:(?P<y1>\d{4})(?P<m1>\d{2})(?P<d1>\d{2})"  # YYYYMMDD
    r"|(?P<y2>\d{4})[-/.](?P<m2>\d{1,2})[-/.](?P<d2>\d{1,2})(?:[ T]\d{1,2}:\d{2}(?::\d{2}(?:\.\d+)?)?)?"
    r"|(?P<serial>\d{1,5})(?:\.0+)?)$"  # Excel serial day number
)
_TIMESTAMP_FORMAT = "%Y-%m-%d %H:%M:%S"
NUMBER_OK = ("code", "int", "float", "bool")  # JSON numbers read as their text in these columns only
WRONG_TYPE = "_wrong_type"  # per row: the native columns whose JSON value was not text (';'-joined)
# Python's \s (str.isspace) spelled out as a class, so that RE2 (Arrow, ASCII-only \s) reads alike.
_SPACE = "\t\n\x0b\x0c\r\x1c-\x1f \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
# Lines a spreadsheet adds around the records: totals and notes (the first cell starts with these);
# matched by Arrow (RE2) over whole columns.
NON_RECORD = {
    "totals": f"^[{_SPACE}\"']*(?:合[{_SPACE}]*计|总[{_SPACE}]*计|小[{_SPACE}]*计)",
    "notes": f"^[{_SPACE}\"']*(?:备[{_SPACE}]*注|说[{_SPACE}]*明|注[{_SPACE}]*[:：])",
}


class BatchUnreadable(Exception):
    """The landed batch cannot be read as its contract says; the caller holds the batch."""


class SchemaDrift(BatchUnreadable):
    """The department sent other columns than its contract names."""

    def __init__(self, source: str, file: str, expected: list[str], found: list[str]) -> None:
        self.source = source
        self.file = file
        self.expected = expected
        self.found = found
        self.missing = [c for c in expected if c not in found]
        self.unexpected = [c for c in found if c not in expected]
        super().__init__(
            f"{source}: schema drift in {file}: missing columns {self.missing}, unexpected columns "
            f"{self.unexpected}; expected {expected}, found {found}"
        )


class LandingDecodeError(BatchUnreadable):
    """A landed text file is not valid in its contracted encoding (decoded strictly, never replaced)."""


class LandingCorrupt(BatchUnreadable):
    """A landed file does not match its manifest or cannot be parsed."""


def mask_of(values: pa.Array | pa.ChunkedArray) -> np.ndarray:
    return np.asarray(pc.fill_null(values, False).to_numpy(zero_copy_only=False), dtype=bool)


# -- reason codes ----------------------------------------------------------------------------------


class Reasons:
    """Per-row reason flags keyed by (code, canonical field, text); joined into strings only at the end.

    `text` is a more specific Chinese explanation (an expectation's meta.reason_zh); without it the
    reject file gets the code's standard text followed by the field's title and native name.
    """

    def __init__(self, n: int) -> None:
        self.n = n
        self._flags: dict[tuple[str, str, str], np.ndarray] = {}

    def add(self, code: str, mask: np.ndarray | pd.Series, field: str = "", text: str | None = None) -> None:
        if code not in REASONS:
            raise ValueError(f"unknown reason code {code!r}; known: {list(REASONS)}")
        flags = np.asarray(mask, dtype=bool)
        if flags.shape != (self.n,):
            raise ValueError(f"reason mask for {code} has shape {flags.shape}, expected ({self.n},)")
        if flags.any():
            key = (code, field, text or "")
            self._flags[key] = self._flags[key] | flags if key in self._flags else flags.copy()

    def any(self) -> np.ndarray:
        return (
            np.logical_or.reduce(list(self._flags.values())) if self._flags else np.zeros(self.n, dtype=bool)
        )

    def on_field(self, field: str) -> np.ndarray:
        """Rows already flagged for this field (whatever the code): a null there is explained."""
        masks = [flags for (_, f, _), flags in self._flags.items() if f == field]
        return np.logical_or.reduce(masks) if masks else np.zeros(self.n, dtype=bool)

    def on_field_with(self, field: str, codes: set[str]) -> np.ndarray:
        """Rows flagged for this field with one of these codes."""
        masks = [flags for (c, f, _), flags in self._flags.items() if f == field and c in codes]
        return np.logical_or.reduce(masks) if masks else np.zeros(self.n, dtype=bool)

    def by_code(self) -> dict[str, np.ndarray]:
        """One mask per code (fields merged), in the order of REASONS."""
        out: dict[str, np.ndarray] = {}
        for code in REASONS:
            masks = [flags for (c, _, _), flags in self._flags.items() if c == code]
            if masks:
                out[code] = np.logical_or.reduce(masks)
        return out

    def codes(self) -> np.ndarray:
        """';'-joined codes per row ('' where the row is clean)."""
        return join_flags(list(self.by_code().items()), self.n)

    def describe(self, contract: SourceContract) -> np.ndarray:
        """Chinese text per row for the reject file, naming the field (title and native column)."""
        order = {code: i for i, code in enumerate(REASONS)}
        position = {c.name: i for i, c in enumerate(contract.columns)}
        labelled: list[tuple[str, np.ndarray]] = []
        for (code, field, text), flags in sorted(
            self._flags.items(), key=lambda kv: (order[kv[0][0]], position.get(kv[0][1], -1), kv[0][2])
        ):
            label = text or REASONS[code]
            if not text and field in position and not code.startswith("ID_"):
                column = contract.column(field)
                label += f"({column.title} {column.native})"
            labelled.append((label, flags))
        return join_flags(labelled, self.n, sep="；")

    def counts(self) -> dict[str, int]:
        """Rows per code."""
        return {code: int(mask.sum()) for code, mask in self.by_code().items()}

    def field_counts(self) -> list[dict[str, Any]]:
        """Rows per (code, field), for the validation summary."""
        merged: dict[tuple[str, str], np.ndarray] = {}
        for (code, field, _), flags in self._flags.items():
            merged[(code, field)] = merged[(code, field)] | flags if (code, field) in merged else flags
        return [{"code": c, "field": f, "rows": int(m.sum())} for (c, f), m in sorted(merged.items())]


# -- parsing one column ----------------------------------------------------------------------------


def clean_text(values: pd.Series, name: bool = False) -> pd.Series:
    """Trim, full-width ASCII to half-width, empty to <NA>; rare characters (䶮, 㵘) pass untouched."""
    arr = pc.utf8_trim_whitespace(as_arrow(values))
    if not pc.all(pc.fill_null(pc.string_is_ascii(arr), True)).as_py():  # codes, dates: skip the regex
        wide = pc.fill_null(pc.match_substring_regex(arr, _NAME_CLASS if name else _WIDE_CLASS), False)
        if pc.any(wide).as_py():  # rare: translate just those cells
            text = pd.Series(arr.filter(wide).to_pylist(), dtype=STRING)
            fixed = text.str.translate(_NAME_TABLE if name else _WIDE_TABLE).str.strip()
            arr = pc.replace_with_mask(arr, wide, as_arrow(fixed))
    arr = pc.if_else(pc.equal(arr, ""), pa.scalar(None, pa.large_string()), arr)
    return arrow_to_series(arr, values.index)


def _fixed_width(arr: pa.Array, width: int, separators: dict[int, str]) -> tuple[np.ndarray, np.ndarray]:
    """Rows that are exactly `width` ASCII bytes, digits except at the separator positions; their characters.

    The common layouts are checked on a uint8 matrix (numpy), far cheaper than a regex with groups.
    """
    lengths = pc.fill_null(pc.binary_length(arr), -1).to_numpy(zero_copy_only=False)
    candidates = lengths == width
    if not candidates.any():
        return np.zeros(0, dtype=np.int64), np.zeros((0, width), dtype=np.uint8)
    chars = char_matrix(arr.filter(pa.array(candidates)), width)
    digit_columns = [i for i in range(width) if i not in separators]
    ok = ((chars[:, digit_columns] - np.uint8(ord("0"))) < 10).all(axis=1)  # uint8 wraps below '0'
    for position, separator in separators.items():
        ok &= chars[:, position] == ord(separator)
    return np.flatnonzero(candidates)[ok], chars[ok]


def _number(chars: np.ndarray, start: int, stop: int) -> np.ndarray:
    """The integer spelled by ASCII digit columns start..stop-1."""
    powers = 10 ** np.arange(stop - start - 1, -1, -1, dtype=np.int64)
    return (chars[:, start:stop].astype(np.int64) - ord("0")) @ powers


def _ymd(digits: np.ndarray, year: int, month: int, day: int) -> tuple[np.ndarray, np.ndarray]:
    y = _number(digits, year, year + 4)
    ok, dates = calendar_dates(y, _number(digits, month, month + 2), _number(digits, day, day + 2))
    return ok, np.where(ok, dates, np.datetime64("NaT", "D"))


def _regex_dates(arr: pa.Array) -> np.ndarray:
    """The less common layouts (YYYY/M/D, with a time part, Excel serials) through one regex."""
    parts = pc.extract_regex(arr.cast(pa.string()), _DATE)
    matched = pc.fill_null(pc.is_valid(parts), False).to_numpy(zero_copy_only=False)
    out = np.full(len(arr), np.datetime64("NaT", "D"), dtype="datetime64[D]")
    if not matched.any():
        return out

    def number(*fields: str) -> np.ndarray:
        joined = pc.binary_join_element_wise(*(pc.struct_field(parts, f) for f in fields), "")
        joined = pc.if_else(pc.equal(pc.fill_null(joined, ""), ""), "0", joined)
        return pc.cast(joined, pa.int64()).to_numpy(zero_copy_only=False)

    year, month, day, serial = number("y1", "y2"), number("m1", "m2"), number("d1", "d2"), number("serial")
    is_serial = matched & (serial > 0)
    ok, dates = calendar_dates(year, month, day)
    ok &= matched & ~is_serial
    out = np.where(ok, dates, out)
    return np.where(is_serial, EXCEL_EPOCH + serial.astype("timedelta64[D]"), out)


def parse_dates(text: pd.Series) -> tuple[pd.Series, np.ndarray]:
    """YYYYMMDD, YYYY-MM-DD, YYYY/M/D (optionally with a time, dropped) or an Excel serial day number.

    Returns datetime64[us] dates (NaT where absent or invalid) and the mask of present-but-invalid cells.
    """
    arr = as_arrow(text)
    out = np.full(len(arr), np.datetime64("NaT", "D"), dtype="datetime64[D]")
    present = text.notna().to_numpy(dtype=bool)
    shaped = np.zeros(len(arr), dtype=bool)
    for width, separators, (y, m, d) in ((10, {4: "-", 7: "-"}, (0, 5, 8)), (8, {}, (0, 4, 6))):
        rows, digits = _fixed_width(arr, width, separators)
        out[rows] = _ymd(digits, y, m, d)[1]
        shaped[rows] = True
    rest = present & ~shaped
    if rest.any():
        out[rest] = _regex_dates(arr.filter(pa.array(rest)))
    dates = pd.Series(out.astype("datetime64[us]"), index=text.index)
    return dates, present & np.isnat(out)


def _parse_with_format(text: pd.Series, fmt: str, date_only: bool) -> tuple[pd.Series, np.ndarray]:
    parsed = pd.to_datetime(text, format=fmt, errors="coerce").astype("datetime64[us]")
    if date_only:
        parsed = parsed.dt.normalize()
    return parsed, text.notna().to_numpy(dtype=bool) & parsed.isna().to_numpy(dtype=bool)


def parse_timestamps(text: pd.Series) -> tuple[pd.Series, np.ndarray]:
    """'YYYY-MM-DD HH:MM:SS' (other ISO 8601 forms tried for the rest); NaT and an invalid mask otherwise."""
    arr = as_arrow(text)
    out = np.full(len(arr), np.datetime64("NaT", "s"), dtype="datetime64[s]")
    present = text.notna().to_numpy(dtype=bool)
    rows, digits = _fixed_width(arr, 19, {4: "-", 7: "-", 10: " ", 13: ":", 16: ":"})
    ok, days = _ymd(digits, 0, 5, 8)
    hour, minute, second = _number(digits, 11, 13), _number(digits, 14, 16), _number(digits, 17, 19)
    ok &= (hour < 24) & (minute < 60) & (second < 60)
    seconds = (hour * 3600 + minute * 60 + second).astype("timedelta64[s]")
    out[rows] = np.where(ok, days.astype("datetime64[s]") + seconds, np.datetime64("NaT", "s"))
    parsed = pd.Series(out.astype("datetime64[us]"), index=text.index)
    shaped = np.zeros(len(arr), dtype=bool)
    shaped[rows] = True
    rest = present & ~shaped
    if rest.any():
        retry = pd.to_datetime(text[rest], format="ISO8601", errors="coerce")
        if getattr(retry.dt, "tz", None) is None:  # zone-aware text is not a local timestamp: invalid
            parsed[rest] = retry.astype("datetime64[us]")
    return parsed, present & parsed.isna().to_numpy(dtype=bool)


def _parse_column(values: pd.Series, column: Column, reasons: Reasons) -> pd.Series:
    """One native column to its canonical dtype; problems go to `reasons` under the column's name."""
    text = clean_text(values, name=column.type == "name")
    absent = text.isna().to_numpy(dtype=bool)
    if column.required:
        reasons.add("FIELD_MISSING", absent & ~reasons.on_field(column.name), column.name)
    if column.type in ("name", "string"):
        if column.max_length is None:
            return text
        long = mask_of(pc.greater(pc.utf8_length(as_arrow(text)), column.max_length))
        reasons.add("FIELD_TOO_LONG", long, column.name)
        return text.mask(long)
    if column.type == "code":
        if column.codes is None:  # the contract model refuses a code column without codes
            raise ValueError(f"contract column {column.name}: type code without codes")
        mapped = text.map(column.codes)
        reasons.add("CODE_UNKNOWN", ~absent & mapped.isna().to_numpy(dtype=bool), column.name)
        ints = all(isinstance(v, int) for v in column.codes.values())
        return mapped.astype("Int64" if ints else STRING)
    if column.type == "bool":
        if column.true_values is None or column.false_values is None:  # refused by the contract model
            raise ValueError(f"contract column {column.name}: type bool without true_values/false_values")
        arr = as_arrow(text)
        yes = pc.fill_null(pc.is_in(arr, value_set=pa.array(column.true_values)), False).to_numpy(
            zero_copy_only=False
        )
        no = pc.fill_null(pc.is_in(arr, value_set=pa.array(column.false_values)), False).to_numpy(
            zero_copy_only=False
        )
        reasons.add("CODE_UNKNOWN", ~absent & ~yes & ~no, column.name)
        flags = pd.array(yes, dtype="boolean")
        flags[~(yes | no)] = pd.NA
        return pd.Series(flags, index=text.index)
    if column.type in ("date", "timestamp"):
        if column.format:
            parsed, invalid = _parse_with_format(text, column.format, date_only=column.type == "date")
        elif column.type == "date":
            parsed, invalid = parse_dates(text)
        else:
            parsed, invalid = parse_timestamps(text)
        reasons.add("DATE_INVALID", invalid, column.name)
        return parsed
    if column.type == "int":
        digits = text.str.fullmatch(r"[+-]?\d{1,18}").fillna(False).to_numpy(dtype=bool)
        parsed = pd.to_numeric(text.where(digits), errors="coerce").astype("Int64")
        reasons.add("FIELD_INVALID", ~absent & ~digits, column.name)
        return parsed
    if column.type == "float":
        number = pd.to_numeric(text, errors="coerce").astype("Float64")
        finite = np.isfinite(number.to_numpy(dtype="float64", na_value=np.nan))
        reasons.add("FIELD_INVALID", ~absent & ~finite, column.name)
        return number.where(finite)
    raise ValueError(f"{column.name}: unsupported type {column.type}")  # pragma: no cover - Literal-typed


# NUL and the other C0 controls except tab, newline and carriage return: PostgreSQL refuses NUL in text.
_CONTROL = r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]"


def _wrong_pattern(native: str) -> str:
    return "(?:^|;)" + re.escape(native) + "(?:;|$)"


def standardise_rows(
    native: pd.DataFrame, contract: SourceContract, as_of: date
) -> tuple[pd.DataFrame, Reasons]:
    """Canonical columns (+ lineage, `_id_fix`) and the per-row, per-field reason flags."""
    missing = [c for c in contract.natives if c not in native.columns]
    if missing:
        raise SchemaDrift(contract.source, "(frame)", contract.natives, [str(c) for c in native.columns])
    reasons = Reasons(len(native))
    out: dict[str, pd.Series] = {}
    wrong = native[WRONG_TYPE] if WRONG_TYPE in native.columns else None
    for column in contract.columns:
        values = native[column.native]
        unusable = np.zeros(len(native), dtype=bool)
        if wrong is not None:
            typed = mask_of(pc.match_substring_regex(as_arrow(wrong), _wrong_pattern(column.native)))
            reasons.add("FIELD_TYPE", typed, column.name)
            unusable |= typed
        control = mask_of(pc.match_substring_regex(as_arrow(values), _CONTROL))
        reasons.add("FIELD_CONTROL_CHAR", control & ~unusable, column.name)
        unusable |= control
        if unusable.any():  # never parse what was not sent as clean text
            values = values.mask(unusable)
        if column.type == "id_number":
            ids = normalise_ids(values, as_of, contract.spreadsheet_ids)
            for code in ids["id_reason"].dropna().unique():
                if code == ID_UPGRADE_IMPLAUSIBLE and contract.implausible_upgrade == "flag":
                    continue  # kept, and flagged on the row by `_id_fix`
                flagged = (ids["id_reason"] == code).fillna(False).to_numpy(dtype=bool)
                reasons.add(str(code), flagged & ~unusable, column.name)
            out[column.name] = ids["id_number"]
            out["_id_fix"] = ids["id_fix"]
            out["_id_reason"] = ids["id_reason"]
        else:
            out[column.name] = _parse_column(values, column, reasons)
    frame = pd.DataFrame(out, index=native.index)
    frame = frame[[*contract.names, "_id_fix", "_id_reason"]]
    for lineage in LINEAGE:
        if lineage in native.columns:
            frame[lineage] = native[lineage]
    return frame, reasons


def standardise(
    native: pd.DataFrame, contract: SourceContract, as_of: date
) -> tuple[pd.DataFrame, pd.Series]:
    """Canonical columns and a per-row Series of ';'-joined parse reason codes ('' for a clean row).

    Besides the canonical columns (contract order, SPEC dtypes, nullable where a cell failed to
    parse) the frame carries `_id_fix` (what normalise_ids repaired) and the lineage columns when
    the native frame has them; stage_batch writes only the canonical and lineage columns.
    """
    frame, reasons = standardise_rows(native, contract, as_of)
    return frame, pd.Series(reasons.codes(), index=native.index, dtype=STRING)
