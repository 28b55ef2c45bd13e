"""Validate a landed batch: standardise it, run its Great Expectations suite, split accepted / quarantine.

Every row ends in exactly one of two files, never lost: accepted.parquet (canonical columns plus
lineage) or quarantine.parquet (the native row as received, with reason codes in English and Chinese,
which becomes the reject file back to the department). Reason codes come from three places:
exact duplicate rows (DUPLICATE_ROW), parse problems found by `standardise`, and the rows each GX
expectation reports as unexpected (its `meta.reason_code`). A null that a parse code already
explains is not reported again by the suite's not-null expectations.

The batch verdict goes to the ledger: 'held' when a gate of transforms/gates.py trips (invalid ratio,
a column that changed type, volume or deaths/cancellations against the last accepted batch) or the
batch cannot be read as its contract says (schema drift, bad encoding, checksum), else 'accepted'.
Great Expectations is imported lazily (it takes seconds), with analytics off.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import sqlalchemy as sa

from core.contracts import REASONS, SourceContract, contract_for
from core.masking import mask_id, mask_structure, mask_text
from core.settings import Gates, Settings
from core.storage import (
    Storage,
    batches,
    decision_note,
    sha256_file,
    utcnow,
    write_json_atomic,
    write_parquet_atomic,
)
from reports.validation_report import write_validation_report
from transforms.gates import DeltaBasis, Previous, UsualRate, column_parses, count_events, evaluate
from transforms.ids import FIX_UPGRADED_15
from transforms.lenient import read_landed_lenient
from transforms.merge import DELTA_KEYS
from transforms.standardise import (
    LINEAGE,
    NON_RECORD,
    STRING,
    BatchUnreadable,
    LandingCorrupt,
    LandingDecodeError,
    Reasons,
    read_landed,
    standardise_rows,
)

log = logging.getLogger(__name__)

ID_COLUMNS = ("id_number", "cert_number")  # values that carry an ID number: always masked in reports
SAMPLE_SIZE = 5
NOT_NULL = "expect_column_values_to_not_be_null"
VALID_ID = "expect_column_values_to_be_valid_id_number"
KNOWN_COUNTY = "expect_column_values_to_have_known_county_code"
SUITE_DIR = "expectations"  # committed suites, one per source, in the checkout
# GX severities: "critical" (the default) quarantines the unexpected rows, the others only count them
SEVERITIES = ("critical", "warning", "info")


class SuiteError(ValueError):
    """An expectation suite file is malformed or an expectation failed to run."""


@dataclass
class StageResult:
    """What staging a batch produced; the verdict is also in the ledger."""

    source: str
    batch_id: str
    status: str  # accepted | held
    rows: int
    accepted: int
    quarantined: int
    reason_counts: dict[str, int] = field(default_factory=dict)
    note: str = ""
    path: Path | None = None


# -- the suite -------------------------------------------------------------------------------------


def suite_path(settings: Settings, source: str) -> Path:
    configured = settings.sources[source].suite if source in settings.sources else None
    return settings.path(configured or f"{SUITE_DIR}/{source}.json")


def _for_gx(frame: pd.DataFrame) -> pd.DataFrame:
    """GX compares nullable Float64 values one by one in Python; plain float64 (NaN = null) is vectorised."""
    floats = {
        c: frame[c].astype("float64") for c in frame.columns if isinstance(frame[c].dtype, pd.Float64Dtype)
    }
    return frame.assign(**floats) if floats else frame


def load_suite(path: Path, columns: set[str]) -> dict[str, Any]:
    """Read a committed suite file and check every expectation can run and names a reason code."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise SuiteError(f"{path}: expectation suite not found") from exc
    except json.JSONDecodeError as exc:
        raise SuiteError(f"{path}: not valid JSON: line {exc.lineno}: {exc.msg}") from exc
    expectations = doc.get("expectations") if isinstance(doc, dict) else None
    if not doc.get("name") or not isinstance(expectations, list) or not expectations:
        raise SuiteError(f"{path}: expected an object with 'name' and a non-empty 'expectations' list")
    for i, exp in enumerate(expectations):
        where = f"{path}: expectations[{i}] ({exp.get('type')} on {_columns_of(exp)})"
        meta = exp.get("meta") or {}
        if meta.get("reason_code") not in REASONS:
            raise SuiteError(
                f"{where}: meta.reason_code {meta.get('reason_code')!r} is not one of {list(REASONS)}"
            )
        if not meta.get("reason_zh"):
            raise SuiteError(f"{where}: meta.reason_zh (Chinese text for the reject file) is missing")
        named = _columns_of(exp)
        unknown = [c for c in named if c not in columns]
        if not named or unknown:
            raise SuiteError(
                f"{where}: column(s) {unknown or named} not among the canonical columns {sorted(columns)}"
            )
        if meta.get("field", named[0]) not in named:
            raise SuiteError(f"{where}: meta.field {meta['field']!r} is not one of the expectation's columns")
        if exp.get("severity", "critical") not in SEVERITIES:
            raise SuiteError(f"{where}: severity {exp['severity']!r} is not one of {list(SEVERITIES)}")
    return doc


def _columns_of(exp: dict[str, Any]) -> list[str]:
    """The columns an expectation reads: `column`, or `column_list` for a multicolumn one."""
    kwargs = exp.get("kwargs", {})
    return [kwargs["column"]] if "column" in kwargs else list(kwargs.get("column_list") or [])


def _build_suite(doc: dict[str, Any], path: Path) -> Any:
    """The GX suite object; each expectation is built on its own so a bad one fails loudly (GX would drop it)."""
    import great_expectations as gx
    from great_expectations.expectations.expectation_configuration import ExpectationConfiguration

    import transforms.gx_custom  # noqa: F401  registers the custom expectations by name

    built = []
    for i, exp in enumerate(doc["expectations"]):
        try:
            built.append(ExpectationConfiguration(**exp).to_domain_obj())
        except Exception as exc:  # GX raises several types for a bad configuration
            raise SuiteError(f"{path}: expectations[{i}] ({exp.get('type')}): {exc}") from exc
    return gx.ExpectationSuite(
        name=doc["name"], expectations=built, meta=doc.get("meta"), notes=doc.get("notes")
    )


def gx_context() -> Any:
    """An ephemeral GX context with usage analytics and progress bars off (nothing leaves the machine)."""
    os.environ["GX_ANALYTICS_ENABLED"] = "False"
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig
    from great_expectations.execution_engine import pandas_execution_engine

    # GX fingerprints every in-memory batch below HASH_THRESHOLD bytes with an MD5 over
    # hash_pandas_object (about 0.8 s per million cdpf rows, twice per validation) only to put it in the
    # result's batch markers, which we do not use; the landing manifest already carries SHA-256s.
    if hasattr(pandas_execution_engine, "HASH_THRESHOLD"):
        pandas_execution_engine.HASH_THRESHOLD = 0
    context = gx.get_context(mode="ephemeral")
    context.enable_analytics(False)
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    return context


def run_suite(frame: pd.DataFrame, doc: dict[str, Any], path: Path) -> list[dict[str, Any]]:
    """Run the suite over the frame once (ephemeral context, whole-dataframe batch).

    Returns one entry per expectation: its config, success, counts and the positional indices of the
    unexpected rows. Unexpected values are excluded from GX's result, so no ID number is copied there.
    """
    context = gx_context()
    suite = context.suites.add(_build_suite(doc, path))
    from transforms.gx_custom import ColumnScopedPandasEngine, release

    datasource = context.data_sources.add_pandas("lianban")
    # GX's documented per-datasource engine hook (a ClassVar): set on this instance only.
    object.__setattr__(datasource, "execution_engine_override", ColumnScopedPandasEngine)
    batch_definition = datasource.add_dataframe_asset(
        f"staged_{doc['name']}"
    ).add_batch_definition_whole_dataframe("whole_batch")
    try:
        result = batch_definition.get_batch(batch_parameters={"dataframe": frame}).validate(
            suite,
            result_format={  # COMPLETE: every unexpected row's index, which quarantine needs
                "result_format": "COMPLETE",
                "return_unexpected_index_query": False,
                "exclude_unexpected_values": True,
            },
        )
    finally:  # GX keeps its last context (and so this batch) alive in a module global: let go of it
        release(datasource.get_execution_engine())
        context.delete_datasource(datasource.name)
    outcomes = []
    for item in result.results:
        config = item.expectation_config
        if config is None:  # pragma: no cover - GX always echoes the configuration it ran
            raise SuiteError(f"{path}: a validation result came back without its expectation configuration")
        info = item.exception_info or {}
        if info.get("raised_exception"):
            raise SuiteError(
                f"{path}: {config.type} on {config.kwargs.get('column')} raised: {info.get('exception_message')}"
            )
        detail = item.result or {}
        outcomes.append(
            {
                "type": config.type,
                "column": config.kwargs.get("column") or config.kwargs.get("column_list", [None])[0],
                "columns": _columns_of({"kwargs": config.kwargs}),
                "severity": str(getattr(config.severity, "value", config.severity)),
                "meta": dict(config.meta or {}),
                "success": bool(item.success),
                "unexpected_count": int(detail.get("unexpected_count") or 0),
                "unexpected_percent": round(float(detail.get("unexpected_percent") or 0.0), 4),
                "index": np.asarray(detail.get("unexpected_index_list") or [], dtype=np.int64),
            }
        )
    log.info(
        "suite %s: %d expectations, %d failed",
        doc["name"],
        len(outcomes),
        sum(not o["success"] for o in outcomes),
    )
    return outcomes


# -- staging ---------------------------------------------------------------------------------------


def _sample(frame: pd.DataFrame, column: str, index: np.ndarray) -> list[Any]:
    """A few unexpected values for the report; ID-bearing columns masked."""
    if column not in frame.columns or index.size == 0:
        return []
    values = frame[column].iloc[index[:SAMPLE_SIZE]]
    out = [None if pd.isna(v) else str(v) for v in values]
    return [mask_id(v) if v and column in ID_COLUMNS else v for v in out]


def _raw_json(native: pd.DataFrame) -> pd.Series:
    """The native row as a JSON object of strings, one per row (pandas' C JSON writer, no row loop)."""
    if native.empty:
        return pd.Series([], index=native.index, dtype=STRING)
    lines = native.to_json(orient="records", lines=True, force_ascii=False).rstrip("\n").split("\n")
    return pd.Series(lines, index=native.index, dtype=STRING).str.replace("\\/", "/", regex=False)


def _finalise(accepted: pd.DataFrame, contract: SourceContract) -> pd.DataFrame:
    """SPEC dtypes for accepted rows: required bools become plain bool (no nulls can remain)."""
    for column in contract.columns:
        if column.type == "bool" and column.required:
            accepted[column.name] = accepted[column.name].astype(bool)
    return accepted


def _id_fix_counts(fixes: pd.Series) -> dict[str, int]:
    present = fixes.dropna()
    if present.empty:
        return {}
    counts = present.str.split(";").explode().value_counts()
    return {str(k): int(v) for k, v in counts.items()}


def _write_summary(summary: dict[str, Any], out: Path) -> None:
    """validation.json (masked) and the offline validation.html rendered from it."""
    masked = mask_structure(summary)
    write_json_atomic(out / "validation.json", masked)
    write_validation_report(masked, out / "validation.html")


def _held(
    storage: Storage, source: str, batch_id: str, as_of: date, manifest: dict[str, Any], exc: BatchUnreadable
) -> StageResult:
    """The batch cannot be read as contracted: no rows are staged, the verdict says why."""
    out = storage.staged(source, batch_id)
    storage.private_dir(out)
    for stale in ("accepted.parquet", "quarantine.parquet"):
        (out / stale).unlink(missing_ok=True)
    note = str(exc)
    rows = int(manifest.get("rows") or 0)
    drift = None
    if hasattr(exc, "missing"):
        drift = {k: getattr(exc, k) for k in ("file", "expected", "found", "missing", "unexpected")}
    summary = {
        "source": source,
        "batch_id": batch_id,
        "as_of": as_of.isoformat(),
        "staged_at": utcnow(),
        "verdict": "held",
        "note": note,
        "rows": rows,
        "accepted": 0,
        "quarantined": 0,
        "reason_counts": {},
        "schema_drift": drift,
        "error": type(exc).__name__,
    }
    _write_summary(summary, out)
    storage.seal(out)
    storage.set_verdict(batch_id, "held", 0, 0, note=mask_text(note))
    log.warning("%s batch %s held: %s", source, batch_id, mask_text(note))
    return StageResult(source, batch_id, "held", rows, 0, 0, {}, mask_text(note), out)


def _apply_suite(
    settings: Settings,
    source: str,
    contract: SourceContract,
    frame: pd.DataFrame,
    reasons: Reasons,
    as_of: date,
) -> list[dict[str, Any]]:
    """Run the source's suite over the canonical columns; unexpected rows of a critical expectation
    become quarantine reasons, those of a warning are only counted (the row is kept)."""
    path = suite_path(settings, source)
    doc = load_suite(path, set(contract.names))
    for exp in doc["expectations"]:  # "not after the run date" means the batch's as-of date
        if exp["type"] == VALID_ID:
            exp["kwargs"].setdefault("as_of", as_of.isoformat())
        elif exp["type"] == KNOWN_COUNTY:
            exp["kwargs"].setdefault("added_codes", list(settings.county_codes_added))
    checked = _for_gx(frame[contract.names])  # one frame for the whole suite
    explained = {name: reasons.on_field(name) for name in contract.names}
    # what the standardiser refused per field before the suite ran: those cells reach GX as nulls, so GX
    # alone would call the ID check passed and the not-null check failed on rows nobody flags
    refused_before = reasons.field_counts()
    parse_codes = {f["code"] for f in refused_before}
    results = []
    for outcome in run_suite(checked, doc, path):
        meta, column, index = outcome["meta"], outcome["column"], outcome["index"]
        mask = np.zeros(len(frame), dtype=bool)
        mask[index] = True
        earlier = explained.get(column, np.zeros(len(frame), dtype=bool))
        explained_nulls = int((mask & earlier).sum()) if outcome["type"] == NOT_NULL else 0
        # values refused earlier for what this check is about (the ID check: any bad ID; a code list:
        # an unknown code) failed it too; values refused for another reason were simply not checked
        related = related_codes(meta["reason_code"], parse_codes)
        if outcome["type"] == NOT_NULL:
            failed_earlier = np.zeros(len(frame), dtype=bool)
            mask &= ~earlier  # the parse code already says why this cell is empty
            failing = int(mask.sum())
        else:
            failed_earlier = reasons.on_field_with(column, related)
            failing = int((mask | failed_earlier).sum())
        warning = outcome["severity"] != "critical"
        if not warning:
            reasons.add(meta["reason_code"], mask, meta.get("field", column), meta.get("reason_zh"))
        results.append(
            {
                "type": outcome["type"],
                "column": ", ".join(outcome["columns"]),
                "severity": "warning" if warning else "error",
                "reason_code": meta["reason_code"],
                "reason_zh": meta.get("reason_zh"),
                # truthful per check: rows failing it, whether found by GX or refused earlier
                "success": failing == 0,
                "failing_rows": failing,
                "refused_before": int(failed_earlier.sum()),
                "refused_before_codes": {
                    f["code"]: f["rows"]
                    for f in refused_before
                    if f["field"] == column and f["code"] in related and outcome["type"] != NOT_NULL
                },
                "not_checked": int((earlier & ~failed_earlier).sum()) if outcome["type"] != NOT_NULL else 0,
                "explained_nulls": explained_nulls,
                "gx_success": outcome["success"],
                "unexpected_count": outcome["unexpected_count"],
                "unexpected_percent": outcome["unexpected_percent"],
                "rows_flagged": 0 if warning else int(mask.sum()),  # after parse-explained nulls
                "sample": [] if outcome["type"] == NOT_NULL else _sample(checked, column, index),
            }
        )
    return results


def split_non_records(
    native: pd.DataFrame, contract: SourceContract
) -> tuple[pd.DataFrame, np.ndarray, dict[str, int]]:
    """Rows that are not records (totals, notes, the header line repeated) and their counts by kind.

    A CSV reader already blanked such lines (a totals row may have other columns than the records);
    this catches them in any format, from the first column or the ID cell: never a bad record, never
    in a reject file, never holding the file.
    """
    if native.empty:
        return native, np.ones(0, dtype=bool), {}
    cells = [contract.natives[0], contract.column("id_number").native]
    masks: dict[str, np.ndarray] = {}
    for kind, pattern in NON_RECORD.items():
        hit = np.zeros(len(native), dtype=bool)
        for cell in dict.fromkeys(cells):
            hit |= native[cell].astype(STRING).str.contains(pattern, regex=True).fillna(False).to_numpy(bool)
        masks[kind] = hit
    header = np.ones(len(native), dtype=bool)
    for name in contract.natives:
        header &= (native[name].astype(STRING).str.strip() == name).fillna(False).to_numpy(dtype=bool)
    masks["header"] = header
    counts = {kind: int(m.sum()) for kind, m in masks.items() if m.any()}
    if not counts:
        return native, np.ones(len(native), dtype=bool), {}
    drop = np.logical_or.reduce(list(masks.values()))
    return native.loc[~drop].reset_index(drop=True), ~drop, counts


def key_conflicts(frame: pd.DataFrame, contract: SourceContract, bad: np.ndarray) -> np.ndarray:
    """Rows sharing a key and an update time whose values differ: which one is right is unknowable.

    The merge would keep the later row in batch order, a choice the department never made (one
    person recorded dead under another's number). Every row of such a key is quarantined, so the
    department resolves it; rows that agree in every canonical column are one fact, not a conflict,
    and versions with different update times are ordered by time in the merge.
    """
    out = np.zeros(len(frame), dtype=bool)
    keys = [*DELTA_KEYS.get(contract.source, ("id_number",)), "updated_at"]
    usable = ~bad & frame["id_number"].notna().to_numpy(dtype=bool)
    candidates = frame.loc[usable, keys]
    shared = candidates.duplicated(keep=False).to_numpy(dtype=bool)
    if not shared.any():
        return out
    rows = np.flatnonzero(usable)[shared]
    subset = frame.iloc[rows]
    content = pd.util.hash_pandas_object(subset[contract.names], index=False)
    distinct = content.groupby([subset[k] for k in keys], dropna=False).transform("nunique")
    out[rows] = distinct.to_numpy(dtype=np.int64) > 1
    return out


def _id_flags(reasons: pd.Series, fixes: pd.Series) -> pd.Series:
    """Warnings on kept ID numbers: an implausible 15-digit upgrade kept by its contract, a 1800s century."""
    flags = pd.Series(pd.NA, index=fixes.index, dtype=STRING)
    implausible = (reasons == "ID_UPGRADE_IMPLAUSIBLE").fillna(False)
    flags[implausible] = "ID_UPGRADE_IMPLAUSIBLE"
    return flags


def related_codes(check_reason: str, parse_codes: set[str]) -> set[str]:
    """The standardiser's codes that mean a value failed a check with this reason code: the same code,
    or for the ID check (ID_INVALID) every ID code but a missing one (the not-null check's)."""
    if check_reason == "ID_INVALID":
        return {c for c in parse_codes if c.startswith("ID_") and c != "ID_MISSING"}
    return {check_reason} & parse_codes


def _previous(storage: Storage, source: str, batch_id: str) -> Previous | None:
    """The source's last accepted batch as the gates compare against it (events from its validation.json)."""
    last = storage.last_accepted(source, exclude=batch_id)
    if last is None:
        return None
    summary = storage.staged(source, last["batch_id"]) / "validation.json"
    events = json.loads(summary.read_text(encoding="utf-8")).get("events") if summary.exists() else None
    return Previous(str(last["batch_id"]), int(last["accepted_rows"] or 0), events)


def _day(window: str) -> date | None:
    try:
        return datetime.strptime(window, "%Y%m%d").date()
    except ValueError:
        return None


def _days_between(later: str, earlier: str) -> int:
    """Days a batch covers after the previous one, from their windows (YYYYMMDD); at least 1."""
    a, b = _day(later), _day(earlier)
    return max((a - b).days, 1) if a and b else 1


def _delta_basis(storage: Storage, source: str, batch_id: str, window: str, gates: Gates) -> DeltaBasis:
    """The usual daily rate of a source's deltas (configured, else the median of its last accepted deltas,
    each divided by the days it covered) and the size of its last full batch."""
    with storage.engine().connect() as conn:
        history = (
            conn.execute(
                sa.select(batches.c.batch_id, batches.c.window, batches.c.accepted_rows)
                .where(
                    batches.c.source == source, batches.c.status == "accepted", batches.c.batch_id != batch_id
                )
                .order_by(batches.c.landed_at, batches.c.batch_id)
            )
            .mappings()
            .all()
        )
    samples: dict[str, list[float]] = {}
    deltas, register = 0, None
    for i in range(len(history) - 1, -1, -1):
        if deltas >= gates.delta_history and register is not None:
            break
        row = history[i]
        manifest = _read_json(storage.landing(source, row["batch_id"]) / "manifest.json")
        if not manifest.get("delta"):
            register = register if register is not None else int(row["accepted_rows"] or 0)
            continue
        if deltas >= gates.delta_history:
            continue
        summary = _read_json(storage.staged(source, row["batch_id"]) / "validation.json")
        days = _days_between(str(row["window"]), str(history[i - 1]["window"])) if i else 1
        deltas += 1
        for measure, count in [("rows", row["accepted_rows"] or 0), *(summary.get("events") or {}).items()]:
            samples.setdefault(measure, []).append(float(count) / days)
    per_day = {m: float(np.median(v)) for m, v in samples.items() if len(v) >= gates.delta_min_history}
    basis = {m: f"median of {len(samples[m])} delta batches" for m in per_day}
    for measure, rate in gates.usual_daily.get(source, {}).items():
        per_day[measure], basis[measure] = float(rate), "configured"
    days = _days_between(window, str(history[-1]["window"])) if history else 1
    return DeltaBasis(days, UsualRate(per_day, basis), register)


def _read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}


HELD_OUT_ZH = "更新时间晚于运行时间(超出允许的时钟偏差)或不是有效时间，未计入增量书签"


def _with_held_out(
    landing: Path, manifest: dict[str, Any], contract: SourceContract, native: pd.DataFrame
) -> tuple[pd.DataFrame, list[tuple[str, np.ndarray]]]:
    """Append the rows the connector held out of the data (a watermark value it could not trust) so they
    are quarantined with their reason and returned to the department; one (field, mask) per held-out file."""
    frames, held = [native.reset_index(drop=True)], []
    by_native = {c.native: c.name for c in contract.columns}
    for entry in manifest.get("held_out") or []:
        path = landing / entry["name"]
        if sha256_file(path) != entry["sha256"]:
            raise LandingCorrupt(f"{contract.source}: {entry['name']}: SHA-256 differs from manifest.json")
        if path.suffix == ".json":  # a change feed's held-out items, as received
            rows = pd.DataFrame.from_records(json.loads(path.read_bytes())["items"])
        else:
            rows = pd.read_parquet(path)
        rows = rows.reindex(columns=contract.natives).astype(STRING)
        rows["_source_file"] = pd.Series(entry["name"], index=rows.index, dtype=STRING)
        rows["_source_line"] = np.arange(1, len(rows) + 1, dtype=np.int64)
        frames.append(rows[[*contract.natives, *LINEAGE]])
        held.append((by_native.get(str(entry.get("column")), ""), len(rows)))
    if len(frames) == 1:
        return frames[0], []
    out = pd.concat(frames, ignore_index=True)
    masks, start = [], len(native)
    for field_name, count in held:
        mask = np.zeros(len(out), dtype=bool)
        mask[start : start + count] = True
        masks.append((field_name, mask))
        start += count
    return out, masks


def stage_batch(
    settings: Settings,
    source: str,
    batch_id: str,
    as_of: date,
    max_invalid_ratio: float | None = None,
) -> StageResult:
    """Standardise and validate one landed batch; write the staged files and record the verdict.

    Idempotent: staging the same batch again rewrites the same files and the same verdict.
    """
    storage = Storage(settings)
    gates = settings.gates
    if max_invalid_ratio is not None:
        gates = gates.model_copy(update={"max_invalid_ratio": max_invalid_ratio})
    contract = contract_for(settings, source)
    landing = storage.landing(source, batch_id)
    manifest = json.loads((landing / "manifest.json").read_text(encoding="utf-8"))
    storage.record_batch(batch_id, source, str(manifest.get("window", "")), int(manifest.get("rows") or 0))
    log.info(
        "%s batch %s: staging %s rows landed by %s",
        source,
        batch_id,
        manifest.get("rows"),
        manifest.get("transport"),
    )
    decision = storage.decision(batch_id)  # an operator's release: honoured by every re-staging
    undecodable: np.ndarray | None = None
    try:
        try:
            read = read_landed(landing, contract)
        except LandingDecodeError:
            if decision is None or decision["decision"] != "partial":
                raise
            read, undecodable = read_landed_lenient(
                landing, contract, storage.staged(source, batch_id).parent
            )
        non_records = dict(read.attrs.get("non_record_rows", {}))
        read, kept, more = split_non_records(read.reset_index(drop=True), contract)
        for kind, count in more.items():
            non_records[kind] = non_records.get(kind, 0) + count
        if undecodable is not None:
            undecodable = undecodable[kept[: len(undecodable)]]
        native, held_out = _with_held_out(landing, manifest, contract, read)
    except BatchUnreadable as exc:
        return _held(storage, source, batch_id, as_of, manifest, exc)

    n = len(native)
    frame, reasons = standardise_rows(native, contract, as_of)
    for field_name, mask in held_out:
        reasons.add("DATE_INVALID", mask, field_name, HELD_OUT_ZH)
    if undecodable is not None:
        reasons.add(
            "ENCODING_INVALID", np.concatenate([undecodable, np.zeros(n - len(undecodable), dtype=bool)])
        )
    duplicate = native.duplicated(subset=contract.natives, keep="first").to_numpy(dtype=bool)
    reasons.add("DUPLICATE_ROW", duplicate)

    gx_results = _apply_suite(settings, source, contract, frame, reasons, as_of)
    reasons.add("DUPLICATE_KEY_CONFLICT", key_conflicts(frame, contract, reasons.any()))

    bad = reasons.any()
    quarantined = int(bad.sum())
    accepted_rows = n - quarantined
    ratio = quarantined / n if n else 0.0
    counts = reasons.counts()
    accepted = frame.loc[~bad, contract.names].copy()
    events = count_events(accepted, contract)
    field_counts = reasons.field_counts()
    columns = column_parses(frame, field_counts, contract)
    # a delta batch holds only the changed rows: it is judged against the usual daily rate, not the last batch
    if manifest.get("delta"):
        previous, delta = (
            None,
            _delta_basis(storage, source, batch_id, str(manifest.get("window", "")), gates),
        )
    else:
        previous, delta = _previous(storage, source, batch_id), None
    verdict = evaluate(n, quarantined, events, previous, gates, columns, delta)
    status, note = verdict.status, verdict.note
    if decision is not None:
        status, note = "accepted", decision_note(decision)
        if decision["decision"] == "partial":
            storage.count_decision(batch_id, accepted_rows, quarantined)
            decision = storage.decision(batch_id)

    out = storage.staged(source, batch_id)
    storage.private_dir(out)
    accepted.insert(
        len(accepted.columns), "_batch_id", pd.Series(batch_id, index=accepted.index, dtype=STRING)
    )
    for lineage in LINEAGE:
        accepted[lineage] = native.loc[~bad, lineage]
    # which numbers were upgraded from 15 digits (and how): recorded on the row, not only counted
    fixes = frame.loc[~bad, "_id_fix"].astype(STRING)
    accepted["_id_upgraded_from15"] = (
        fixes.str.contains(FIX_UPGRADED_15, regex=False).fillna(False).astype(bool)
    )
    accepted["_id_flags"] = _id_flags(frame.loc[~bad, "_id_reason"], fixes)
    write_parquet_atomic(_finalise(accepted, contract).reset_index(drop=True), out / "accepted.parquet")

    id_native = contract.column("id_number").native
    rejected = native.loc[bad]
    quarantine = pd.DataFrame(
        {
            "_batch_id": pd.Series(batch_id, index=rejected.index, dtype=STRING),
            "_source_file": rejected["_source_file"].astype(STRING),
            "_source_line": rejected["_source_line"].astype("int64"),
            "id_raw": rejected[id_native].astype(STRING),
            "reason_codes": pd.Series(reasons.codes()[bad], index=rejected.index, dtype=STRING),
            "reasons_zh": pd.Series(reasons.describe(contract)[bad], index=rejected.index, dtype=STRING),
            "raw": _raw_json(rejected[contract.natives]),
        }
    )
    write_parquet_atomic(quarantine.reset_index(drop=True), out / "quarantine.parquet")

    summary = {
        "source": source,
        "batch_id": batch_id,
        "as_of": as_of.isoformat(),
        "staged_at": utcnow(),
        "contract": f"{contract.source} v{contract.version}",
        "suite": f"{SUITE_DIR}/{source}.json",
        "verdict": status,
        "note": note,
        "rows": n,
        "accepted": accepted_rows,
        "quarantined": quarantined,
        "invalid_ratio": round(ratio, 6),
        "max_invalid_ratio": gates.max_invalid_ratio,
        "events": events,
        "gates": verdict.as_json(),
        "reason_counts": counts,
        "reasons_zh": {code: REASONS[code] for code in counts},
        "field_reason_counts": field_counts,
        "id_fixes": _id_fix_counts(frame["_id_fix"]),
        "non_record_rows": non_records,
        "schema_drift": None,
        "decision": None if decision is None else {k: v for k, v in decision.items() if k != "id"},
        "gx": {
            "success": all(r["success"] for r in gx_results),
            "evaluated": len(gx_results),
            "failed": sum(not r["success"] for r in gx_results),
            "results": gx_results,
        },
    }
    _write_summary(summary, out)
    storage.seal(out)
    storage.set_verdict(batch_id, status, accepted_rows, quarantined, note=note)
    if non_records:
        log.info("%s batch %s: non-record rows skipped %s", source, batch_id, non_records)
    log.info(
        "%s batch %s: %s; %d rows, %d accepted, %d quarantined %s",
        source,
        batch_id,
        status,
        n,
        accepted_rows,
        quarantined,
        counts,
    )
    return StageResult(source, batch_id, status, n, accepted_rows, quarantined, counts, note, out)
