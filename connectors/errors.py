"""One error type for every transport, so callers and logs say which source and where."""

from __future__ import annotations


class ConnectorError(RuntimeError):
    """A pull failed: names the source, the transport, the object (table, file, page) and what was expected."""

    def __init__(self, source: str, transport: str, where: str, problem: str) -> None:
        super().__init__(f"[{source} via {transport}] {where}: {problem}")
        self.source = source
        self.transport = transport
        self.where = where
