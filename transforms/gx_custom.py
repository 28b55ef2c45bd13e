"""Great Expectations custom expectations for rules the built-ins cannot state (docs/domain.md, ID numbers and Certificates).

- expect_column_values_to_be_valid_id_number: GB 11643 check character and a real, non-future birth
  date (not after `as_of`, default today). The county code is not part of it: codes newer than any
  reference list (330113 临平区 ...) are valid.
- expect_column_values_to_have_known_county_code: the address code is a county-level code, current or
  abolished (transforms/regions.py); the suites run it as a warning, never a rejection.
- expect_certificate_to_match_holder: a 残疾人证 number is the holder's ID + category digit + level
  digit (残联发〔2017〕34号).
- expect_id_to_agree_with_birth_and_gender: the birth date (digits 7-14) and sex (digit 17, odd = male)
  encoded in the ID agree with the record's own fields.

Importing this module registers them with GX (by class name), and the data source type the committed
context declares (gx/great_expectations.yml: `column_scoped_pandas`); it also turns GX's usage analytics
off before GX is imported. Each condition is vectorised over the whole column on the Arrow buffers.
`ColumnScopedPandasEngine` hands every expectation only the columns it reads: stock GX filters nulls
with `df[df[col].notnull()]` and drops incomplete multicolumn rows with `df.dropna(subset=...)`, both
on the whole frame and once per metric, i.e. several whole-frame copies per expectation.

The engine and the fingerprint switch below override GX internals written against GX 1.24: pyproject
pins that minor version and tests/unit/test_gx_internals.py fails when an upgrade changes them.
"""

from __future__ import annotations

import builtins
import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any, ClassVar, Literal

os.environ["GX_ANALYTICS_ENABLED"] = "False"  # read when great_expectations is first imported

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.compute as pc  # noqa: E402
from great_expectations.core.suite_parameters import SuiteParameterDict  # noqa: E402
from great_expectations.datasource.fluent import PandasDatasource  # noqa: E402
from great_expectations.execution_engine import PandasExecutionEngine, pandas_execution_engine  # noqa: E402
from great_expectations.expectations.expectation import ColumnMapExpectation, MulticolumnMapExpectation  # noqa: E402
from great_expectations.expectations.metrics.map_metric_provider import (  # noqa: E402
    ColumnMapMetricProvider,
    MulticolumnMapMetricProvider,
    column_condition_partial,
)
from great_expectations.expectations.metrics.map_metric_provider.multicolumn_condition_partial import (  # noqa: E402
    multicolumn_condition_partial,
)

from transforms.ids import (  # noqa: E402
    CHECK_CHARS,
    EARLIEST_BIRTH_YEAR,
    WEIGHTS,
    as_arrow,
    char_columns,
    char_matrix,
    leading_number,
)
from transforms.regions import known_county_table  # noqa: E402

_DOMAIN_KEYS = ("column", "column_A", "column_B")


class ColumnScopedPandasEngine(PandasExecutionEngine):
    """A pandas engine whose column and multicolumn domains carry only their own columns.

    GX splits a column domain into compute kwargs (the table) and accessor kwargs (the column), and
    several pandas metrics filter the *compute* records by the column's null mask; so the compute
    kwargs keep the domain's columns under SCOPE_KEY, which only this engine reads. Multicolumn
    domains drop rows with missing values (`ignore_row_if`): stock GX does that on the whole frame,
    once per metric; here it is done on the domain's own columns, once per domain (cached).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._domain_cache: dict[tuple[Any, ...], tuple[pd.DataFrame, pd.DataFrame]] = {}

    def get_domain_records(self, domain_kwargs: dict[str, Any]) -> pd.DataFrame:
        columns = _scope(domain_kwargs)
        if not columns or domain_kwargs.get("row_condition"):
            data = super().get_domain_records(domain_kwargs)
            return data[columns] if columns else data
        ignore = domain_kwargs.get("ignore_row_if")
        unfiltered = {k: v for k, v in domain_kwargs.items() if k not in ("ignore_row_if", SCOPE_KEY)}
        whole = super().get_domain_records(unfiltered)  # the batch itself: no copy
        key = (domain_kwargs.get("batch_id"), tuple(columns), ignore)
        cached = self._domain_cache.get(key)
        if cached is not None and cached[0] is whole:
            return cached[1]
        scoped = whole[columns]  # copy-on-write: no data copied
        if "column" not in domain_kwargs and ignore not in (None, "never", "neither"):  # as stock GX
            if ignore not in _DROP_HOW:
                raise ValueError(f'Unrecognized value of ignore_row_if ("{ignore}").')
            scoped = scoped.dropna(axis=0, how=_DROP_HOW[ignore])
        self._domain_cache[key] = (whole, scoped)
        return scoped

    def get_compute_domain(
        self, domain_kwargs: dict[str, Any], domain_type: Any, accessor_keys: Any = None
    ) -> tuple[pd.DataFrame, dict[str, Any], dict[str, Any]]:
        data, compute, accessor = super().get_compute_domain(domain_kwargs, domain_type, accessor_keys)
        columns = _scope(domain_kwargs)
        if columns and SCOPE_KEY not in compute:
            compute = {**compute, SCOPE_KEY: SEPARATOR.join(columns)}
        return data, compute, accessor


class ColumnScopedPandasDatasource(PandasDatasource):
    """A pandas data source whose batches run on ColumnScopedPandasEngine (GX's engine hook for a data
    source type); the committed context's `lianban` source is of this type."""

    type: Literal["column_scoped_pandas"] = "column_scoped_pandas"  # type: ignore[assignment]
    execution_engine_override: ClassVar[builtins.type[PandasExecutionEngine]] = ColumnScopedPandasEngine


# GX fingerprints every in-memory batch below HASH_THRESHOLD bytes with an MD5 over hash_pandas_object
# (about 0.8 s per million cdpf rows, twice per validation) only to put it in the result's batch
# markers, which nothing reads; the landing manifest already carries SHA-256s.
pandas_execution_engine.HASH_THRESHOLD = 0


def release(engine: PandasExecutionEngine) -> None:
    """Drop the batch and any cached domains from an engine once its suite has run."""
    getattr(engine, "_domain_cache", {}).clear()
    engine.batch_manager.batch_data_cache.clear()
    engine.batch_manager.reset_batch_cache()


SCOPE_KEY = "lianban_scope"
SEPARATOR = "\x1f"
# GX's ignore_row_if values for column pairs and column lists, as DataFrame.dropna(how=...)
_DROP_HOW = {
    "both_values_are_missing": "all",
    "either_value_is_missing": "any",
    "all_values_are_missing": "all",
    "any_value_is_missing": "any",
}


def _scope(domain_kwargs: dict[str, Any]) -> list[str]:
    """The columns a domain reads (an explicit scope first, else column / column pair / column list)."""
    if domain_kwargs.get(SCOPE_KEY):
        return str(domain_kwargs[SCOPE_KEY]).split(SEPARATOR)
    columns = [domain_kwargs[k] for k in _DOMAIN_KEYS if k in domain_kwargs]
    return columns + list(domain_kwargs.get("column_list") or [])


@dataclass
class IdFacts:
    """What a column of ID numbers encodes, for the rows shaped as 18 characters (`shaped`)."""

    shaped: np.ndarray  # bool per row: 18 characters, 17 digits then a digit or X
    check_ok: np.ndarray  # per shaped row
    birth: np.ndarray  # datetime64[D] per shaped row (NaT where no such date)
    real_birth: np.ndarray
    male: np.ndarray
    county: np.ndarray  # int64 address code (digits 1-6) per shaped row


def _calendar_tables() -> tuple[np.ndarray, np.ndarray]:
    """Days in each month and the day before its 1st (days since 1970-01-01), for birth years
    EARLIEST_BIRTH_YEAR..2399, flat and indexed by (year - EARLIEST_BIRTH_YEAR) * 13 + month (month 0
    unused): a birth date is two look-ups in small tables, not calendar arithmetic over the column."""
    years = np.arange(EARLIEST_BIRTH_YEAR, 2400)
    leap = (years % 4 == 0) & ((years % 100 != 0) | (years % 400 == 0))
    days = np.tile(np.array([0, 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31]), (len(years), 1))
    days[:, 2] += leap
    jan1 = np.array([f"{y}-01-01" for y in years], dtype="datetime64[D]").astype(np.int64)
    before = np.concatenate([np.zeros((len(years), 1), np.int64), np.cumsum(days, axis=1)[:, :-1]], axis=1)
    return days.ravel(), (jan1[:, None] + before - 1).ravel()


_MONTH_DAYS, _MONTH_START = _calendar_tables()
_TABLE_YEARS = len(_MONTH_DAYS) // 13
# check character expected for every reachable weighted sum (non-digits wrap to <= 255 per position)
_CHECK_OF_SUM = CHECK_CHARS[np.arange(255 * int(WEIGHTS.sum()) + 1) % 11]
_NAT = np.iinfo(np.int64).min


def id_facts(ids: pd.Series) -> IdFacts:
    """Shape, check character, birth date and sex of each ID: uint8 arithmetic over the Arrow buffer."""
    arr = as_arrow(ids)
    shaped = pc.fill_null(pc.equal(pc.binary_length(arr), 18), False).to_numpy(zero_copy_only=False)
    chars = char_columns(char_matrix(arr if shaped.all() else arr.filter(pa.array(shaped)), 18))
    digits = chars - np.uint8(ord("0"))  # wraps for non-digits, caught by the <= 9 test
    numeric = (digits[:17].max(axis=0, initial=0) <= 9) & ((digits[17] <= 9) | (chars[17] == ord("X")))
    sums = np.zeros(chars.shape[1], dtype=np.int32)
    for position, weight in enumerate(WEIGHTS):
        sums += digits[position] * np.int32(weight)
    check_ok = numeric & (_CHECK_OF_SUM[sums] == chars[17])
    # int16 is wide enough for 4-digit years; non-digit rows wrap harmlessly (they are not `numeric`)
    year = digits[6] * np.int16(1000) + digits[7] * np.int16(100) + digits[8] * np.int16(10) + digits[9]
    year -= np.int16(EARLIEST_BIRTH_YEAR)
    month, day = digits[10] * np.int16(10) + digits[11], digits[12] * np.int16(10) + digits[13]
    known = numeric & (year >= 0) & (year < _TABLE_YEARS) & (month >= 1) & (month <= 12)
    ym = np.where(known, year.astype(np.int32) * 13 + month, 0)  # row of the calendar tables
    real = known & (day >= 1) & (day <= _MONTH_DAYS[ym])
    birth = np.where(real, _MONTH_START[ym] + day, _NAT).view("datetime64[D]")
    male = (digits[16] % 2) == 1
    county = leading_number(digits, 6)
    shaped[shaped] = numeric
    keep = numeric if not numeric.all() else slice(None)
    return IdFacts(shaped, check_ok[keep], birth[keep], real[keep], male[keep], county[keep])


def id_is_valid(ids: pd.Series, as_of: date | str | None) -> pd.Series:
    """True where the 18-character ID has the right check character and a real birth date not after as_of."""
    facts = id_facts(ids)
    valid = np.zeros(len(ids), dtype=bool)
    day = np.datetime64(as_of or date.today(), "D")
    valid[facts.shaped] = facts.check_ok & facts.real_birth & (facts.birth <= day)
    return pd.Series(valid, index=ids.index)


class ColumnValuesValidIdNumber(ColumnMapMetricProvider):
    condition_metric_name = "column_values.valid_id_number"
    condition_value_keys = ("as_of",)
    # Nulls are judged here (as not unexpected: the not-null expectation owns them) rather than by GX
    # filtering them out, which copies the column once per metric.
    filter_column_isnull = False

    @column_condition_partial(engine=PandasExecutionEngine)
    def _pandas(cls, column: pd.Series, as_of: str | None = None, **kwargs: Any) -> pd.Series:
        return id_is_valid(column, as_of) | column.isna()


class ExpectColumnValuesToBeValidIdNumber(ColumnMapExpectation):
    """Expect each value to be a valid 18-character ID number (check character, real non-future birth date)."""

    as_of: str | SuiteParameterDict | None = None  # the suites give {"$PARAMETER": "as_of"}
    map_metric: ClassVar[str] = "column_values.valid_id_number"
    success_keys: ClassVar[tuple[str, ...]] = ("mostly", "as_of")


def county_is_known(ids: pd.Series, added: Sequence[str] = ()) -> pd.Series:
    """False only where a readable ID carries an address code that is no known county; an empty or
    unreadable ID is another rule's finding."""
    facts = id_facts(ids)
    known = np.ones(len(ids), dtype=bool)
    known[facts.shaped] = known_county_table(added)[facts.county]
    return pd.Series(known, index=ids.index)


class ColumnValuesKnownCountyCode(ColumnMapMetricProvider):
    condition_metric_name = "column_values.known_county_code"
    condition_value_keys = ("added_codes",)
    filter_column_isnull = False  # as for valid_id_number: no per-metric copy of the column

    @column_condition_partial(engine=PandasExecutionEngine)
    def _pandas(cls, column: pd.Series, added_codes: Sequence[str] = (), **kwargs: Any) -> pd.Series:
        return county_is_known(column, added_codes or ())


class ExpectColumnValuesToHaveKnownCountyCode(ColumnMapExpectation):
    """Expect each ID's address code (digits 1-6) to be a county-level code, current or abolished.

    Meant as a warning (`severity: warning`): codes newer than the reference table are valid.
    added_codes: codes created after python-stdnum's table (the config's `county_codes_added`).
    """

    added_codes: list[str] | SuiteParameterDict = []  # the suites give {"$PARAMETER": "county_codes_added"}
    map_metric: ClassVar[str] = "column_values.known_county_code"
    success_keys: ClassVar[tuple[str, ...]] = ("mostly", "added_codes")


def _digit_codes(values: pd.Series) -> np.ndarray:
    """The ASCII code of each value that is a single-digit integer, 0 for anything else (or missing)."""
    numbers = values.to_numpy(dtype="float64", na_value=np.nan)
    single = (numbers >= 0) & (numbers <= 9) & (numbers == np.floor(numbers))
    return np.where(single, numbers + ord("0"), 0).astype(np.uint8)


def _lengths(arr: pa.Array, length: int) -> np.ndarray:
    return pc.fill_null(pc.equal(pc.binary_length(arr), length), False).to_numpy(zero_copy_only=False)


def certificate_matches(
    cert: pd.Series, holder: pd.Series, category: pd.Series, level: pd.Series
) -> np.ndarray:
    """True where cert == holder ID + category digit + level digit (False where any of them is missing).

    The usual shape (20 and 18 characters, single-digit codes) is compared on the Arrow buffers; any
    other row is compared as text, which is what the rule means.
    """
    c, h = as_arrow(cert), as_arrow(holder)
    category_code, level_code = _digit_codes(category), _digit_codes(level)
    usual = _lengths(c, 20) & _lengths(h, 18) & (category_code > 0) & (level_code > 0)
    prefix = pc.binary_slice(c.cast(pa.large_binary()), 0, 18)
    same_id = pc.fill_null(pc.equal(prefix, h.cast(pa.large_binary())), False).to_numpy(zero_copy_only=False)
    certs = char_matrix(c if usual.all() else c.filter(pa.array(usual)), 20)
    matches = np.zeros(len(cert), dtype=bool)
    matches[usual] = (
        same_id[usual] & (certs[:, 18] == category_code[usual]) & (certs[:, 19] == level_code[usual])
    )
    other = ~usual
    if other.any():
        c_, h_, cat_, lev_ = (s[other] for s in (cert, holder, category, level))
        codes = cat_.astype("Int64").astype("string") + lev_.astype("Int64").astype("string")
        matches[other] = (
            (c_.astype("string") == h_.astype("string") + codes).fillna(False).to_numpy(dtype=bool)
        )
    return matches


# GX's multicolumn domain: `ignore_row_if` must be part of it for rows with a missing value to be skipped.
_MULTICOLUMN_DOMAIN = (
    "batch_id",
    "table",
    "column_list",
    "row_condition",
    "condition_parser",
    "ignore_row_if",
)


class CertificateMatchesHolder(MulticolumnMapMetricProvider):
    condition_metric_name = "multicolumn_values.certificate_matches_holder"
    condition_domain_keys = _MULTICOLUMN_DOMAIN

    @multicolumn_condition_partial(engine=PandasExecutionEngine)
    def _pandas(cls, column_list: pd.DataFrame, **kwargs: Any) -> pd.Series:
        cert, holder, category, level = (column_list.iloc[:, i] for i in range(4))
        return pd.Series(certificate_matches(cert, holder, category, level), index=column_list.index)


class ExpectCertificateToMatchHolder(MulticolumnMapExpectation):
    """Expect the certificate number to be the holder's ID followed by the category and level digits.

    column_list: [cert_number, id_number, category, level]; rows with any of them missing are not judged
    (the parse step has already said why).
    """

    ignore_row_if: Literal["all_values_are_missing", "any_value_is_missing", "never"] = "any_value_is_missing"
    map_metric: ClassVar[str] = "multicolumn_values.certificate_matches_holder"
    success_keys: ClassVar[tuple[str, ...]] = ("mostly",)


class IdAgreesWithBirthAndGender(MulticolumnMapMetricProvider):
    condition_metric_name = "multicolumn_values.id_agrees_with_birth_and_gender"
    condition_domain_keys = _MULTICOLUMN_DOMAIN

    @multicolumn_condition_partial(engine=PandasExecutionEngine)
    def _pandas(cls, column_list: pd.DataFrame, **kwargs: Any) -> pd.Series:
        ids, birth, gender = (column_list.iloc[:, i] for i in range(3))
        facts = id_facts(ids)
        agrees = np.ones(len(ids), dtype=bool)  # an ID without a readable birth date is another rule's job
        given = birth.to_numpy(dtype="datetime64[D]")[facts.shaped]
        male = (gender.astype("string") == "male").to_numpy(dtype=bool, na_value=False)[facts.shaped]
        agrees[facts.shaped] = ~facts.real_birth | ((facts.birth == given) & (facts.male == male))
        return pd.Series(agrees, index=ids.index)


class ExpectIdToAgreeWithBirthAndGender(MulticolumnMapExpectation):
    """Expect the birth date and sex encoded in the ID to equal the record's birth date and gender fields.

    column_list: [id_number, birth_date, gender]; rows with any of them missing are not judged.
    """

    ignore_row_if: Literal["all_values_are_missing", "any_value_is_missing", "never"] = "any_value_is_missing"
    map_metric: ClassVar[str] = "multicolumn_values.id_agrees_with_birth_and_gender"
    success_keys: ClassVar[tuple[str, ...]] = ("mostly",)
