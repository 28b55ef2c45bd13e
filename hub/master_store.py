"""The master store's import path the stages and tools use: the facade and the master columns.

The store itself lives in hub/store/ (facade, one backend per database, tables from schemas/master.yaml).
"""

from __future__ import annotations

from hub.store.facade import MasterStore, MergeLike
from hub.store.frames import as_master
from hub.store.schema import (
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
    "metadata",
    "person",
]
