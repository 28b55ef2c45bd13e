"""The master store's tables, built from schemas/master.yaml (the master record, conflicts, ID changes)
and from the store's own history columns (versions, decisions, runs).

The schema belongs to Alembic (store/migrations): these are the models the migrated database must agree
with, and a test compares the two, so a change to schemas/master.yaml without its migration fails.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from core.master_schema import MasterSchema, Record, master_schema, parse_sql

_SQL_TYPES: dict[str, type[sa.types.TypeEngine[Any]]] = {
    "String": sa.String,
    "Text": sa.Text,
    "Date": sa.Date,
    "Boolean": sa.Boolean,
    "SmallInteger": sa.SmallInteger,
    "Integer": sa.Integer,
    "BigInteger": sa.BigInteger,
    "Float": sa.Float,
}


def sql_type(spec: str) -> sa.types.TypeEngine[Any]:
    """`String(18)` -> sa.String(18): a whitelisted name and a length, never evaluated text."""
    name, length = parse_sql(spec)
    kind = _SQL_TYPES[name]
    return sa.String(length) if kind is sa.String else kind()


def _master_columns(schema: MasterSchema, with_id: bool = True) -> list[sa.Column[Any]]:
    """The merged record's columns (MergeResult.master), shared by person and person_version."""
    kinds = {**schema.attribute_columns, **schema.provenance_columns}
    cols = []
    for name, spec in schema.sql_types().items():
        if name == schema.key.name:
            if with_id:
                cols.append(sa.Column(name, sql_type(spec), primary_key=True))
            continue
        # a flag is never unknown: the merge fills a missing one with false
        cols.append(sa.Column(name, sql_type(spec), nullable=kinds[name] != "flag"))
    return cols


def _record_table(name: str, metadata: sa.MetaData, record: Record) -> sa.Table:
    """A record's table: its key fields first, then the other fields, then the store's state columns."""
    fields = [f for f in record.fields if f.key] + [f for f in record.fields if not f.key]
    columns = [
        sa.Column(f.name, sql_type(f.sql), primary_key=f.key, nullable=not (f.key or f.required))
        for f in (*fields, *record.state)
    ]
    indexes = [sa.Index(index, column) for index, column in record.indexes.items()]
    return sa.Table(name, metadata, *columns, *indexes)


@dataclass(frozen=True)
class Tables:
    """The store's models: `metadata` (what the migrations create) and the `person` view apart."""

    metadata: sa.MetaData
    person: sa.Table
    person_version: sa.Table
    id_change: sa.Table
    conflict: sa.Table
    decision_version: sa.Table
    run: sa.Table


def build_tables(schema: MasterSchema) -> Tables:
    """The store's tables for a master schema (the shipped one below; tests build others)."""
    metadata = sa.MetaData()
    # The current master: a view over the open, not-removed versions (migration 0002), so it is
    # described apart from the tables the migrations create.
    person = sa.Table(
        "person",
        sa.MetaData(),
        *_master_columns(schema),
        sa.Column("valid_from", sa.Date, nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("run_id", sa.String(64), nullable=False),
    )
    person_version = sa.Table(
        "person_version",
        metadata,
        sa.Column(schema.key.name, sql_type(schema.key.sql), primary_key=True),
        sa.Column("version", sa.Integer, primary_key=True),
        sa.Column("valid_from", sa.Date, nullable=False),
        sa.Column("valid_to", sa.Date),
        sa.Column("caused_by", sa.Text),
        sa.Column("run_id", sa.String(64), nullable=False),
        sa.Column("removed", sa.Boolean, nullable=False),
        *_master_columns(schema, with_id=False),
    )
    id_change = _record_table("id_change", metadata, schema.id_change)
    conflict = _record_table("conflict", metadata, schema.conflict)
    # One row per change of a person's decision for a service (migration 0003): open while valid_to is
    # null; run_id opened it, closed_run closed it (a retried run undoes exactly its own writes by these).
    decision_version = sa.Table(
        "decision_version",
        metadata,
        sa.Column("id_number", sa.String(18), primary_key=True),
        sa.Column("service", sa.String(64), primary_key=True),
        sa.Column("version", sa.Integer, primary_key=True),
        sa.Column("valid_from", sa.Date, nullable=False),
        sa.Column("valid_to", sa.Date),
        sa.Column("period", sa.String(7), nullable=False),
        sa.Column("eligible", sa.Boolean, nullable=False),
        sa.Column("amount", sa.Float, nullable=False),
        sa.Column("reasons", sa.String(256), nullable=False),
        sa.Column("policy", sa.String(64), nullable=False),
        sa.Column("policy_version", sa.String(32), nullable=False),
        sa.Column("policy_hash", sa.String(64), nullable=False),
        sa.Column("caused_by", sa.Text),
        sa.Column("run_id", sa.String(64), nullable=False),
        sa.Column("closed_run", sa.String(64)),
    )
    run = sa.Table(
        "run",
        metadata,
        sa.Column("run_id", sa.String(64), primary_key=True),
        sa.Column("as_of", sa.Date),
        sa.Column("persons", sa.Integer),
        sa.Column("conflicts", sa.Integer),
        sa.Column("decisions", sa.Integer),
        sa.Column("master_written_at", sa.String(32)),
        sa.Column("decisions_written_at", sa.String(32)),
        sa.Column("mode", sa.String(16)),
        sa.Column("scope", sa.Integer),
        sa.Column("written", sa.Integer),
        sa.Column("batches", sa.Text),
        sa.Column("decisions_written", sa.Integer),
        sa.Column("decisions_sha256", sa.String(64)),
    )
    return Tables(metadata, person, person_version, id_change, conflict, decision_version, run)


SCHEMA = master_schema()
_TABLES = build_tables(SCHEMA)
metadata = _TABLES.metadata
person = _TABLES.person
person_version = _TABLES.person_version
id_change = _TABLES.id_change
conflict = _TABLES.conflict
decision_version = _TABLES.decision_version
run = _TABLES.run

SOURCE_ORDER = tuple(SCHEMA.sources)
BATCH_COLUMNS = tuple(f"{s}_batch" for s in SOURCE_ORDER)
ATTRIBUTES = tuple(SCHEMA.attribute_columns)
MASTER_COLUMNS = (*ATTRIBUTES, *SCHEMA.provenance_columns)
CONFLICT_KEY = SCHEMA.conflict.key
CONFLICT_FIELDS = SCHEMA.conflict.columns  # the merge's conflict record, stored as it comes
CONFLICT_STATE = SCHEMA.conflict.state_columns
ID_CHANGE_FIELDS = SCHEMA.id_change.columns
