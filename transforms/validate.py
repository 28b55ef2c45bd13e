"""Validation of a standardised batch, pure: the Great Expectations suite, non-record rows, key
conflicts and the columns of the accepted and quarantined frames (frames in, frames out).

Every row ends in exactly one of two frames, never lost: accepted (canonical columns plus lineage)
or quarantine (the native row as received, with reason codes in English and Chinese, which becomes
the reject file back to the department). Reason codes come from three places: exact duplicate rows
(DUPLICATE_ROW), parse problems found by `standardise`, and the rows each GX expectation reports as
unexpected (its `meta.reason_code`). A null that a parse code already explains is not reported again
by the suite's not-null expectations. The ingest stage (stages/ingest.py) reads the landing, writes
the staged files and the ledger's verdict. Great Expectations is imported lazily (it takes seconds),
with analytics off.
"""

from __future__ import annotations

import json
import logging
import os
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.compute as pc

from core.contracts import REASONS, SourceContract
from core.masking import mask_id
from core.settings import GX_DIR, Settings
from transforms.ids import as_arrow
from transforms.standardise import (
    NON_RECORD,
    STRING,
    Reasons,
    mask_of,
)

log = logging.getLogger(__name__)

ID_COLUMNS = ("id_number", "cert_number")  # values that carry an ID number: always masked in reports
SAMPLE_SIZE = 5
NOT_NULL = "expect_column_values_to_not_be_null"
VALID_ID = "expect_column_values_to_be_valid_id_number"
KNOWN_COUNTY = "expect_column_values_to_have_known_county_code"
SUITE_DIR = f"{GX_DIR}/expectations"  # its suites, one per source
GX_RESULTS = "uncommitted/validations"  # the validation results store of great_expectations.yml
# the batch every validation definition validates, as declared in great_expectations.yml
GX_DATA_SOURCE, GX_ASSET, GX_BATCH = "lianban", "staged", "whole_batch"
# the run's values (suite_parameters) the custom expectations take unless their suite says otherwise
RUN_PARAMETERS = {VALID_ID: ("as_of", "as_of"), KNOWN_COUNTY: ("added_codes", "county_codes_added")}
# GX severities: "critical" (the default) quarantines the unexpected rows, the others only count them
SEVERITIES = ("critical", "warning", "info")


class SuiteError(ValueError):
    """An expectation suite file is malformed or an expectation failed to run."""


# -- the suite -------------------------------------------------------------------------------------


def suite_path(settings: Settings, source: str) -> Path:
    configured = settings.sources[source].suite if source in settings.sources else None
    return settings.path(configured or f"{SUITE_DIR}/{source}.json")


def for_gx(frame: pd.DataFrame) -> pd.DataFrame:
    """GX compares nullable Float64 values one by one in Python; plain float64 (NaN = null) is vectorised."""
    floats = {
        c: frame[c].astype("float64") for c in frame.columns if isinstance(frame[c].dtype, pd.Float64Dtype)
    }
    return frame.assign(**floats) if floats else frame


def load_suite(path: Path, columns: set[str]) -> dict[str, Any]:
    """Read a suite file and check every expectation can run and names a reason code.

    An ID check or county-code warning that does not say otherwise is judged as of the batch's date and
    with the config's added codes: the committed suites say so (`$PARAMETER`), a suite given by path
    may leave it out.
    """
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
        if exp["type"] in RUN_PARAMETERS:
            kwarg, parameter = RUN_PARAMETERS[exp["type"]]
            exp["kwargs"].setdefault(kwarg, {"$PARAMETER": parameter})
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
            config = {k: v for k, v in exp.items() if k != "id"}
            built.append(ExpectationConfiguration(**config).to_domain_obj())
        except Exception as exc:  # GX raises several types for a bad configuration
            raise SuiteError(f"{path}: expectations[{i}] ({exp.get('type')}): {exc}") from exc
    suite = gx.ExpectationSuite(
        name=doc["name"], id=doc.get("id"), expectations=built, meta=doc.get("meta"), notes=doc.get("notes")
    )
    # a suite refuses expectations that already have ids; a stored suite's keep theirs (GX compares them)
    for expectation, exp in zip(suite.expectations, doc["expectations"], strict=True):
        expectation.id = exp.get("id")
    return suite


def suite_parameters(settings: Settings, as_of: date) -> dict[str, Any]:
    """The run's values of the suites' `$PARAMETER`s: the batch's as-of date and the added county codes."""
    return {"as_of": as_of.isoformat(), "county_codes_added": list(settings.county_codes_added)}


def runtime_context(runtime: Path) -> Any:
    """The GX file context the suites run in: `runtime` (var/gx), the committed gx/ as copied there by
    core.storage.sync_gx_context. Runs write there (validation results, suites given by path in the
    config), never into the checkout. Analytics and progress bars are off in great_expectations.yml.
    """
    if not (runtime / "great_expectations.yml").is_file():
        raise FileNotFoundError(
            f"{runtime}: no great_expectations.yml; the runtime GX context is prepared by "
            "core.storage.sync_gx_context (Storage.gx_context) before a suite runs"
        )
    os.environ["GX_ANALYTICS_ENABLED"] = "False"
    import great_expectations as gx

    import transforms.gx_custom  # noqa: F401  registers the data source type and custom expectations

    return gx.get_context(mode="file", context_root_dir=str(runtime))


def _definition(context: Any, doc: dict[str, Any], path: Path) -> Any:
    """The context's validation definition named as the suite; a suite the context does not hold as
    checked (given by path in the config, or an ad hoc one) is added or updated in it first."""
    import great_expectations as gx
    from great_expectations.exceptions import DataContextError

    suite = _build_suite(doc, path)
    try:
        held = context.validation_definitions.get(doc["name"])
    except DataContextError:
        held = None
    if held is not None and held.suite == suite:
        return held
    suite = context.suites.add_or_update(suite)  # keeps the held suite's id, so `held` still names it
    if held is not None:
        return context.validation_definitions.get(doc["name"])
    batch = context.data_sources.get(GX_DATA_SOURCE).get_asset(GX_ASSET).get_batch_definition(GX_BATCH)
    return context.validation_definitions.add(
        gx.ValidationDefinition(name=doc["name"], data=batch, suite=suite)
    )


def run_suite(
    frame: pd.DataFrame,
    doc: dict[str, Any],
    path: Path,
    runtime: Path,
    parameters: dict[str, Any] | None = None,
    run_name: str | None = None,
) -> list[dict[str, Any]]:
    """Run the suite's validation definition over the frame once (the runtime file context, whole-frame
    batch); GX keeps the result in the context's validation results store under `run_name`.

    Returns one entry per expectation: its config, success, counts and the positional indices of the
    unexpected rows. Unexpected values are excluded from GX's result, so no ID number is copied there.
    """
    from great_expectations.core.run_identifier import RunIdentifier

    from transforms.gx_custom import release

    definition = _definition(runtime_context(runtime), doc, path)
    try:
        result = definition.run(
            batch_parameters={"dataframe": frame},
            expectation_parameters=parameters,
            result_format={  # COMPLETE: every unexpected row's index, which quarantine needs
                "result_format": "COMPLETE",
                "return_unexpected_index_query": False,
                "exclude_unexpected_values": True,
            },
            run_id=RunIdentifier(run_name=run_name),
        )
    finally:  # GX keeps its last context (and so the engine's batch) alive in a module global
        release(definition.data_source.get_execution_engine())
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


def raw_json(native: pd.DataFrame) -> pd.Series:
    """The native row as a JSON object of strings, one per row (pandas' C JSON writer, no row loop)."""
    if native.empty:
        return pd.Series([], index=native.index, dtype=STRING)
    lines = native.to_json(orient="records", lines=True, force_ascii=False).rstrip("\n").split("\n")
    return pd.Series(lines, index=native.index, dtype=STRING).str.replace("\\/", "/", regex=False)


def finalise(accepted: pd.DataFrame, contract: SourceContract) -> pd.DataFrame:
    """SPEC dtypes for accepted rows: required bools become plain bool (no nulls can remain)."""
    for column in contract.columns:
        if column.type == "bool" and column.required:
            accepted[column.name] = accepted[column.name].astype(bool)
    return accepted


def id_fix_counts(fixes: pd.Series) -> dict[str, int]:
    present = fixes.dropna()
    if present.empty:
        return {}
    counts = present.str.split(";").explode().value_counts()
    return {str(k): int(v) for k, v in counts.items()}


def apply_suite(
    settings: Settings,
    source: str,
    contract: SourceContract,
    frame: pd.DataFrame,
    reasons: Reasons,
    as_of: date,
    batch_id: str,
    runtime: Path,
) -> tuple[list[dict[str, Any]], Path]:
    """Run the source's suite over the canonical columns; unexpected rows of a critical expectation
    become quarantine reasons, those of a warning are only counted (the row is kept). Also returns the
    folder where GX kept this batch's validation result."""
    path = suite_path(settings, source)
    doc = load_suite(path, set(contract.names))
    checked = for_gx(frame[contract.names])  # one frame for the whole suite
    explained = {name: reasons.on_field(name) for name in contract.names}
    # what the standardiser refused per field before the suite ran: those cells reach GX as nulls, so GX
    # alone would call the ID check passed and the not-null check failed on rows nobody flags
    refused_before = reasons.field_counts()
    parse_codes = {f["code"] for f in refused_before}
    results = []
    outcomes = run_suite(checked, doc, path, runtime, suite_parameters(settings, as_of), run_name=batch_id)
    stored = runtime / GX_RESULTS / doc["name"] / batch_id
    for outcome in outcomes:
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
    return results, stored


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
            hit |= mask_of(pc.match_substring_regex(as_arrow(native[cell]), pattern))
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


def duplicate_rows(native: pd.DataFrame, columns: list[str]) -> np.ndarray:
    """Rows equal in every column to an earlier row: exactly `duplicated(keep="first")`, for a third
    of its cost. Rows are hashed first (one uint64 each); only rows whose hash recurs are compared, and
    an earlier equal row always shares the hash, so a collision can never flag a row.
    """
    hashes = pd.util.hash_pandas_object(native[columns], index=False)
    candidates = hashes.duplicated(keep=False).to_numpy(dtype=bool)
    out = np.zeros(len(native), dtype=bool)
    if candidates.any():
        out[candidates] = native.loc[candidates, columns].duplicated(keep="first").to_numpy(dtype=bool)
    return out


def key_conflicts(frame: pd.DataFrame, contract: SourceContract, bad: np.ndarray) -> np.ndarray:
    """Rows sharing a key and an update time whose values differ: which one is right is unknowable.

    The merge would keep the later row in batch order, a choice the department never made (one
    person recorded dead under another's number). Every row of such a key is quarantined, so the
    department resolves it; rows that agree in every canonical column are one fact, not a conflict,
    and versions with different update times are ordered by time in the merge.
    """
    out = np.zeros(len(frame), dtype=bool)
    keys = [*contract.merge.key, "updated_at"]
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


def id_flags(reasons: pd.Series, fixes: pd.Series) -> pd.Series:
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
