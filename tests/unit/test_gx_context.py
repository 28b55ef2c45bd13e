"""The suites run through GX's file context: the committed one (gx/) declares every suite with its
validation definition, runs happen in a private copy under var/gx that keeps each batch's result, and
the checkout is never written."""

from __future__ import annotations

import hashlib
import json
from datetime import date
from pathlib import Path

import pandas as pd
import yaml

from core.settings import GX_DIR, ROOT, load_settings
from core.storage import sync_gx_context
from transforms.ids import check_char
from transforms.validate import (
    GX_ASSET,
    GX_BATCH,
    GX_DATA_SOURCE,
    GX_RESULTS,
    KNOWN_COUNTY,
    RUN_PARAMETERS,
    VALID_ID,
    load_suite,
    run_suite,
    suite_parameters,
    suite_path,
)

COMMITTED = ROOT / GX_DIR
AS_OF = date(2025, 6, 30)


def _tree(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _cdpf_frame() -> pd.DataFrame:
    from core.contracts import contract_for

    contract = contract_for(load_settings(), "cdpf")
    frame = pd.DataFrame({name: pd.Series([None, None], dtype="string") for name in contract.names})
    frame["id_number"] = pd.Series(["11010519491231002X", "110105194912310021"], dtype="string")
    return frame


def test_every_configured_source_has_its_suite_and_validation_definition_committed() -> None:
    config = yaml.safe_load((COMMITTED / "great_expectations.yml").read_text(encoding="utf-8"))
    source = config["fluent_datasources"][GX_DATA_SOURCE]
    asset = source["assets"][GX_ASSET]
    batch = asset["batch_definitions"][GX_BATCH]
    assert source["type"] == "column_scoped_pandas"
    assert config["analytics_enabled"] is False and config["progress_bars"] == {"globally": False}
    settings = load_settings()
    for name in settings.sources:
        path = suite_path(settings, name)
        assert path.parent == COMMITTED / "expectations", f"{name}: its suite is not in the committed context"
        suite = json.loads(path.read_text(encoding="utf-8"))
        definition = json.loads((COMMITTED / "validation_definitions" / f"{name}.json").read_text("utf-8"))
        assert definition["name"] == suite["name"] == name
        assert definition["suite"] == {"name": suite["name"], "id": suite["id"]}
        assert definition["data"] == {
            "datasource": {"name": GX_DATA_SOURCE, "id": source["id"]},
            "asset": {"name": GX_ASSET, "id": asset["id"]},
            "batch_definition": {"name": GX_BATCH, "id": batch["id"]},
        }


def test_committed_suites_state_their_run_parameters() -> None:
    """load_suite fills these in for a suite given by path; the committed ones say so themselves, so
    what runs is byte for byte the committed file."""
    for path in sorted((COMMITTED / "expectations").glob("*.json")):
        doc = json.loads(path.read_text(encoding="utf-8"))
        for exp in doc["expectations"]:
            if exp["type"] in (VALID_ID, KNOWN_COUNTY):
                kwarg, parameter = RUN_PARAMETERS[exp["type"]]
                assert exp["kwargs"][kwarg] == {"$PARAMETER": parameter}, f"{path.name}: {exp['type']}"


def test_a_run_keeps_its_result_in_the_runtime_context_and_leaves_the_checkout_alone(tmp_path: Path) -> None:
    before = _tree(COMMITTED)
    settings = load_settings(var_dir=tmp_path / "var")
    runtime = sync_gx_context(tmp_path / "var" / "gx")
    path = suite_path(settings, "cdpf")
    from core.contracts import contract_for

    doc = load_suite(path, set(contract_for(settings, "cdpf").names))
    frame = _cdpf_frame()
    outcomes = run_suite(frame, doc, path, runtime, suite_parameters(settings, AS_OF), run_name="cdpf-b1")
    valid_id = next(o for o in outcomes if o["type"] == VALID_ID)
    assert valid_id["index"].tolist() == [1]  # the wrong check character, judged as of AS_OF

    assert _tree(COMMITTED) == before, "a run wrote into the committed context"
    for name, digest in before.items():  # the committed suite ran as committed: not re-added
        if name.endswith(".json") or name.endswith(".yml"):
            assert hashlib.sha256((runtime / name).read_bytes()).hexdigest() == digest, name
    (stored,) = (runtime / GX_RESULTS / "cdpf" / "cdpf-b1").glob("*/*.json")
    result = json.loads(stored.read_text(encoding="utf-8"))
    assert (
        result["meta"]["validation_id"]
        == json.loads((COMMITTED / "validation_definitions" / "cdpf.json").read_text("utf-8"))["id"]
    )
    assert "110105194912310021" not in stored.read_text(encoding="utf-8")  # positions and counts only
    parameters = {
        r["expectation_config"]["type"]: r["expectation_config"]["kwargs"] for r in result["results"]
    }
    assert parameters[VALID_ID]["as_of"] == "2025-06-30"


def test_a_suite_given_by_path_is_added_to_the_runtime_context_only(tmp_path: Path) -> None:
    before = _tree(COMMITTED)
    runtime = sync_gx_context(tmp_path / "gx")
    doc = {
        "name": "elsewhere",
        "expectations": [
            {
                "type": VALID_ID,
                "kwargs": {"column": "id_number"},
                "meta": {"reason_code": "ID_INVALID", "reason_zh": "公民身份号码无效"},
            }
        ],
    }
    path = tmp_path / "elsewhere.json"
    path.write_text(json.dumps(doc), encoding="utf-8")
    loaded = load_suite(path, {"id_number"})
    born_2050 = "11010520500101001"
    born_2050 += str(check_char(pd.Series([born_2050])).iloc[0])
    frame = pd.DataFrame({"id_number": pd.Series([born_2050], dtype="string")})
    for as_of, expected in (("2049-12-31", [0]), ("2050-01-01", [])):  # the batch's date, not today
        (outcome,) = run_suite(frame, loaded, path, runtime, {"as_of": as_of}, run_name=as_of)
        assert outcome["index"].tolist() == expected
    assert json.loads((runtime / "expectations" / "elsewhere.json").read_text("utf-8"))["name"] == "elsewhere"
    assert (runtime / "validation_definitions" / "elsewhere.json").is_file()
    assert _tree(COMMITTED) == before
