"""Display masking of personal data (docs/domain.md, Personal information): first 6 and last 4 of an ID number."""

from __future__ import annotations

import re
from typing import Any

import pandas as pd

# One rule for every ID-shaped token in free text: 15 to 20 digits (an X allowed after the first), which
# covers legacy 15-digit numbers, 18-character numbers, 20-character certificate numbers and numbers a
# spreadsheet damaged. A hex digest (SHA-256 and the like: 32+ hex characters with a letter) is matched
# first as a whole token, so the digits inside a checksum are left alone.
ID_TOKEN = re.compile(
    r"(?P<digest>\b(?=[0-9]*[a-fA-F])[0-9a-fA-F]{32,}\b)|(?<![0-9Xx*])(?P<id>\d[0-9Xx]{13,18}[0-9Xx])(?![0-9Xx])"
)


def mask_id(value: str | None) -> str:
    if not value:
        return ""
    text = str(value)
    if len(text) <= 10:
        return "*" * len(text)
    return text[:6] + "*" * (len(text) - 10) + text[-4:]


def mask_ids(values: pd.Series) -> pd.Series:
    """Vectorised mask_id for a column of ID numbers."""
    text = values.astype("string").fillna("")
    # string operations only: the middle starred by a regex, so it works on any string storage (with
    # pyarrow strings, adding a mapped column of lengths to text fails)
    middle = text.str.slice(6, -4).str.replace(r".", "*", regex=True)
    masked = text.str.slice(0, 6) + middle + text.str.slice(-4)
    return masked.where(text.str.len() > 10, text.str.replace(r".", "*", regex=True))


def _mask_match(match: re.Match[str]) -> str:
    return match.group(0) if match.group("digest") else mask_id(match.group("id"))


def mask_text(text: str) -> str:
    """Every ID-shaped token in a text masked (first 6 and last 4 kept)."""
    return ID_TOKEN.sub(_mask_match, text)


def mask_structure(value: Any) -> Any:
    """mask_text over a JSON-like structure, keys and values, recursively (reports, logs, samples)."""
    if isinstance(value, str):
        return mask_text(value)
    if isinstance(value, dict):
        return {mask_structure(k) if isinstance(k, str) else k: mask_structure(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [mask_structure(v) for v in value]
    return value
