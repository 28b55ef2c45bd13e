"""The master file's schema (schemas/master.yaml) as a typed model: the one declaration of its columns.

The merge's columns, the default precedence and the store's tables are derived from it, so a new
attribute is one line in the file (plus the migration that adds its column to the store). Kept free of
pandas and SQLAlchemy so that loading the settings can use it; the SQL type is checked here as text
(`String(18)`, `Date`, ...) and turned into a SQLAlchemy type by the store.
"""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from core.config_errors import load_declaration

_CODE = Path(__file__).resolve().parents[1]
# in the checkout, or beside the code of an installed wheel (lianban_files/, see pyproject.toml)
MASTER_SCHEMA_PATH = (
    (_CODE if (_CODE / "schemas" / "master.yaml").is_file() else _CODE / "lianban_files")
    / "schemas"
    / "master.yaml"
)

Kind = Literal["string", "date", "int", "float", "flag"]
# SQL types a column may name; String takes a length, the others none.
SQL_TYPES = ("String", "Text", "Date", "Boolean", "SmallInteger", "Integer", "BigInteger", "Float")
_SQL = re.compile(r"^(?P<name>[A-Za-z]+)(?:\((?P<length>[1-9][0-9]*)\))?$")


class MasterSchemaError(ValueError):
    """schemas/master.yaml is missing or malformed."""


def parse_sql(spec: str) -> tuple[str, int | None]:
    """`String(18)` -> ("String", 18); `Date` -> ("Date", None). Raises ValueError on anything else."""
    found = _SQL.match(spec)
    if not found or found["name"] not in SQL_TYPES:
        raise ValueError(
            f"sql type {spec!r} is not one of {list(SQL_TYPES)} (String with a length: String(16))"
        )
    length = int(found["length"]) if found["length"] else None
    if (found["name"] == "String") != (length is not None):
        raise ValueError(f"sql type {spec!r}: String needs a length (String(16)); other types take none")
    return found["name"], length


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _Typed(_Strict):
    sql: str

    @field_validator("sql")
    @classmethod
    def _known_sql(cls, value: str) -> str:
        parse_sql(value)
        return value


class KeyColumn(_Typed):
    name: str
    kind: Kind


class Attribute(_Typed):
    """One master attribute: how the merge holds it, how the store keeps it, who may say it."""

    name: str
    kind: Kind
    carriers: list[str] = Field(min_length=1, description="departments whose staged rows carry it")
    precedence: list[str] = Field(min_length=1, description="default order the merge asks them in")

    @model_validator(mode="after")
    def _precedence_among_carriers(self) -> Attribute:
        if len(set(self.precedence)) != len(self.precedence):
            raise ValueError(f"precedence {self.precedence} repeats a department")
        mute = [s for s in self.precedence if s not in self.carriers]
        if mute:
            raise ValueError(
                f"precedence names {mute}, which do not carry {self.name} (carriers {self.carriers})"
            )
        return self


class ProvenanceColumn(_Strict):
    kind: Kind
    sql: str | None = None

    @field_validator("sql")
    @classmethod
    def _known_sql(cls, value: str | None) -> str | None:
        if value is not None:
            parse_sql(value)
        return value


class Provenance(_Strict):
    sources: ProvenanceColumn
    batch: ProvenanceColumn
    record_hash: ProvenanceColumn


class RecordField(_Typed):
    name: str
    key: bool = False
    required: bool = False


class Record(_Strict):
    """A record the merge reports (fields) and the store keeps with its own lifecycle columns (state)."""

    fields: list[RecordField] = Field(min_length=1)
    state: list[RecordField] = Field(default_factory=list)
    indexes: dict[str, str] = Field(default_factory=dict, description="index name -> column")
    types: list[str] | None = None

    @model_validator(mode="after")
    def _consistent(self) -> Record:
        names = [f.name for f in (*self.fields, *self.state)]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"field names repeat: {dupes}")
        if not any(f.key for f in self.fields):
            raise ValueError("at least one field must be `key: true`")
        unknown = sorted(set(self.indexes.values()) - set(names))
        if unknown:
            raise ValueError(f"indexes name unknown column(s) {unknown}")
        return self

    @property
    def columns(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.fields)

    @property
    def key(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.fields if f.key)

    @property
    def state_columns(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.state)


class IdChanges(_Strict):
    """The department that reports reissued ID numbers, and its column naming the former number."""

    source: str
    column: str


class MasterSchema(_Strict):
    """schemas/master.yaml."""

    version: int
    sources: list[str] = Field(min_length=1)
    source_codes: dict[str, str]
    holders: str = Field(description="the department whose persons are the master file's rows")
    id_changes: IdChanges
    key: KeyColumn
    attributes: list[Attribute] = Field(min_length=1)
    provenance: Provenance
    conflict: Record
    id_change: Record
    path: Path | None = Field(None, exclude=True, description="the file it was read from, for messages")

    @model_validator(mode="after")
    def _consistent(self) -> MasterSchema:
        names = [self.key.name, *(a.name for a in self.attributes), *self.provenance_columns]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"column names repeat across key, attributes and provenance: {dupes}")
        if sorted(self.source_codes.values()) != sorted(self.sources) or any(
            len(c) != 1 or c == "-" for c in self.source_codes
        ):
            raise ValueError(
                f"source_codes must give each of {self.sources} one character other than '-', "
                f"found {self.source_codes}"
            )
        for role, source in (("holders", self.holders), ("id_changes.source", self.id_changes.source)):
            if source not in self.sources:
                raise ValueError(f"{role}: {source!r} is not among sources {self.sources}")
        for a in self.attributes:
            unknown = [s for s in a.carriers if s not in self.sources]
            if unknown:
                raise ValueError(
                    f"attribute {a.name}: carriers {unknown} are not among sources {self.sources}"
                )
        return self

    # -- what the merge and the store read ------------------------------------------------------------

    @property
    def attribute_columns(self) -> dict[str, str]:
        """The key, then every attribute: column -> kind (what record_hash covers)."""
        return {self.key.name: self.key.kind, **{a.name: a.kind for a in self.attributes}}

    @property
    def provenance_columns(self) -> dict[str, str]:
        """`sources`, one `<source>_batch` per department, `record_hash`: column -> kind."""
        p = self.provenance
        batches = {f"{s}_batch": p.batch.kind for s in self.sources}
        return {"sources": p.sources.kind, **batches, "record_hash": p.record_hash.kind}

    @property
    def carriers(self) -> dict[str, tuple[str, ...]]:
        return {a.name: tuple(a.carriers) for a in self.attributes}

    @property
    def default_precedence(self) -> dict[str, list[str]]:
        return {a.name: list(a.precedence) for a in self.attributes}

    def sql_types(self) -> dict[str, str]:
        """Master column -> SQL type spec, in column order (`sources` is one character per attribute)."""
        p = self.provenance
        out = {self.key.name: self.key.sql, **{a.name: a.sql for a in self.attributes}}
        out["sources"] = p.sources.sql or f"String({len(self.attributes)})"
        out.update({f"{s}_batch": p.batch.sql or "Text" for s in self.sources})
        out["record_hash"] = p.record_hash.sql or "BigInteger"
        return out


def load_master_schema(path: str | Path = MASTER_SCHEMA_PATH) -> MasterSchema:
    """Read and validate the master schema; errors name the file, the entry and the field."""
    return load_declaration(
        path, MasterSchema, MasterSchemaError, "master schema", "sources, key, attributes"
    )


@cache
def master_schema() -> MasterSchema:
    """The shipped schemas/master.yaml (read once per process)."""
    return load_master_schema()


def schema_at(path: str | Path) -> MasterSchema:
    """The master schema a config names: the shipped one, or another file (read once per version)."""
    path = Path(path).resolve()
    if path == MASTER_SCHEMA_PATH.resolve():
        return master_schema()
    try:
        stamp = path.stat().st_mtime_ns
    except FileNotFoundError as exc:
        raise MasterSchemaError(f"{path}: master schema file not found") from exc
    return _schema_version(path, stamp)


@cache
def _schema_version(path: Path, stamp: int) -> MasterSchema:
    return load_master_schema(path)
