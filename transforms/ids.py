"""公民身份号码 (GB 11643-1999) normalisation, vectorised over a whole column.

The gate is the MOD 11-2 check character plus a real, non-future birth date; the address
code is never checked against a region list (numbers keep abolished codes, and new districts
such as 330112/330113/330114 postdate python-stdnum's tables). Dirty forms seen in real files
are repaired and recorded in `id_fix`: surrounding or inner spaces, a leading Excel apostrophe,
full-width digits and Ｘ, a lowercase x, and legacy 15-digit numbers (GB 11643-1989: the century
is inserted after the address code and the check character appended). The century is never assumed:
sequence codes 996-999 were reserved for centenarians, so those numbers were born in the 1800s and
every other one in the 1900s; an upgrade that gives an age over MAX_AGE or a birth after the run
date cannot be right and gets ID_UPGRADE_IMPLAUSIBLE. A number a spreadsheet stored as a float
(scientific notation, a decimal part; in sources that pass through spreadsheets, an 18-digit number
ending in 000 because only 15 significant digits were kept) is ID_SPREADSHEET_DAMAGED even when its check character happens to match.
Anything else gets a quarantine code in `id_reason`. Digits are checked as a uint8 matrix
taken straight from the Arrow buffers, so a million numbers take well under a second.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

WEIGHTS = np.array([7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2], dtype=np.int64)
CHECK_CHARS = np.frombuffer(b"10X98765432", dtype=np.uint8)  # S mod 11 = 0..10
EARLIEST_BIRTH_YEAR = 1800  # the suite's ID pattern admits 18xx-20xx births only
MAX_AGE = 110  # an upgraded 15-digit number saying someone is older than this is not trusted
CENTENARIAN_SEQUENCES = 996  # GB 11643-1989: sequence codes 996-999 were kept for people aged 100+

# Repairs, in the order they are applied and reported.
FIX_SPACES = "SPACES"
FIX_FULLWIDTH = "FULLWIDTH"
FIX_APOSTROPHE = "APOSTROPHE"
FIX_LOWER_X = "LOWER_X"
FIX_UPGRADED_15 = "UPGRADED_15"

ID_MISSING = "ID_MISSING"
ID_FORMAT = "ID_FORMAT"
ID_CHECKSUM = "ID_CHECKSUM"
ID_BIRTH_INVALID = "ID_BIRTH_INVALID"
ID_BIRTH_FUTURE = "ID_BIRTH_FUTURE"
ID_SPREADSHEET_DAMAGED = "ID_SPREADSHEET_DAMAGED"
ID_UPGRADE_IMPLAUSIBLE = "ID_UPGRADE_IMPLAUSIBLE"
FIX_UPGRADED_15_1800S = "UPGRADED_15_1800S"  # with UPGRADED_15: the century came from a 996-999 sequence

_SPACE_CLASS = r"[\s\x{00A0}\x{3000}\x{FEFF}]"  # RE2's \s is ASCII only: add NBSP, ideographic space, BOM
_FULLWIDTH = {chr(0xFF10 + i): str(i) for i in range(10)} | {"Ｘ": "X", "ｘ": "x", "＇": "'"}
_FULLWIDTH_CLASS = "[" + "".join(_FULLWIDTH) + "]"
_SHAPE18 = r"^[1-9]\d{16}[\dX]$"  # address codes never start with 0
_SHAPE15 = r"^[1-9]\d{14}$"
# What a spreadsheet makes of a long number: 3.30106E+17, 330106198001010014.0, or 15 significant
# digits padded with 000 (the float kept no more).
_DAMAGED = r"^(?:\d+(?:\.\d*)?[Ee][+]?\d+|\d{15,18}\.\d*)$"
_STRING = pd.StringDtype()


def as_arrow(values: pd.Series) -> pa.LargeStringArray:
    """The column as one contiguous Arrow large_string array (nulls kept)."""
    arr = pa.array(values.astype(_STRING).array)
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    return arr.cast(pa.large_string())


def arrow_to_series(arr: pa.Array, index: pd.Index) -> pd.Series:
    """An Arrow string array as a pandas "string" Series (no copy through Python objects)."""
    return pd.Series(pd.arrays.ArrowStringArray(pa.chunked_array([arr.cast(pa.large_string())])), index=index)


def char_matrix(arr: pa.Array, width: int) -> np.ndarray:
    """uint8 view (n, width) of an array of ASCII strings that all have exactly `width` characters."""
    arr = arr.cast(pa.large_string())
    n = len(arr)
    if n == 0:
        return np.zeros((0, width), dtype=np.uint8)
    _, offsets_buf, data_buf = arr.buffers()
    offsets = np.frombuffer(offsets_buf, dtype=np.int64, count=n + 1, offset=arr.offset * 8)
    data = np.frombuffer(data_buf, dtype=np.uint8)[offsets[0] : offsets[-1]]
    if data.size != n * width:
        raise ValueError(f"expected {n} strings of {width} ASCII characters, got {data.size} bytes")
    return data.reshape(n, width)


_BLOCK = 1 << 14  # rows per transposed block: stays in cache


def char_columns(chars: np.ndarray) -> np.ndarray:
    """(width, n) copy of an (n, width) character matrix, so each position is a contiguous array.

    Reading a position straight from the row-major matrix strides over the whole buffer once per
    position; transposing cache-sized blocks reads it once.
    """
    out = np.empty(chars.shape[::-1], dtype=np.uint8)
    for lo in range(0, len(chars), _BLOCK):
        out[:, lo : lo + _BLOCK] = chars[lo : lo + _BLOCK].T
    return out


def leading_number(digits: np.ndarray, count: int) -> np.ndarray:
    """The int64 the first `count` rows of a (width, n) digit matrix spell, per column (Horner's rule)."""
    value = np.zeros(digits.shape[1], dtype=np.int64)
    for position in range(count):
        value *= 10
        value += digits[position]
    return value


def strings_from_chars(chars: np.ndarray, valid: np.ndarray) -> pa.Array:
    """Arrow strings built from a uint8 matrix of ASCII characters, one row per string, null where not valid."""
    n, width = chars.shape
    offsets = np.arange(0, (n + 1) * width, width, dtype=np.int64)
    data = np.ascontiguousarray(chars, dtype=np.uint8)
    validity = pa.py_buffer(np.packbits(valid, bitorder="little"))
    buffers = [validity, pa.py_buffer(offsets), pa.py_buffer(data)]
    return pa.Array.from_buffers(pa.large_string(), n, buffers, null_count=int(n - valid.sum()))


def _check_chars(digits17: np.ndarray) -> np.ndarray:
    """ISO 7064 MOD 11-2 over an (n, 17) matrix of digit values 0..9; returns ASCII check characters."""
    return CHECK_CHARS[(digits17.astype(np.int64) @ WEIGHTS) % 11]


def join_flags(flags: Sequence[tuple[str, np.ndarray]], n: int, sep: str = ";") -> np.ndarray:
    """';'-join the labels whose mask is set, per row, as an object array ('' where none is set).

    Rows are grouped by their combination of flags (np.unique over the flagged rows), so the
    strings are built once per distinct combination, never once per row.
    """
    out = np.full(n, "", dtype=object)
    if not flags or n == 0:
        return out
    matrix = np.column_stack([np.asarray(mask, dtype=bool) for _, mask in flags])
    rows = np.flatnonzero(matrix.any(axis=1))
    if rows.size == 0:
        return out
    combos, inverse = np.unique(matrix[rows], axis=0, return_inverse=True)
    labels = [label for label, _ in flags]
    texts = np.array([sep.join(lab for lab, on in zip(labels, combo, strict=True) if on) for combo in combos])
    out[rows] = texts[inverse.reshape(-1)]
    return out


_MONTH_DAYS = np.array([0, 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31], dtype=np.int64)
_NAT = np.iinfo(np.int64).min


def calendar_dates(year: np.ndarray, month: np.ndarray, day: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Calendar check of integer year/month/day arrays (shared with date parsing): (valid, datetime64[D]/NaT).

    Days since 1970-01-01 by integer arithmetic (H. Hinnant's days_from_civil), not numpy's slow
    calendar casts between datetime64 units.
    """
    y, m, d = (np.asarray(a, dtype=np.int64) for a in (year, month, day))
    in_range = (y >= 1) & (y <= 9999) & (m >= 1) & (m <= 12) & (d >= 1)
    leap = (y % 4 == 0) & ((y % 100 != 0) | (y % 400 == 0))
    month_days = _MONTH_DAYS[np.where(in_range, m, 0)] + (leap & (m == 2))
    ok = in_range & (d <= month_days)
    shifted = y - (m <= 2)
    era = np.floor_divide(shifted, 400)
    year_of_era = shifted - era * 400
    day_of_year = (153 * ((m + 9) % 12) + 2) // 5 + d - 1
    day_of_era = year_of_era * 365 + year_of_era // 4 - year_of_era // 100 + day_of_year
    days = np.where(ok, era * 146097 + day_of_era - 719468, _NAT)
    return ok, days.view("datetime64[D]")


def birth_parts(chars: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Year, month, day from characters 7-14 of an (n, >=14) ID digit-value matrix."""
    d = chars[:, 6:14].astype(np.int64)
    year = d[:, 0] * 1000 + d[:, 1] * 100 + d[:, 2] * 10 + d[:, 3]
    return year, d[:, 4] * 10 + d[:, 5], d[:, 6] * 10 + d[:, 7]


def check_char(first17: pd.Series) -> pd.Series:
    """MOD 11-2 check character for each 17-digit string (<NA> where the input is not 17 digits)."""
    arr = as_arrow(first17)
    ok = pc.fill_null(pc.match_substring_regex(arr, r"^\d{17}$"), False).to_numpy(zero_copy_only=False)
    out = np.full(len(arr), None, dtype=object)
    if ok.any():
        digits = char_matrix(arr.filter(pa.array(ok)), 17) - ord("0")
        out[ok] = _check_chars(digits).view("S1").astype(str)
    return pd.Series(out, index=first17.index, dtype=_STRING)


def valid18(ids: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Mask of well-shaped 18-character IDs (17 digits then a digit or X) and their character matrix
    (shape checked, checksum not): lengths from the offsets, characters checked as a uint8 matrix."""
    arr = as_arrow(ids)
    ok = pc.fill_null(pc.equal(pc.binary_length(arr), 18), False).to_numpy(zero_copy_only=False)
    chars = char_matrix(arr.filter(pa.array(ok)), 18) if ok.any() else np.zeros((0, 18), np.uint8)
    digits = chars - np.uint8(ord("0"))  # non-digits wrap above 9
    shaped = (digits[:, :17] <= 9).all(axis=1) & ((digits[:, 17] <= 9) | (chars[:, 17] == ord("X")))
    ok[ok] = shaped
    return ok, chars[shaped]


def birth_and_gender_of(ids: pd.Series) -> tuple[pd.Series, pd.Series]:
    """What normalised 18-character IDs encode (GB 11643): the birth date (datetime64[us]; NaT where
    absent or impossible) and 'male' / 'female' from the parity of the sequence number (digit 17)."""
    ok, chars = valid18(ids)
    birth = np.full(len(ids), np.datetime64("NaT", "us"), dtype="datetime64[us]")
    gender = np.full(len(ids), None, dtype=object)
    if ok.any():
        _, dates = calendar_dates(*birth_parts(chars - ord("0")))
        birth[ok] = dates.astype("datetime64[us]")
        gender[ok] = np.where((chars[:, 16] - ord("0")) % 2 == 1, "male", "female")
    return pd.Series(birth, index=ids.index), pd.Series(gender, index=ids.index, dtype=_STRING)


def _mask(values: pa.Array) -> np.ndarray:
    return pc.fill_null(values, False).to_numpy(zero_copy_only=False)


def _repair(arr: pa.Array) -> tuple[pa.Array, dict[str, np.ndarray]]:
    """Undo the dirty forms (spaces, full-width, apostrophe, lowercase x); masks say which rows needed it."""
    spaces = _mask(pc.match_substring_regex(arr, _SPACE_CLASS))
    if spaces.any():
        arr = pc.replace_substring_regex(arr, _SPACE_CLASS + "+", "")
    fullwidth = _mask(pc.match_substring_regex(arr, _FULLWIDTH_CLASS))
    if fullwidth.any():
        for wide, narrow in _FULLWIDTH.items():
            arr = pc.replace_substring(arr, wide, narrow)
    apostrophe = _mask(pc.starts_with(arr, "'"))
    if apostrophe.any():
        arr = pc.replace_substring_regex(arr, r"^'+", "")
    lower_x = _mask(pc.match_substring_regex(arr, r"^\d{17}x$"))
    if lower_x.any():
        arr = pc.replace_substring_regex(arr, r"x$", "X")
    fixes = {FIX_SPACES: spaces, FIX_APOSTROPHE: apostrophe, FIX_FULLWIDTH: fullwidth, FIX_LOWER_X: lower_x}
    return arr, fixes


def normalise_ids(raw: pd.Series, as_of: date, spreadsheet: bool = False) -> pd.DataFrame:
    """Repair what is safely repairable and reject the rest: columns id_number, id_fix, id_reason.

    `spreadsheet`: the source's files pass through spreadsheets, so an 18-digit number ending in 000
    is taken as a float's lost digits. A genuine number can end so (sequence x00, check 0: about one
    in 1,100), which is why only such sources are judged this way; the department resends it as text.
    """
    n = len(raw)
    arr = as_arrow(raw)
    # Nearly every number is already clean: one regex pass over all, the repairs only over the rest.
    clean = _mask(pc.match_substring_regex(arr, _SHAPE18))
    is18 = clean.copy()
    dirty = np.flatnonzero(~clean)
    fixes = {
        label: np.zeros(n, dtype=bool) for label in (FIX_SPACES, FIX_APOSTROPHE, FIX_FULLWIDTH, FIX_LOWER_X)
    }
    is15 = np.zeros(n, dtype=bool)
    missing = np.zeros(n, dtype=bool)
    repaired = arr.filter(pa.array(~clean))
    if dirty.size:
        repaired, sub_fixes = _repair(repaired)
        for label, sub in sub_fixes.items():
            fixes[label][dirty] = sub
        missing[dirty] = _mask(pc.equal(pc.utf8_length(repaired), 0)) | ~_mask(pc.is_valid(repaired))
        sub18 = _mask(pc.match_substring_regex(repaired, _SHAPE18))
        sub15 = _mask(pc.match_substring_regex(repaired, _SHAPE15))
        is18[dirty] = sub18
        is15[dirty] = sub15
    damaged = np.zeros(n, dtype=bool)
    if dirty.size:
        damaged[dirty] = _mask(pc.match_substring_regex(repaired, _DAMAGED))
    if spreadsheet:  # the float's lost digits on a well-shaped number
        damaged |= clean & _mask(pc.ends_with(arr, "000"))
    is18 &= ~damaged
    bad_format = ~missing & ~is18 & ~is15 & ~damaged

    # First 17 digits of every well-shaped number: 18-digit as given, 15-digit with '19' inserted.
    shaped = is18 | is15
    first17 = np.zeros((n, 17), dtype=np.uint8)
    given = np.zeros(n, dtype=np.uint8)
    if clean.any():
        chars18 = char_matrix(arr.filter(pa.array(clean)), 18)
        first17[clean] = chars18[:, :17]
        given[clean] = chars18[:, 17]
    fixed18 = dirty[is18[dirty]]
    if fixed18.size:
        chars18 = char_matrix(repaired.filter(pa.array(is18[dirty])), 18)
        first17[fixed18] = chars18[:, :17]
        given[fixed18] = chars18[:, 17]
    idx15 = np.flatnonzero(is15)
    centenarian = np.zeros(n, dtype=bool)
    if idx15.size:
        chars15 = char_matrix(repaired.filter(pa.array(is15[dirty])), 15)
        first17[idx15, :6] = chars15[:, :6]
        sequence = leading_number(char_columns(chars15[:, 12:15] - ord("0")), 3)
        first17[idx15, 6] = ord("1")
        first17[idx15, 7] = np.where(sequence >= CENTENARIAN_SEQUENCES, ord("8"), ord("9"))
        first17[idx15, 8:] = chars15[:, 6:]
        centenarian[idx15] = sequence >= CENTENARIAN_SEQUENCES
    rows = np.flatnonzero(shaped)
    digits = first17[rows] - ord("0")
    computed = np.zeros(n, dtype=np.uint8)
    computed[rows] = _check_chars(digits)
    checksum_bad = is18 & (given != computed)

    birth_ok = np.zeros(n, dtype=bool)
    birth_future = np.zeros(n, dtype=bool)
    implausible = np.zeros(n, dtype=bool)
    if rows.size:
        year, month, day = birth_parts(digits)
        ok, dates = calendar_dates(year, month, day)
        ok &= year >= EARLIEST_BIRTH_YEAR
        birth_ok[rows] = ok
        birth_future[rows] = ok & (dates > np.datetime64(as_of, "D"))
        too_old = ok & (year < as_of.year - MAX_AGE)
        implausible[rows] = is15[rows] & (too_old | birth_future[rows])

    reason = np.full(n, None, dtype=object)
    # One code per row; later assignments win: missing > format > checksum > birth date.
    reason[shaped & ~checksum_bad & birth_future] = ID_BIRTH_FUTURE
    reason[implausible] = ID_UPGRADE_IMPLAUSIBLE
    reason[shaped & ~checksum_bad & ~birth_ok] = ID_BIRTH_INVALID
    reason[checksum_bad] = ID_CHECKSUM
    reason[bad_format] = ID_FORMAT
    reason[damaged] = ID_SPREADSHEET_DAMAGED
    reason[missing] = ID_MISSING

    # An implausible upgrade keeps its number (a contract may keep the row, flagged); the rest do not.
    good = shaped & ~checksum_bad & birth_ok & (~birth_future | implausible)
    full = np.zeros((n, 18), dtype=np.uint8)
    full[good, :17] = first17[good]
    full[good, 17] = computed[good]
    id_number = arrow_to_series(strings_from_chars(full, good), raw.index)

    fix = join_flags([*fixes.items(), (FIX_UPGRADED_15, is15), (FIX_UPGRADED_15_1800S, centenarian)], n)
    return pd.DataFrame(
        {
            "id_number": id_number,
            "id_fix": pd.Series(fix, index=raw.index, dtype=_STRING).replace("", pd.NA),
            "id_reason": pd.Series(reason, index=raw.index, dtype=_STRING),
        },
        index=raw.index,
    )
