"""Display masking of personal data (docs/domain.md, Personal information): first 6 and last 4 of an ID number."""

from __future__ import annotations

import pandas as pd


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
    long = text.str.len() > 10
    masked = text.str[:6] + text.str.len().sub(10).clip(lower=0).map(lambda n: "*" * n) + text.str[-4:]
    return masked.where(long, text.str.replace(r".", "*", regex=True))
