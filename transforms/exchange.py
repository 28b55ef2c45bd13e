"""Partner exchange files: what each department gets back, under a contract in schemas/exchange/.

A contract names the partner, the purpose (data minimisation: only the fields the purpose needs),
the no-onward-transfer line, the Chinese headers, the encoding and whether ID numbers go raw or
masked. Every file is written through a temporary name and an atomic rename, then its manifest
(contract, version, run, rows, SHA-256, period), so a partner never sees half a file and can check
what it got. Cells that Excel would run as formulas are neutralised (docs/domain.md, Text).
"""

from __future__ import annotations

import codecs
import hashlib
import logging
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from hub.masking import mask_ids
from hub.storage import Storage, publish_bytes, write_json_atomic

log = logging.getLogger(__name__)

FORMULA_START = r"^[=+\-@\t\r]"
LINE_ENDINGS = {"crlf": "\r\n", "lf": "\n"}
WORK_LISTS = (
    "cdpf",
    "police",
    "civil",
    "hrss",
)  # one open-conflicts dataset per department: conflicts_<dept>
# new / continuing / stop lists of the paying departments, from the run's transitions (transforms.decisions)
DECISION_LISTS = ("decisions_new", "decisions_continuing", "decisions_stop")
DECISION_DATASETS = ("eligible_decisions", *DECISION_LISTS)
DATASETS = (*DECISION_DATASETS, "conflicts", *(f"conflicts_{d}" for d in WORK_LISTS))


class ExchangeError(ValueError):
    """A contract is malformed, or a file cannot be written exactly as contracted."""


@dataclass(frozen=True)
class ExchangeContract:
    """One partner file: who gets it, why, which fields under which headers, how it is encoded."""

    name: str
    version: str
    partner: str
    department: str
    purpose: str
    onward_transfer: str
    dataset: str
    encoding: str
    line_ending: str
    id_mode: str
    file_name: str
    fields: dict[str, str]
    codes: dict[str, dict[str, str]]
    path: Path


@dataclass(frozen=True)
class ExchangeFile:
    """A written exchange file and its manifest."""

    partner: str
    contract: str
    period: str
    path: Path
    manifest: Path
    rows: int
    sha256: str


def load_exchange_contract(path: Path) -> ExchangeContract:
    """Read and check one contract; errors name the file and the key."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ExchangeError(f"{path}: cannot read the exchange contract: {exc}") from exc
    if not isinstance(raw, dict):
        raise ExchangeError(f"{path}: expected a mapping at the top level")

    def text(key: str) -> str:
        value = raw.get(key)
        if value is None or isinstance(value, dict | list) or not str(value).strip():
            raise ExchangeError(f"{path}: key '{key}': expected a non-empty value, found {value!r}")
        return str(value)

    fields = raw.get("fields")
    if not isinstance(fields, dict) or not fields:
        raise ExchangeError(f"{path}: key 'fields': expected a mapping canonical column -> header")
    codes = raw.get("codes") or {}
    if not isinstance(codes, dict) or not all(isinstance(v, dict) for v in codes.values()):
        raise ExchangeError(f"{path}: key 'codes': expected a mapping field -> {{value: label}}")
    unknown = sorted(set(codes) - set(fields))
    if unknown:
        raise ExchangeError(f"{path}: key 'codes': field(s) {unknown} are not in 'fields'")
    if raw.get("format", "csv") != "csv":
        raise ExchangeError(f"{path}: key 'format': expected csv, found {raw.get('format')!r}")
    encoding = text("encoding")
    try:
        codecs.lookup(encoding)
    except LookupError as exc:
        raise ExchangeError(f"{path}: key 'encoding': unknown encoding {encoding!r}") from exc
    id_mode = text("id_mode")
    if id_mode not in ("raw", "masked"):
        raise ExchangeError(f"{path}: key 'id_mode': expected raw or masked, found {id_mode!r}")
    line_ending = str(raw.get("line_ending", "crlf"))
    if line_ending not in LINE_ENDINGS:
        raise ExchangeError(f"{path}: key 'line_ending': expected crlf or lf, found {line_ending!r}")
    dataset = text("dataset")
    if dataset not in DATASETS:
        raise ExchangeError(f"{path}: key 'dataset': expected one of {list(DATASETS)}, found {dataset!r}")
    return ExchangeContract(
        name=text("contract"),
        version=text("version"),
        partner=text("partner"),
        department=str(raw.get("department", "")),
        purpose=text("purpose"),
        onward_transfer=text("onward_transfer"),
        dataset=dataset,
        encoding=encoding,
        line_ending=line_ending,
        id_mode=id_mode,
        file_name=text("file_name"),
        fields={str(k): str(v) for k, v in fields.items()},
        codes={str(f): {str(k): str(v) for k, v in m.items()} for f, m in codes.items()},
        path=path,
    )


def load_exchange_contracts(directory: Path) -> list[ExchangeContract]:
    """Every contract in a directory (schemas/exchange), in file-name order."""
    return [load_exchange_contract(p) for p in sorted(Path(directory).glob("*.yaml"))]


# -- datasets ------------------------------------------------------------------------------------------


def money(amount: pd.Series) -> pd.Series:
    """Yuan with exactly two decimals ('345.00'), computed on integer fen so no float noise shows."""
    fen = (pd.to_numeric(amount, errors="coerce").astype("float64") * 100).round()
    sign = pd.Series(np.where(fen < 0, "-", ""), index=amount.index)
    fen = fen.abs()
    whole = (fen // 100).astype("Int64").astype("string")
    cents = (fen % 100).astype("Int64").astype("string").str.zfill(2)
    return (sign + whole + "." + cents).astype("string").where(fen.notna())


def exchange_datasets(
    master: pd.DataFrame,
    decisions: pd.DataFrame,
    conflicts: pd.DataFrame,
    transitions: pd.DataFrame | None = None,
) -> dict[str, pd.DataFrame]:
    """The rows each contract's `dataset` names, in a deterministic order (the decision lists only
    when the run's transitions are given)."""
    from transforms.decisions import delivery_lists

    people = master[["id_number", "name", "hukou_county"]]
    lists: dict[str, pd.DataFrame] = {}
    for name, rows in ({} if transitions is None else delivery_lists(decisions, transitions)).items():
        rows = rows.merge(people, on="id_number", how="left")
        for column in ("amount", "amount_before"):
            if column in rows:
                rows[column] = money(rows[column])
        lists[name] = rows
    eligible = decisions[decisions["eligible"].astype(bool)]
    eligible = eligible.merge(people, on="id_number", how="left")
    eligible = eligible.assign(amount=money(eligible["amount"]))
    eligible = eligible.sort_values(["id_number", "service"], kind="stable").reset_index(drop=True)
    open_conflicts = conflicts[conflicts["status"] == "open"].merge(people, on="id_number", how="left")
    open_conflicts = open_conflicts.sort_values(
        ["hukou_county", "id_number", "conflict_type", "source_a", "source_b"],
        kind="stable",
        na_position="last",
    ).reset_index(drop=True)
    department = (
        open_conflicts["department"]
        if "department" in open_conflicts
        else pd.Series(pd.NA, index=open_conflicts.index)
    )
    work_lists = {
        f"conflicts_{d}": open_conflicts[(department == d).fillna(False).astype(bool)].reset_index(drop=True)
        for d in WORK_LISTS
    }
    return {"eligible_decisions": eligible, "conflicts": open_conflicts, **work_lists, **lists}


# -- cells ---------------------------------------------------------------------------------------------


def as_text(series: pd.Series) -> pd.Series:
    """A column as text cells: dates YYYY-MM-DD, floats with 2 decimals, nulls empty."""
    if pd.api.types.is_datetime64_any_dtype(series):
        return series.dt.strftime("%Y-%m-%d").astype("string").fillna("")
    if pd.api.types.is_float_dtype(series):
        return money(series).fillna("")
    return series.astype("string").fillna("")


def apply_codes(cells: pd.Series, labels: dict[str, str]) -> pd.Series:
    """Replace coded values by their labels, token by token in comma-separated cells ('dibao,tekun')."""
    if not labels:
        return cells
    padded = "," + cells + ","
    for key, label in labels.items():
        # twice: adjacent tokens share a comma, so one pass can only replace every other one
        for _ in range(2):
            padded = padded.str.replace(f",{key},", f",{label},", regex=False)
    return padded.str.slice(1, -1)


def neutralise_formulas(frame: pd.DataFrame) -> pd.DataFrame:
    """Prefix a single quote to every cell starting with = + - @ tab or CR, which Excel would execute."""
    out = {}
    for col in frame.columns:
        cells = frame[col].astype("string").fillna("")
        risky = cells.str.contains(FORMULA_START, regex=True).fillna(False).astype(bool)
        out[col] = cells.where(~risky, "'" + cells)
    return pd.DataFrame(out, index=frame.index)


def render(contract: ExchangeContract, data: pd.DataFrame) -> pd.DataFrame:
    """The partner's table: contracted fields only, coded values labelled, IDs per id_mode, formulas defused."""
    missing = [f for f in contract.fields if f not in data.columns]
    if missing:
        raise ExchangeError(
            f"{contract.path}: key 'fields': dataset {contract.dataset!r} has no column(s) {missing}; "
            f"it has {list(data.columns)}"
        )
    cells: dict[str, pd.Series] = {}
    for field, header in contract.fields.items():
        column = as_text(data[field])
        if field in contract.codes:
            column = apply_codes(column, contract.codes[field])
        if field == "id_number" and contract.id_mode == "masked":
            column = mask_ids(column).astype("string")
        cells[header] = column
    return neutralise_formulas(pd.DataFrame(cells, index=data.index))


def encode_csv(contract: ExchangeContract, table: pd.DataFrame, file_name: str) -> bytes:
    """CSV bytes in the contracted encoding, strictly: an unencodable character is an error, never '?'."""
    return encode_table(
        table, contract.encoding, LINE_ENDINGS[contract.line_ending], f"{contract.path}: {file_name}"
    )


def encode_table(table: pd.DataFrame, encoding: str, line_ending: str, where: str) -> bytes:
    """A table as CSV bytes; an unencodable character names the file, line and code point."""
    text = table.to_csv(index=False, lineterminator=line_ending)
    try:
        return text.encode(encoding, errors="strict")
    except UnicodeEncodeError as exc:
        line = text.count("\n", 0, exc.start) + 1
        bad = text[exc.start : exc.end]
        raise ExchangeError(
            f"{where} line {line}: character {bad!r} (U+{ord(bad[0]):04X}) cannot be encoded as {encoding}"
        ) from exc


# -- files ---------------------------------------------------------------------------------------------


def publish(target: Path, payload: bytes, manifest: dict[str, Any]) -> tuple[Path, str]:
    """Write a file, then its manifest (with bytes and SHA-256), each via a temporary name and a rename."""
    publish_bytes(target, payload)
    digest = hashlib.sha256(payload).hexdigest()
    manifest_path = target.with_name(target.name + ".manifest.json")
    write_json_atomic(manifest_path, {**manifest, "bytes": len(payload), "sha256": digest})
    return manifest_path, digest


def write_exchange_file(
    storage: Storage, contract: ExchangeContract, data: pd.DataFrame, run_id: str, as_of: date
) -> ExchangeFile:
    """Write one partner file and then its manifest, both via a temporary name and a rename."""
    period = f"{as_of:%Y-%m}"
    name = contract.file_name.format(
        contract=contract.name, partner=contract.partner, period=period, date=f"{as_of:%Y%m%d}"
    )
    target = storage.outbox(contract.partner, period) / name
    payload = encode_csv(contract, render(contract, data), name)
    manifest: dict[str, Any] = {
        "contract": contract.name,
        "version": contract.version,
        "partner": contract.partner,
        "department": contract.department,
        "purpose": contract.purpose,
        "onward_transfer": contract.onward_transfer,
        "run_id": run_id,
        "period": period,
        "file": name,
        "rows": len(data),
        "encoding": contract.encoding,
        "id_mode": contract.id_mode,
        "columns": list(contract.fields.values()),
        "generated_at": as_of.isoformat(),
    }
    manifest_path, digest = publish(target, payload, manifest)
    log.info("exchange %s -> %s: %d rows, sha256 %s", contract.name, contract.partner, len(data), digest[:12])
    return ExchangeFile(contract.partner, contract.name, period, target, manifest_path, len(data), digest)


def build_exchange(
    storage: Storage,
    contracts: list[ExchangeContract],
    datasets: dict[str, pd.DataFrame],
    run_id: str,
    as_of: date,
) -> list[ExchangeFile]:
    """Write every contracted partner file for the run under outbox/<partner>/<YYYY-MM>/."""
    files = []
    for contract in contracts:
        if contract.dataset not in datasets:
            raise ExchangeError(
                f"{contract.path}: key 'dataset': no dataset {contract.dataset!r} (have {sorted(datasets)})"
            )
        files.append(write_exchange_file(storage, contract, datasets[contract.dataset], run_id, as_of))
    return files
