"""Row hashes of a frame equal to pandas' `hash_pandas_object(frame, index=False)`, text hashed from Arrow.

pandas hashes a text value by SipHash-2-4 of its UTF-8 bytes (key "0123456789123456"), one Python
string object at a time; for the master's unique numbers and names that is most of a record hash.
Here SipHash runs as numpy operations over the Arrow buffers, a block of eight bytes of every value
at a time, and the other columns go through pandas' own `hash_array`; columns are combined as pandas
combines them (CPython's tuple hash). The values stay pandas' (stored record hashes do not change),
which tests/unit/test_hashing.py checks against pandas itself.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

_KEY = b"0123456789123456"  # pandas' default hash_key
_K0, _K1 = (np.uint64(int.from_bytes(_KEY[i : i + 8], "little")) for i in (0, 8))
_NULL = np.uint64(np.iinfo(np.uint64).max)  # what pandas gives a missing text value
_SAMPLE = 1024  # values whose distinctness decides whether a column is hashed through its dictionary


def _rotl(x: np.ndarray, bits: int) -> np.ndarray:
    return (x << np.uint64(bits)) | (x >> np.uint64(64 - bits))


def _rounds(v: list[np.ndarray], times: int) -> None:
    """SipRound, `times` times, on a copy of the state (the caller may keep the old one)."""
    v0, v1, v2, v3 = (x.copy() for x in v)
    for _ in range(times):
        v0 += v1
        v1 = _rotl(v1, 13)
        v1 ^= v0
        v0 = _rotl(v0, 32)
        v2 += v3
        v3 = _rotl(v3, 16)
        v3 ^= v2
        v0 += v3
        v3 = _rotl(v3, 21)
        v3 ^= v0
        v2 += v1
        v1 = _rotl(v1, 17)
        v1 ^= v2
        v2 = _rotl(v2, 32)
    v[:] = [v0, v1, v2, v3]


def _words(data: np.ndarray, starts: np.ndarray, count: np.ndarray) -> np.ndarray:
    """The little-endian uint64 of the `count` (0..8) bytes at each of `starts` (`data` padded by 8)."""
    n = len(starts)
    step = int(starts[1] - starts[0]) if n > 1 else 1
    if n and step > 0 and starts[-1] - starts[0] == step * (n - 1) and (np.diff(starts) == step).all():
        # evenly spaced (values of one width, such as ID numbers): one strided read, no gather
        word = np.ndarray((n,), dtype="<u8", buffer=data, offset=int(starts[0]), strides=(step,)).copy()
    else:
        word = np.zeros(n, dtype=np.uint64)
        for j in range(8):
            word |= data[starts + j].astype(np.uint64) << np.uint64(8 * j)
    keep = np.where(count >= 8, ~np.uint64(0), (np.uint64(1) << (8 * count).astype(np.uint64)) - np.uint64(1))
    return word & keep


def _siphash(arr: pa.Array) -> np.ndarray:
    """SipHash-2-4 of each value's UTF-8 bytes (nulls hashed as empty; the caller masks them)."""
    arr = arr.cast(pa.large_string())
    n = len(arr)
    _, offsets_buf, data_buf = arr.buffers()
    offsets = np.frombuffer(offsets_buf, dtype=np.int64, count=n + 1, offset=arr.offset * 8)
    raw = np.frombuffer(data_buf, dtype=np.uint8) if data_buf is not None else np.zeros(0, np.uint8)
    data = np.concatenate([raw[: offsets[-1]], np.zeros(8, dtype=np.uint8)])
    starts, lengths = offsets[:-1], np.diff(offsets)
    v = [
        np.full(n, _K0 ^ np.uint64(0x736F6D6570736575)),
        np.full(n, _K1 ^ np.uint64(0x646F72616E646F6D)),
        np.full(n, _K0 ^ np.uint64(0x6C7967656E657261)),
        np.full(n, _K1 ^ np.uint64(0x7465646279746573)),
    ]
    full = lengths // 8
    for block in range(int(full.max()) if n else 0):
        at = np.flatnonzero(full > block)  # the values this long: all of an ID column, a few long names
        m = _words(data, starts[at] + 8 * block, np.full(len(at), 8))
        state = [x[at] for x in v]
        state[3] ^= m
        _rounds(state, 2)
        state[0] ^= m
        for x, y in zip(v, state, strict=True):
            x[at] = y
    last = _words(data, starts + 8 * full, lengths % 8) | (lengths.astype(np.uint64) << np.uint64(56))
    v[3] = v[3] ^ last
    _rounds(v, 2)
    v[0] = v[0] ^ last
    v[2] = v[2] ^ np.uint64(0xFF)
    _rounds(v, 4)
    return v[0] ^ v[1] ^ v[2] ^ v[3]


def text_hashes(values: pd.Series) -> np.ndarray:
    """pandas' hash_array of a text column: SipHash then its 64-bit mix; nulls get the all-ones value."""
    arr = pa.array(values.array)
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    # each distinct value hashed once (as pandas does) unless the values look distinct (numbers, names):
    # encoding those costs more than hashing them all
    sample = arr.slice(0, _SAMPLE)
    distinct = len(sample) and pc.count_distinct(sample, mode="all").as_py() > len(sample) // 2
    encoded = None if distinct else pc.dictionary_encode(arr)
    with np.errstate(over="ignore"):
        h = _siphash(arr if encoded is None else encoded.dictionary)
        h ^= h >> np.uint64(30)
        h *= np.uint64(0xBF58476D1CE4E5B9)
        h ^= h >> np.uint64(27)
        h *= np.uint64(0x94D049BB133111EB)
        h ^= h >> np.uint64(31)
    if encoded is None:
        out, nulls = h, arr
    else:
        indices = encoded.indices
        out = h.take(indices.fill_null(0).to_numpy()) if len(h) else np.zeros(len(arr), dtype=np.uint64)
        nulls = indices
    if nulls.null_count:
        out[np.asarray(nulls.is_null().to_numpy(zero_copy_only=False), dtype=bool)] = _NULL
    return out


def row_hashes(frame: pd.DataFrame) -> np.ndarray:
    """hash_pandas_object(frame, index=False) as uint64: text columns by text_hashes, the rest by pandas."""
    mult = np.uint64(1000003)
    out = np.full(len(frame), 0x345678, dtype=np.uint64)
    count = len(frame.columns)
    with np.errstate(over="ignore"):
        for i, (_, column) in enumerate(frame.items()):
            if isinstance(column.dtype, pd.StringDtype) and column.dtype.storage == "pyarrow":
                h = text_hashes(column)
            else:
                h = pd.util.hash_pandas_object(column, index=False).to_numpy(dtype=np.uint64)
            out ^= h
            out *= mult
            mult += np.uint64(82520 + 2 * (count - i))
        out += np.uint64(97531)
    return out
