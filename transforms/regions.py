"""County-level address codes (GB/T 2260) an ID number may carry, for the unknown-county warning.

An ID keeps the address code it was issued with, so the list must hold abolished codes too.
python-stdnum's `cn/loc` table has every code since 1980 with the years it was in use; codes created
after the installed table was compiled (330113 临平区 and 330114 钱塘区, 2021) come from the config's
`county_codes_added`. An unknown code is only ever a warning (docs/domain.md, ID numbers).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from functools import cache
from typing import Any

import numpy as np
from stdnum import numdb

CODE_SPACE = 1_000_000  # six digits


def _walk(prefixes: list[Any], head: str = "") -> Iterator[str]:
    """Every full code in a python-stdnum prefix tree: (length, low, high, properties, children)."""
    for length, low, high, _props, children in prefixes:
        for value in range(int(low), int(high) + 1):
            code = head + str(value).zfill(length)
            if children:
                yield from _walk(children, code)
            else:
                yield code


@cache
def national_codes() -> frozenset[str]:
    """Every county-level code in python-stdnum's table, current and abolished."""
    return frozenset(code for code in _walk(numdb.get("cn/loc").prefixes) if len(code) == 6)


@cache
def _table(added: tuple[str, ...]) -> np.ndarray:
    known = np.zeros(CODE_SPACE, dtype=bool)
    known[np.fromiter((int(c) for c in national_codes() | set(added)), dtype=np.int64)] = True
    known.flags.writeable = False
    return known


def known_county_table(added: Sequence[str] = ()) -> np.ndarray:
    """Boolean look-up indexed by the six-digit code: True where the code is a known county."""
    return _table(tuple(sorted(added)))
