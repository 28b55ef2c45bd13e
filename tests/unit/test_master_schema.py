"""schemas/master.yaml as the one declaration of the master record: what derives from it, and how a
malformed file is reported."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from core import precedence
from core.contracts import load_contract
from core.master_schema import MASTER_SCHEMA_PATH, MasterSchemaError, load_master_schema, parse_sql
from transforms import merge


def _raw() -> dict:
    return yaml.safe_load(MASTER_SCHEMA_PATH.read_text(encoding="utf-8"))


def _write(tmp_path: Path, raw: dict) -> Path:
    path = tmp_path / "master.yaml"
    path.write_text(yaml.safe_dump(raw, allow_unicode=True), encoding="utf-8")
    return path


def test_the_merge_and_the_precedence_read_their_columns_from_the_yaml() -> None:
    raw = _raw()
    names = [a["name"] for a in raw["attributes"]]
    assert list(merge.ATTRIBUTE_COLUMNS) == [raw["key"]["name"], *names]
    assert [merge.ATTRIBUTE_COLUMNS[a["name"]] for a in raw["attributes"]] == [
        a["kind"] for a in raw["attributes"]
    ]
    assert list(merge.PROVENANCE_COLUMNS) == [
        "sources",
        *(f"{s}_batch" for s in raw["sources"]),
        "record_hash",
    ]
    assert {a["name"]: a["precedence"] for a in raw["attributes"]} == precedence.DEFAULT_PRECEDENCE
    assert {a["name"]: tuple(a["carriers"]) for a in raw["attributes"]} == precedence.CARRIERS
    assert tuple(f["name"] for f in raw["conflict"]["fields"]) == merge.CONFLICT_COLUMNS
    assert tuple(f["name"] for f in raw["id_change"]["fields"]) == merge.ID_CHANGE_COLUMNS
    assert raw["source_codes"] == merge.SOURCE_CODES


def test_the_staged_columns_are_the_contracts_columns() -> None:
    for source in merge.SOURCES:
        contract = load_contract(merge.CONTRACTS_DIR / f"{source}.yaml")
        staged = {**merge.STAGED_COLUMNS[source], **merge.OPTIONAL_COLUMNS.get(source, {})}
        assert set(staged) == set(contract.names), source
        assert list(staged)[0] == "id_number"
    assert merge.STAGED_COLUMNS["cdpf"]["category"] == "int"  # a code column with integer codes
    assert merge.STAGED_COLUMNS["police"]["hukou_status"] == "string"  # with text codes
    assert merge.STAGED_COLUMNS["civil"]["dibao_standard"] == "float"
    assert "former_id_number" not in merge.STAGED_COLUMNS["police"]  # older batches may lack it


def test_one_more_attribute_line_is_one_more_master_column(tmp_path: Path) -> None:
    raw = _raw()
    raw["attributes"].append(
        {
            "name": "village",
            "kind": "string",
            "sql": "String(64)",
            "carriers": ["cdpf"],
            "precedence": ["cdpf"],
        }
    )
    schema = load_master_schema(_write(tmp_path, raw))
    assert list(schema.attribute_columns)[-1] == "village"
    assert schema.sql_types()["village"] == "String(64)"
    assert schema.sql_types()["sources"] == f"String({len(raw['attributes'])})"  # one code per attribute
    assert schema.default_precedence["village"] == ["cdpf"]


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            lambda r: r["attributes"][1].update(sql="Varchar(8)"),
            r"attributes\[1\] \(gender\)\.sql: .*'Varchar\(8\)'",
        ),
        (
            lambda r: r["attributes"][1].update(sql="String"),
            r"attributes\[1\] \(gender\)\.sql: .*needs a length",
        ),
        (
            lambda r: r["attributes"][4].update(precedence=["cdpf"]),
            r"attributes\[4\] \(hukou_status\): .*\['cdpf'\], which do not carry hukou_status",
        ),
        (
            lambda r: r["attributes"][0].update(carriers=["police", "cdpf", "tax"]),
            r"carriers \['tax'\] are not among sources",
        ),
        (lambda r: r["attributes"][0].update(kind="text"), r"attributes\[0\] \(name\)\.kind"),
        (lambda r: r["attributes"].append(dict(r["attributes"][0])), r"column names repeat .*\['name'\]"),
        (lambda r: r["source_codes"].pop("H"), r"source_codes must give each of"),
        (
            lambda r: r["conflict"]["indexes"].update(ix_x="nowhere"),
            r"conflict: .*indexes name unknown column\(s\) \[.nowhere.\]",
        ),
    ],
)
def test_a_malformed_schema_names_the_file_the_entry_and_the_field(
    tmp_path: Path, change, expected: str
) -> None:
    raw = _raw()
    change(raw)
    path = _write(tmp_path, raw)
    with pytest.raises(MasterSchemaError, match=expected) as caught:
        load_master_schema(path)
    assert str(caught.value).startswith(str(path))


def test_sql_types_are_a_whitelist_never_evaluated() -> None:
    assert parse_sql("String(18)") == ("String", 18)
    assert parse_sql("Date") == ("Date", None)
    for bad in ("String(0)", "Date(3)", "__import__('os')", "sa.String(8)", "String(8); DROP"):
        with pytest.raises(ValueError):
            parse_sql(bad)
