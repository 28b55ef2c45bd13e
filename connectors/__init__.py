"""Transports (sql, folder, sftp, rest) on one small protocol: pull one batch for a window and land it.

A source's `transport:` in the config picks its puller from `TRANSPORTS`; each puller receives the
source's contract, so what a transport needs beyond its config (the SQL bookmark order, the REST
required fields) comes from the department's declaration, not from code naming the department.
Modules are imported on use, so reading the registry costs nothing.
"""

from __future__ import annotations

from datetime import date
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from connectors.landing import Landed
    from core.contracts import SourceContract
    from core.storage import Storage


class Puller(Protocol):
    """Land one batch of `source` for the run date `as_of`."""

    def __call__(
        self, storage: Storage, source: str, config: Any, as_of: date, contract: SourceContract
    ) -> Landed: ...


def _sql(storage: Storage, source: str, config: Any, as_of: date, contract: SourceContract) -> Landed:
    from connectors.sql import pull_sql

    native = {c.name: c.native for c in contract.columns}
    return pull_sql(storage, source, config, as_of, order_by=[native["updated_at"], native["id_number"]])


def _folder(storage: Storage, source: str, config: Any, as_of: date, contract: SourceContract) -> Landed:
    from connectors.folder import pull_folder

    return pull_folder(storage, source, config, as_of)


def _sftp(storage: Storage, source: str, config: Any, as_of: date, contract: SourceContract) -> Landed:
    from connectors.sftp import pull_sftp

    return pull_sftp(storage, source, config, as_of)


def _rest(storage: Storage, source: str, config: Any, as_of: date, contract: SourceContract) -> Landed:
    from connectors.rest import pull_rest

    required = [c.native for c in contract.columns if c.required]
    updated_at = next((c.native for c in contract.columns if c.name == "updated_at"), None)
    return pull_rest(storage, source, config, as_of, required, updated_at)


# transport (the config's `transport:` value) -> its puller
TRANSPORTS: dict[str, Puller] = {"sql": _sql, "folder": _folder, "sftp": _sftp, "rest": _rest}


def puller(transport: str) -> Puller:
    """The puller of a configured transport; an unknown name says which ones exist."""
    try:
        return TRANSPORTS[transport]
    except KeyError:
        raise ValueError(f"unknown transport {transport!r}; expected one of {sorted(TRANSPORTS)}") from None
