"""Partner exchange files: what each department gets back, under a contract in schemas/exchange/.

A contract names the partner, the purpose (one line; its fields must be among those purposes.yaml
allows for it: data minimisation, checked at load time), the no-onward-transfer line, the Chinese
headers, the format (CSV in UTF-8 with BOM or GB18030, XLSX, Parquet, JSON Lines), how ID numbers go
(raw, masked, or an HMAC-SHA256 pseudonym under a per-partner key), how the file is delivered, its
schedule and version. A contract in `delta` mode sends what is new, changed or stopped since the
state the partner last acknowledged; `snapshot` mode (and any run asked for `full`) sends everything.
The partner's table is rendered, diffed and encoded here (pure); the exchange stage (stages/exchange.py)
publishes it with a signed manifest through core.publish. Cells Excel would run as formulas are
neutralised in every CSV and XLSX.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import yaml

from core.masking import mask_ids
from core.master_schema import master_schema

log = logging.getLogger(__name__)

FORMULA_START = r"^[=+\-@\t\r]"
LINE_ENDINGS = {"crlf": "\r\n", "lf": "\n"}
FORMATS = ("csv", "xlsx", "parquet", "jsonl")
CSV_ENCODINGS = ("utf-8-sig", "gb18030")  # Excel on a Chinese Windows reads UTF-8 only with its BOM
ID_MODES = ("raw", "masked", "pseudonym")
MODES = ("delta", "snapshot")
TRANSPORTS = {"folder": ("path",), "sftp": ("env_prefix", "folder"), "rest": ("base_url_env", "token_env")}
PURPOSES_FILE = "purposes.yaml"
CHANGE_HEADER = "变更类型"
CHANGES = {"new": "新增", "changed": "变更", "stopped": "停止"}
# one open-conflicts dataset per department that feeds the master: conflicts_<dept>; the departments
# come from the configuration (Settings.merged_sources), these (the shipped master schema's) are the defaults
WORK_LISTS = tuple(master_schema().sources)
WORK_LIST = re.compile(r"conflicts_[a-z][a-z0-9_]*")
# new / continuing / stop lists of the paying departments, from the run's transitions (transforms.decisions)
DECISION_LISTS = ("decisions_new", "decisions_continuing", "decisions_stop")
DECISION_DATASETS = ("eligible_decisions", *DECISION_LISTS)
DATASETS = (*DECISION_DATASETS, "conflicts", *(f"conflicts_{d}" for d in WORK_LISTS))


class ExchangeError(ValueError):
    """A contract is malformed, or a file cannot be written exactly as contracted."""


@dataclass(frozen=True)
class ExchangeContract:
    """One partner file: who gets it, why, which fields under which headers, how it is encoded and sent."""

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
    purpose_id: str = ""
    format: str = "csv"
    mode: str = "snapshot"
    key: tuple[str, ...] = ()
    pseudonym_key_env: str = ""
    delivery: dict[str, Any] = field(default_factory=dict)
    schedule: str = "@daily"
    services: tuple[str, ...] = ()  # rows of these services only (empty: every row of the dataset)


@dataclass(frozen=True)
class ExchangeFile:
    """A published exchange file and its manifest."""

    partner: str
    contract: str
    period: str
    path: Path
    manifest: Path
    rows: int
    sha256: str
    version: int = 1
    kind: str = "snapshot"
    supersedes: str | None = None


# -- contracts -----------------------------------------------------------------------------------------


def _key_lines(text: str) -> dict[str, int]:
    """Line of each top-level key and of each `fields` entry (as `fields.<name>`), for error messages."""
    lines: dict[str, int] = {}
    try:
        root = yaml.compose(text)
    except yaml.YAMLError:
        return lines
    if isinstance(root, yaml.MappingNode):
        for key, value in root.value:
            lines[str(key.value)] = key.start_mark.line + 1
            if key.value == "fields" and isinstance(value, yaml.MappingNode):
                for sub, _ in value.value:
                    lines[f"fields.{sub.value}"] = sub.start_mark.line + 1
    return lines


def load_purposes(path: Path) -> dict[str, dict[str, Any]]:
    """purposes.yaml: purpose id -> {text, allowed_fields, id_modes}; errors name file, line and key."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
        raw = yaml.safe_load(text)
    except (OSError, yaml.YAMLError) as exc:
        raise ExchangeError(f"{path}: cannot read the purpose table: {exc}") from exc
    purposes = raw.get("purposes") if isinstance(raw, dict) else None
    if not isinstance(purposes, dict) or not purposes:
        raise ExchangeError(f"{path} line 1: key 'purposes': expected a mapping purpose id -> definition")
    lines = {}
    root = yaml.compose(text)
    for key, value in root.value if isinstance(root, yaml.MappingNode) else []:
        if key.value == "purposes" and isinstance(value, yaml.MappingNode):
            lines = {k.value: k.start_mark.line + 1 for k, _ in value.value}
    for pid, entry in purposes.items():
        allowed = entry.get("allowed_fields") if isinstance(entry, dict) else None
        if not isinstance(allowed, list) or not all(isinstance(f, str) for f in allowed):
            raise ExchangeError(
                f"{path} line {lines.get(pid, 1)}: purpose {pid!r} key 'allowed_fields': expected a list of field names"
            )
    return purposes


def load_exchange_contract(path: Path, purposes: dict[str, dict[str, Any]] | None = None) -> ExchangeContract:
    """Read and check one contract; errors name the file, the line, the key and what was expected."""
    path = Path(path)
    try:
        source = path.read_text(encoding="utf-8")
        raw = yaml.safe_load(source)
    except (OSError, yaml.YAMLError) as exc:
        raise ExchangeError(f"{path}: cannot read the exchange contract: {exc}") from exc
    if not isinstance(raw, dict):
        raise ExchangeError(f"{path} line 1: expected a mapping at the top level")
    lines = _key_lines(source)
    if purposes is None:
        purposes = load_purposes(path.parent / PURPOSES_FILE)

    def fail(key: str, message: str) -> ExchangeError:
        line = lines.get(key) or lines.get(key.split(".")[0]) or 1
        return ExchangeError(f"{path} line {line}: key '{key}': {message}")

    def text(key: str) -> str:
        value = raw.get(key)
        if value is None or isinstance(value, dict | list) or not str(value).strip():
            raise fail(key, f"expected a non-empty value, found {value!r}")
        return str(value)

    def choice(key: str, allowed: tuple[str, ...], default: str | None = None) -> str:
        value = str(raw.get(key, default)) if default is not None else text(key)
        if value not in allowed:
            raise fail(key, f"expected one of {list(allowed)}, found {value!r}")
        return value

    fields = raw.get("fields")
    if not isinstance(fields, dict) or not fields:
        raise fail("fields", "expected a mapping canonical column -> header")
    codes = raw.get("codes") or {}
    if not isinstance(codes, dict) or not all(isinstance(v, dict) for v in codes.values()):
        raise fail("codes", "expected a mapping field -> {value: label}")
    unknown = sorted(set(codes) - set(fields))
    if unknown:
        raise fail("codes", f"field(s) {unknown} are not in 'fields'")
    purpose = text("purpose")
    if "\n" in purpose.strip():
        raise fail("purpose", "expected one line")
    purpose_id = text("purpose_id")
    if purpose_id not in purposes:
        raise fail(
            "purpose_id", f"expected one of {sorted(purposes)} (from {PURPOSES_FILE}), found {purpose_id!r}"
        )
    allowed = purposes[purpose_id]["allowed_fields"]
    for name in fields:
        if name not in allowed:
            raise fail(
                f"fields.{name}", f"field not allowed for purpose {purpose_id!r}; expected one of {allowed}"
            )
    fmt = choice("format", FORMATS, "csv")
    encoding = str(raw.get("encoding", "utf-8-sig"))
    if fmt == "csv" and encoding not in CSV_ENCODINGS:
        raise fail("encoding", f"expected one of {list(CSV_ENCODINGS)} for csv, found {encoding!r}")
    id_mode = choice("id_mode", ID_MODES)
    id_modes = purposes[purpose_id].get("id_modes") or list(ID_MODES)
    if "id_number" in fields and id_mode not in id_modes:
        raise fail(
            "id_mode", f"purpose {purpose_id!r} allows ID numbers only as {id_modes}, found {id_mode!r}"
        )
    line_ending = choice("line_ending", tuple(LINE_ENDINGS), "crlf")
    dataset = text("dataset")
    if dataset not in DATASETS and not WORK_LIST.fullmatch(dataset):
        raise fail(
            "dataset", f"expected one of {list(DATASETS)} or conflicts_<department>, found {dataset!r}"
        )
    mode = choice("mode", MODES, "snapshot")
    key = raw.get("key") or []
    if not isinstance(key, list) or not all(isinstance(k, str) and k in fields for k in key):
        raise fail("key", f"expected a list of fields among {list(fields)}, found {key!r}")
    if mode == "delta" and not key:
        raise fail("key", "a delta contract needs the fields that identify a row")
    delivery = raw.get("delivery")
    if not isinstance(delivery, dict) or delivery.get("transport") not in TRANSPORTS:
        raise fail(
            "delivery", f"expected a mapping with transport one of {list(TRANSPORTS)}, found {delivery!r}"
        )
    missing = [k for k in TRANSPORTS[str(delivery["transport"])] if not delivery.get(k)]
    if missing:
        raise fail("delivery", f"transport {delivery['transport']} needs {missing}")
    partner = text("partner")
    services = raw.get("services") or []
    if not isinstance(services, list) or not all(isinstance(s, str) and s for s in services):
        raise fail("services", f"expected a list of service names, found {services!r}")
    return ExchangeContract(
        name=text("contract"),
        version=text("version"),
        partner=partner,
        department=str(raw.get("department", "")),
        purpose=purpose.strip(),
        onward_transfer=text("onward_transfer"),
        dataset=dataset,
        encoding=encoding if fmt == "csv" else "utf-8",
        line_ending=line_ending,
        id_mode=id_mode,
        file_name=text("file_name"),
        fields={str(k): str(v) for k, v in fields.items()},
        codes={str(f): {str(k): str(v) for k, v in m.items()} for f, m in codes.items()},
        path=path,
        purpose_id=purpose_id,
        format=fmt,
        mode=mode,
        key=tuple(key),
        pseudonym_key_env=str(raw.get("pseudonym_key_env") or f"LIANBAN_PSEUDONYM_KEY_{partner.upper()}"),
        delivery=dict(delivery),
        schedule=text("schedule"),
        services=tuple(services),
    )


def load_exchange_contracts(directory: Path) -> list[ExchangeContract]:
    """Every contract in a directory (schemas/exchange), in file-name order, against its purposes.yaml."""
    directory = Path(directory)
    purposes = load_purposes(directory / PURPOSES_FILE)
    return [
        load_exchange_contract(p, purposes)
        for p in sorted(directory.glob("*.yaml"))
        if p.name != PURPOSES_FILE
    ]


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
    departments: Iterable[str] = WORK_LISTS,
    wanted: Iterable[str] | None = None,
) -> dict[str, pd.DataFrame]:
    """The rows each contract's `dataset` names, in a deterministic order (the decision lists only
    when the run's transitions are given; one conflicts_<d> work list per department in `departments`).

    `wanted`: the datasets the contracts name (None: all); only those are computed, so a run whose
    contracts send no decision lists never joins every decision with the transitions."""
    from transforms.decisions import delivery_lists

    asked = None if wanted is None else set(wanted)

    def needed(*names: str) -> bool:
        return asked is None or bool(asked.intersection(names))

    people = master[["id_number", "name", "hukou_county"]]
    out: dict[str, pd.DataFrame] = {}
    if transitions is not None and needed(*DECISION_LISTS):
        for name, rows in delivery_lists(decisions, transitions).items():
            rows = rows.merge(people, on="id_number", how="left")
            for column in ("amount", "amount_before"):
                if column in rows:
                    rows[column] = money(rows[column])
            out[name] = rows
    if needed("eligible_decisions"):
        eligible = decisions[decisions["eligible"].astype(bool)]
        eligible = eligible.merge(people, on="id_number", how="left")
        eligible = eligible.assign(amount=money(eligible["amount"]))
        out["eligible_decisions"] = eligible.sort_values(["id_number", "service"], kind="stable").reset_index(
            drop=True
        )
    work_lists = [f"conflicts_{d}" for d in departments]
    if needed("conflicts", *work_lists):
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
        out["conflicts"] = open_conflicts
        for name in work_lists:
            d = name.removeprefix("conflicts_")
            out[name] = open_conflicts[(department == d).fillna(False).astype(bool)].reset_index(drop=True)
    return out


def inputs_digest(contract: ExchangeContract, data: pd.DataFrame, *context: str) -> str | None:
    """SHA-256 of everything a partner file is rendered from: the contract, the contracted columns
    of its rows (values, order and dtypes) and `context` (file name, delta base, key id, code).
    Equal digests give equal files, so a run whose inputs did not change skips the render and the
    encoding (stages/exchange.py). None when a contracted field is missing (render names it)."""
    if any(f not in data.columns for f in contract.fields):
        return None
    rows = data[list(contract.fields)]
    digest = hashlib.sha256()
    for part in (repr(contract), repr(rows.dtypes.astype(str).to_dict()), str(len(rows)), *context):
        digest.update(part.encode("utf-8") + b"\0")
    digest.update(pd.util.hash_pandas_object(rows, index=False).to_numpy().tobytes())
    return digest.hexdigest()


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


def pseudonymise(ids: pd.Series, key: bytes) -> pd.Series:
    """HMAC-SHA256 of each ID number under the partner's key, hex: stable per partner, unlinkable across them.

    HMAC has no vectorised form; it runs once per distinct ID, which is cheap next to the file itself.
    """
    text = ids.astype("string").fillna("")
    unique = text.unique()
    digests = {v: hmac.new(key, v.encode("utf-8"), hashlib.sha256).hexdigest() if v else "" for v in unique}
    return text.map(digests).astype("string")


def render(contract: ExchangeContract, data: pd.DataFrame, id_key: bytes | None = None) -> pd.DataFrame:
    """The partner's table: contracted fields only, coded values labelled, IDs per id_mode (text cells)."""
    missing = [f for f in contract.fields if f not in data.columns]
    if missing:
        raise ExchangeError(
            f"{contract.path}: key 'fields': dataset {contract.dataset!r} has no column(s) {missing}; "
            f"it has {list(data.columns)}"
        )
    cells: dict[str, pd.Series] = {}
    for name, header in contract.fields.items():
        column = as_text(data[name])
        if name in contract.codes:
            column = apply_codes(column, contract.codes[name])
        if name == "id_number" and contract.id_mode == "masked":
            column = mask_ids(column).astype("string")
        if name == "id_number" and contract.id_mode == "pseudonym":
            if id_key is None:
                raise ExchangeError(f"{contract.path}: key 'id_mode': pseudonym needs the partner's key")
            column = pseudonymise(column, id_key)
        cells[header] = column
    return pd.DataFrame(cells, index=data.index).reset_index(drop=True)


def delta(contract: ExchangeContract, current: pd.DataFrame, base: pd.DataFrame | None) -> pd.DataFrame:
    """Rows new, changed or stopped against the acknowledged state, with the change in 变更类型.

    Without a base (nothing acknowledged yet) every row is new. Stopped rows carry their last values.
    """
    keys = [contract.fields[k] for k in contract.key]
    if base is None:
        return current.assign(**{CHANGE_HEADER: CHANGES["new"]})
    base = base[list(current.columns)].astype("string")
    merged = current.merge(base, on=keys, how="outer", suffixes=("", "_base"), indicator=True, sort=False)
    others = [c for c in current.columns if c not in keys]
    if others:
        now = merged[others].astype("string").fillna("")
        before = merged[[f"{c}_base" for c in others]].astype("string").fillna("")
        before.columns = others
        changed = (now != before).any(axis=1)
    else:
        changed = pd.Series(False, index=merged.index)
    both = merged["_merge"] == "both"
    kind = pd.Series(
        np.select(
            [merged["_merge"] == "left_only", both & changed, merged["_merge"] == "right_only"],
            [CHANGES["new"], CHANGES["changed"], CHANGES["stopped"]],
            default="",
        ),
        index=merged.index,
    )
    for c in others:  # a stopped row shows what the partner holds
        merged[c] = merged[c].where(merged["_merge"] != "right_only", merged[f"{c}_base"])
    out = merged[list(current.columns)].assign(**{CHANGE_HEADER: kind})
    out = out[kind != ""]
    order = out[CHANGE_HEADER].map({v: i for i, v in enumerate(CHANGES.values())})
    return (
        out.assign(_o=order)
        .sort_values(["_o", *keys], kind="stable")
        .drop(columns="_o")
        .reset_index(drop=True)
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


def encode(contract: ExchangeContract, table: pd.DataFrame, file_name: str, as_of: date) -> bytes:
    """The file's bytes in the contracted format; equal tables give equal bytes (no timestamps inside)."""
    where = f"{contract.path}: {file_name}"
    if contract.format == "csv":
        return encode_table(
            neutralise_formulas(table), contract.encoding, LINE_ENDINGS[contract.line_ending], where
        )
    if contract.format == "xlsx":
        return encode_xlsx(neutralise_formulas(table), as_of)
    if contract.format == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        sink = io.BytesIO()
        pq.write_table(pa.Table.from_pandas(table.astype("string"), preserve_index=False), sink)
        return sink.getvalue()
    if table.empty:
        return b""
    return table.astype("string").to_json(orient="records", lines=True, force_ascii=False).encode("utf-8")


XLSX_SHEET = "xl/worksheets/sheet1.xml"
XLSX_CELL_MAX = 32767  # Excel's longest cell text
XLSX_CONTROL = [chr(c) for c in (*range(0x00, 0x09), *range(0x0B, 0x20))]  # not allowed in XML 1.0


def _large(text: str) -> pa.Scalar:
    return pa.scalar(text, pa.large_string())


def _xlsx_cells(values: pd.Series, column: str, rows: pa.Array) -> pa.Array:
    """One column's cells as inline-string XML (an empty or missing value: no cell), escaped as
    XlsxWriter escapes a string: a literal `_xHHHH_` kept literal, control characters as `_xHHHH_`."""
    text = pc.utf8_slice_codeunits(
        pa.array(values.astype("string"), type=pa.large_string()), 0, XLSX_CELL_MAX
    )
    if pc.any(pc.match_substring_regex(text, r"_x[0-9a-fA-F]{4}_")).as_py():
        text = pc.replace_substring_regex(text, r"(_x[0-9a-fA-F]{4}_)", r"_x005F\1")
    if pc.any(pc.match_substring_regex(text, "[\x00-\x08\x0b-\x1f]")).as_py():
        for char in XLSX_CONTROL:
            text = pc.replace_substring(text, char, f"_x{ord(char):04X}_")
    for raw, escaped in (("&", "&amp;"), ("<", "&lt;"), (">", "&gt;")):
        if pc.any(pc.match_substring(text, raw)).as_py():
            text = pc.replace_substring(text, raw, escaped)
    cell = pc.binary_join_element_wise(
        _large(f'<c r="{column}'),
        rows,
        _large('" t="inlineStr"><is><t xml:space="preserve">'),
        text,
        _large("</t></is></c>"),
        _large(""),
    )
    return pc.if_else(pc.or_kleene(pc.is_null(text), pc.equal(text, "")), _large(""), cell)


def encode_xlsx(table: pd.DataFrame, as_of: date) -> bytes:
    """An XLSX of text cells; equal tables give equal bytes (the run date as its creation time, fixed zip
    timestamps). XlsxWriter writes the package and the header; the data rows, which XlsxWriter can
    only write cell by cell (most of the exchange stage's time at scale), are built as one vectorised
    sheet of inline strings (as Apache POI's streaming writer does) and put in its place. Text stays
    text: no formula, URL or number conversion."""
    import zipfile

    import xlsxwriter
    from xlsxwriter.utility import xl_col_to_name

    out = io.BytesIO()
    options = {"in_memory": True, "strings_to_formulas": False, "strings_to_urls": False}
    book = xlsxwriter.Workbook(out, options)
    book.set_properties({"created": datetime(as_of.year, as_of.month, as_of.day)})
    book.add_worksheet("data").write_row(0, 0, list(table.columns))
    book.close()
    if table.empty:
        return out.getvalue()
    count, width = table.shape
    last = xl_col_to_name(width - 1)
    rows = pa.array(np.arange(2, count + 2).astype(str), type=pa.large_string())
    cells = [_xlsx_cells(table.iloc[:, j], xl_col_to_name(j), rows) for j in range(width)]
    xml = pc.binary_join_element_wise(
        _large('<row r="'), rows, _large('">'), *cells, _large("</row>"), _large("")
    )
    offsets = np.frombuffer(xml.buffers()[1], dtype=np.int64)[xml.offset : xml.offset + len(xml) + 1]
    body = xml.buffers()[2].to_pybytes()[offsets[0] : offsets[-1]]  # the rows, one after the other
    header = (
        f'<dimension ref="{"A1" if width == 1 else f"A1:{last}1"}"/>'.encode()
    )  # XlsxWriter's, header only
    packaged = zipfile.ZipFile(io.BytesIO(out.getvalue()))
    target = io.BytesIO()
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as package:
        for info in packaged.infolist():
            part = packaged.read(info.filename)
            if info.filename == XLSX_SHEET:
                if header not in part or part.count(b"</sheetData>") != 1:
                    raise ExchangeError(f"{XLSX_SHEET}: not the sheet XlsxWriter was expected to write")
                part = part.replace(header, f'<dimension ref="A1:{last}{count + 1}"/>'.encode())
                part = part.replace(b"</sheetData>", body + b"</sheetData>")
            package.writestr(info, part, compresslevel=1)  # fast: the sheet is most of the bytes
    return target.getvalue()


def carried_rows(
    contract: ExchangeContract, data: pd.DataFrame, current: pd.DataFrame, table: pd.DataFrame
) -> pd.DataFrame:
    """The raw (id_number, service) of the rows a file carries as a decision in force: every row of a
    snapshot, the new and changed rows of a delta (stopped rows carry no decision in force).

    The file's own cells may be masked or pseudonymised; `current` is rendered row for row from `data`,
    so its rows found in the file (by the contract's key) point back to the raw values."""
    keep = pd.Series(True, index=current.index)
    if CHANGE_HEADER in table.columns:
        keys = [contract.fields[k] for k in contract.key]
        sent = table.loc[table[CHANGE_HEADER] != CHANGES["stopped"], keys].astype("string").drop_duplicates()
        hit = current[keys].astype("string").merge(sent, on=keys, how="left", indicator=True)
        keep = pd.Series((hit["_merge"] == "both").to_numpy(), index=current.index)
    rows = data.reset_index(drop=True).loc[keep.to_numpy(), ["id_number", "service"]]
    return rows.astype("string").drop_duplicates().reset_index(drop=True)
