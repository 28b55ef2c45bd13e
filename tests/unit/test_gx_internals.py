"""The GX internals transforms/gx_custom.py overrides, as they were in the version it was written for.

`ColumnScopedPandasEngine` overrides two methods of GX's pandas engine and relies on how they treat
their domain kwargs; the fingerprint switch sets a module constant; `release` empties the engine's
batch caches; the data source type rides on GX's engine hook for data source types. pyproject pins GX
to 1.24.*: when an upgrade changes any of these, this test fails and says what to re-check, so the
engine is never silently wrong (a row quarantined or kept by mistake) or silently slow.
"""

from __future__ import annotations

import hashlib
import inspect
from pathlib import Path
from typing import Any

import great_expectations as gx
import pytest
from great_expectations.datasource.fluent.interfaces import Datasource
from great_expectations.execution_engine import PandasExecutionEngine, pandas_execution_engine
from great_expectations.expectations.metrics.map_metric_provider import ColumnMapMetricProvider

import transforms.gx_custom as custom

WRITTEN_FOR = "1.24."
RECHECK = (
    "GX {version} changed {what}, which transforms/gx_custom.py overrides (written for GX 1.24). "
    "Re-check ColumnScopedPandasEngine / ColumnScopedPandasDatasource / release / HASH_THRESHOLD against "
    "the new code, run tests/unit/test_gx_custom.py (row copies) and `hub bench-validate`, then update "
    "the expected values here and the pin in pyproject.toml."
)
# the GX functions whose behaviour the overrides depend on, and the sha256 of their source in GX 1.24.1
SOURCES = {
    "PandasExecutionEngine.get_domain_records": (
        PandasExecutionEngine.get_domain_records,
        "4691281d9a24f31f802390bdb751e118f7fc4c3a35555177f9939679f1cf5528",
    ),
    "PandasExecutionEngine.get_compute_domain": (
        PandasExecutionEngine.get_compute_domain,
        "a199cc36950df5a4ae3db984eae045fb5bde5f0b746dba7526ddffa08335b57b",
    ),
    "PandasExecutionEngine.get_batch_data_and_markers": (
        PandasExecutionEngine.get_batch_data_and_markers,
        "211820aaa4b86075205ee0229f9116f34dcf1b88acb18571a435ae0131e66cc5",
    ),
    "Datasource._execution_engine_type": (
        Datasource._execution_engine_type,
        "a220ffc40c4d716499adfb7f364abfc86aee2e7f128b480800cd5a00c695393b",
    ),
}


def _fail(what: str) -> str:
    return RECHECK.format(version=gx.__version__, what=what)


def _digest(function: Any) -> str:
    return hashlib.sha256(inspect.getsource(function).encode("utf-8")).hexdigest()


def test_gx_is_the_minor_version_the_overrides_were_written_for() -> None:
    assert gx.__version__.startswith(WRITTEN_FOR), _fail("its version")


@pytest.mark.parametrize("name", sorted(SOURCES))
def test_the_overridden_gx_code_is_unchanged(name: str) -> None:
    function, digest = SOURCES[name]
    assert _digest(function) == digest, _fail(f"the code of {name}")


def test_the_overridden_signatures_are_unchanged() -> None:
    expected = {
        "get_domain_records": "(self, domain_kwargs: 'dict') -> 'pd.DataFrame'",
        "get_compute_domain": (
            "(self, domain_kwargs: 'dict', domain_type: 'Union[str, MetricDomainTypes]', "
            "accessor_keys: 'Optional[Iterable[str]]' = None) -> 'Tuple[pd.DataFrame, dict, dict]'"
        ),
    }
    for name, signature in expected.items():
        got = str(inspect.signature(getattr(PandasExecutionEngine, name)))
        assert got == signature, _fail(f"the signature of PandasExecutionEngine.{name} to {got}")


def test_the_hooks_and_attributes_relied_on_are_there() -> None:
    assert hasattr(pandas_execution_engine, "HASH_THRESHOLD"), _fail("pandas_execution_engine.HASH_THRESHOLD")
    assert pandas_execution_engine.HASH_THRESHOLD == 0, (
        "transforms.gx_custom no longer turns fingerprints off"
    )
    source = inspect.getsource(PandasExecutionEngine.get_batch_data_and_markers)
    assert "HASH_THRESHOLD" in source, _fail("where HASH_THRESHOLD is read")
    assert "execution_engine_override" in Datasource.__annotations__, _fail(
        "Datasource.execution_engine_override"
    )
    assert ColumnMapMetricProvider.filter_column_isnull is True, _fail(
        "ColumnMapMetricProvider.filter_column_isnull"
    )
    engine = PandasExecutionEngine()
    assert hasattr(engine.batch_manager, "batch_data_cache"), _fail("BatchManager.batch_data_cache")
    assert callable(getattr(engine.batch_manager, "reset_batch_cache", None)), _fail(
        "BatchManager.reset_batch_cache"
    )
    # the values of ignore_row_if the engine maps to DataFrame.dropna are GX's own
    domain_source = inspect.getsource(PandasExecutionEngine.get_domain_records)
    for value in custom._DROP_HOW:
        assert f'"{value}"' in domain_source, _fail(f"ignore_row_if value {value!r}")


def test_the_data_source_type_runs_on_the_column_scoped_engine(tmp_path: Path) -> None:
    context = gx.get_context(mode="file", project_root_dir=str(tmp_path))
    source = context.data_sources.add_column_scoped_pandas("probe")
    assert isinstance(source, custom.ColumnScopedPandasDatasource)
    assert type(source.get_execution_engine()) is custom.ColumnScopedPandasEngine, _fail("the engine hook")
