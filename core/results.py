"""Typed stage results: what each stage returns, keeps beside its run and the report reads back.

They live in core because the stages write them and reports/ reads them (docs/architecture.md).

A result is a dataclass with its fields named once; `save` writes runs/<run>/<name>.json (the same
JSON as before the results were typed: a field left None is not written) and `load` reads it back,
so the report and the CLI use attributes, never a guess among key names (docs/architecture.md).
The runtime passes `as_json()` through XCom: counts and paths, never data.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Self

from core.storage import Storage, write_json_atomic

log = logging.getLogger(__name__)


@dataclasses.dataclass
class StageResult:
    """Base of the stage results; `NAME` is the file under runs/<run>/ (None: not kept)."""

    NAME: ClassVar[str | None] = None

    def as_json(self) -> dict[str, Any]:
        return {
            k: str(v) if isinstance(v, Path) else v
            for k, v in dataclasses.asdict(self).items()
            if v is not None
        }

    def save(self, storage: Storage, run_id: str) -> Self:
        """Keep the result beside the run, for the report and for auditors."""
        if self.NAME is None:
            raise TypeError(f"{type(self).__name__} is not kept beside the run")
        write_json_atomic(storage.run_dir(run_id) / f"{self.NAME}.json", self.as_json())
        return self

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Self:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})

    @classmethod
    def load(cls, storage: Storage, run_id: str) -> Self | None:
        """The kept result of a run, or None when the stage has not run (or its file is unreadable)."""
        path = storage.run_dir(run_id) / f"{cls.NAME}.json"
        if not path.exists():
            return None
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError:
            log.warning("%s is not valid JSON; left out", path)
            return None
        return cls.from_json(data) if isinstance(data, dict) else None


@dataclass
class MergeResult(StageResult):
    """runs/<run>/merge.json: counts, the batch each source's state ends with, timings; never data."""

    NAME = "merge"
    run_id: str = ""
    as_of: str = ""
    rows: int = 0
    persons: int = 0
    conflicts: int = 0
    conflicts_by_type: dict[str, int] = field(default_factory=dict)
    id_changes: int = 0
    batches: dict[str, str | None] = field(default_factory=dict)  # source -> last batch (None: no data)
    delta_chains: dict[str, list[str]] = field(default_factory=dict)
    missing_sources: list[str] = field(default_factory=list)
    mode: str = "full"  # full | incremental
    scope: int = 0
    written: dict[str, Any] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)


@dataclass
class EligibilityResult(StageResult):
    """runs/<run>/eligibility.json: decisions per service, what the store kept, the guard; never data."""

    NAME = "eligibility"
    run_id: str = ""
    as_of: str = ""
    rows: int = 0
    persons: int = 0
    policy: str = ""
    policy_version: str = ""
    period_in_force: list[str] = field(default_factory=list)
    services: list[dict[str, Any]] = field(
        default_factory=list
    )  # service, title, evaluated, eligible, amount_total
    path: str = ""
    decisions_sha256: str = ""
    policy_sha256: str = ""
    master_as_of: str = ""
    mode: str = "write"  # write | backfill (compared with the decisions in force then, nothing written)
    matches_store: bool | None = None  # backfill only
    written: dict[str, Any] = field(default_factory=dict)
    transitions: dict[str, int] | None = None
    transitions_path: str | None = None
    guard: dict[str, Any] | None = None
    seconds: dict[str, float] = field(default_factory=dict)


@dataclass
class ExchangeResult(StageResult):
    """runs/<run>/exchange.json: the files written (partner, contract, path, rows, SHA-256), never data."""

    NAME = "exchange"
    run_id: str = ""
    rows: int = 0
    files: list[dict[str, Any]] = field(default_factory=list)
    rejects: list[dict[str, Any]] = field(default_factory=list)
    held: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class AuditResult(StageResult):
    """runs/<run>/audit.json: counts per audit, the inputs used or missing, the work lists; never data.
    An audit whose input is missing leaves its figures None (not written)."""

    NAME = "audit"
    run_id: str = ""
    rows: int = 0
    months: list[str] = field(default_factory=list)
    batches: dict[str, str | None] = field(default_factory=dict)
    missing_inputs: list[str] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    rules: dict[str, Any] = field(default_factory=dict)
    work_lists: list[dict[str, Any]] = field(default_factory=list)
    dir: str = ""
    payments: dict[str, dict[str, Any]] | None = None
    fund: dict[str, int] | None = None
    not_delivered: int | None = None
    no_receipt: dict[str, int] | None = None
    needs: dict[str, int] | None = None
    villages: dict[str, Any] | None = None


@dataclass
class DeliverResult(StageResult):
    """runs/<run>/deliver.json: files by outcome, or the failure (kept for the report, which runs after)."""

    NAME = "deliver"
    run_id: str = ""
    rows: int = 0
    sent: int | None = None
    acked: int | None = None
    already: int | None = None
    resent: int | None = None
    failed: int | bool | None = None  # a count; True when the delivery raised
    error: str | None = None


@dataclass
class ReportResult(StageResult):
    """Where the run's report went (not kept beside the run: the report itself is)."""

    run_id: str = ""
    rows: int = 0
    path: str = ""
    json: str = ""
    stale: list[str] = field(default_factory=list)
