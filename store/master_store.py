"""The master store's import path the stages and tools use: the facade and the master columns.

The store itself lives in store/ (facade, one backend per database, tables from schemas/master.yaml).
"""

from __future__ import annotations

from core.settings import Settings
from store.facade import MasterStore, MergeLike
from store.frames import as_master
from store.schema import (
    ATTRIBUTES,
    BATCH_COLUMNS,
    CONFLICT_FIELDS,
    MASTER_COLUMNS,
    SOURCE_ORDER,
    metadata,
    person,
)
from transforms.merge import SOURCE_CODES

__all__ = [
    "ATTRIBUTES",
    "BATCH_COLUMNS",
    "CONFLICT_FIELDS",
    "MASTER_COLUMNS",
    "SOURCE_CODES",
    "SOURCE_ORDER",
    "MasterStore",
    "MergeLike",
    "as_master",
    "open_store",
    "metadata",
    "person",
]


def open_store(settings: Settings) -> MasterStore:
    """The master store the configuration names."""
    return MasterStore(settings.expand(settings.master_url))
