"""The master store: a facade (MasterStore) over one backend per database, with tables built from
schemas/master.yaml.

- schema.py: the SQLAlchemy models (master record, conflicts and ID changes from the YAML; versions,
  decisions and runs of the store's own);
- facade.py: MasterStore, what the stages call;
- backends/: the small interface (base.py) and one class per database (sqlite.py, postgres.py);
- frames.py, convert.py: vectorised checks, provenance and type conversions shared by them.
"""

from __future__ import annotations

from store.facade import MasterStore

__all__ = ["MasterStore"]
