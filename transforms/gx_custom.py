"""Great Expectations custom expectations for rules the built-ins cannot state (DOMAIN.md sections 2, 3).

- expect_column_values_to_be_valid_id_number: GB 11643 check character and a real, non-future birth
  date. The county code is deliberately not checked: codes created after 2014 (330112 临安区 ...) are
  valid, and python-stdnum-style region lists would reject them.
- expect_certificate_to_match_holder: a 残疾人证 number is the holder's ID + category digit + level
  digit (残联发〔2017〕34号).
- expect_id_to_agree_with_birth_and_gender: the birth date (digits 7-14) and sex (digit 17, odd = male)
  encoded in the ID agree with the record's own fields.

Importing this module registers them with GX (by class name). Each condition is vectorised over the
whole column with numpy/pyarrow. `ColumnScopedPandasEngine` hands every expectation only the columns
it reads: GX's map metrics filter nulls with `df[df[col].notnull()]`, which otherwise copies the whole
frame once per expectation.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Any, ClassVar, Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from great_expectations.execution_engine import PandasExecutionEngine
from great_expectations.expectations.expectation import ColumnMapExpectation, MulticolumnMapExpectation
from great_expectations.expectations.metrics.map_metric_provider import (
    ColumnMapMetricProvider,
    MulticolumnMapMetricProvider,
    column_condition_partial,
)
from great_expectations.expectations.metrics.map_metric_provider.multicolumn_condition_partial import (
    multicolumn_condition_partial,
)

from transforms.ids import CHECK_CHARS, EARLIEST_BIRTH_YEAR, WEIGHTS, as_arrow, calendar_dates, char_matrix

_DOMAIN_KEYS = ("column", "column_A", "column_B")


class ColumnScopedPandasEngine(PandasExecutionEngine):
    """A pandas engine whose column and multicolumn domains carry only their own columns.

    GX splits a column domain into compute kwargs (the table) and accessor kwargs (the column), and
    several pandas metrics filter the *compute* records by the column's null mask; so the compute
    kwargs keep the domain's columns under SCOPE_KEY, which only this engine reads.
    """

    def get_domain_records(self, domain_kwargs: dict[str, Any]) -> pd.DataFrame:
        data = super().get_domain_records(domain_kwargs)
        columns = _scope(domain_kwargs)
        return data[columns] if columns else data

    def get_compute_domain(
        self, domain_kwargs: dict[str, Any], domain_type: Any, accessor_keys: Any = None
    ) -> tuple[pd.DataFrame, dict[str, Any], dict[str, Any]]:
        data, compute, accessor = super().get_compute_domain(domain_kwargs, domain_type, accessor_keys)
        columns = _scope(domain_kwargs)
        if columns and SCOPE_KEY not in compute:
            compute = {**compute, SCOPE_KEY: SEPARATOR.join(columns)}
        return data, compute, accessor


SCOPE_KEY = "lianban_scope"
SEPARATOR = "\x1f"


def _scope(domain_kwargs: dict[str, Any]) -> list[str]:
    """The columns a domain reads (an explicit scope first, else column / column pair / column list)."""
    if domain_kwargs.get(SCOPE_KEY):
        return str(domain_kwargs[SCOPE_KEY]).split(SEPARATOR)
    columns = [domain_kwargs[k] for k in _DOMAIN_KEYS if k in domain_kwargs]
    return columns + list(domain_kwargs.get("column_list") or [])


@dataclass
class IdFacts:
    """What a column of ID numbers encodes, for the rows shaped as 18 characters (`shaped`)."""

    shaped: np.ndarray  # bool per row
    check_ok: np.ndarray  # per shaped row
    birth: np.ndarray  # datetime64[D] per shaped row (NaT where no such date)
    real_birth: np.ndarray
    male: np.ndarray


def id_facts(ids: pd.Series) -> IdFacts:
    """Shape, check character, birth date and sex of each ID: uint8 arithmetic over the Arrow buffer."""
    arr = as_arrow(ids)
    shaped = pc.fill_null(pc.equal(pc.binary_length(arr), 18), False).to_numpy(zero_copy_only=False)
    chars = char_matrix(arr if shaped.all() else arr.filter(pa.array(shaped)), 18)
    digits = chars - np.uint8(ord("0"))  # wraps for non-digits, caught by the <= 9 test
    numeric = (digits[:, :17] <= 9).all(axis=1) & ((digits[:, 17] <= 9) | (chars[:, 17] == ord("X")))
    sums = digits[:, :17].astype(np.int32) @ WEIGHTS.astype(np.int32)
    check_ok = numeric & (CHECK_CHARS[sums % 11] == chars[:, 17])
    wide = digits[:, 6:17].astype(np.int32)
    year = wide[:, 0] * 1000 + wide[:, 1] * 100 + wide[:, 2] * 10 + wide[:, 3]
    real, birth = calendar_dates(year, wide[:, 4] * 10 + wide[:, 5], wide[:, 6] * 10 + wide[:, 7])
    real &= numeric & (year >= EARLIEST_BIRTH_YEAR)
    shaped[shaped] = numeric
    keep = numeric if not numeric.all() else slice(None)
    return IdFacts(shaped, check_ok[keep], birth[keep], real[keep], (wide[keep, 10] % 2) == 1)


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

    @column_condition_partial(engine=PandasExecutionEngine)
    def _pandas(cls, column: pd.Series, as_of: str | None = None, **kwargs: Any) -> pd.Series:
        return id_is_valid(column, as_of)


class ExpectColumnValuesToBeValidIdNumber(ColumnMapExpectation):
    """Expect each value to be a valid 18-character ID number (check character, real non-future birth date)."""

    as_of: str | None = None
    map_metric: ClassVar[str] = "column_values.valid_id_number"
    success_keys: ClassVar[tuple[str, ...]] = ("mostly", "as_of")


def _text(series: pd.Series) -> pd.Series:
    return series.astype("string")


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
        cert = _text(cert)
        expected = _text(holder) + _text(category.astype("Int64")) + _text(level.astype("Int64"))
        return (cert == expected).fillna(False).astype(bool)


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
