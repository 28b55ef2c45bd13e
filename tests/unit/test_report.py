"""The auditor report (self-contained, masked), the master store round trip, and the cycle stages end to end."""

from __future__ import annotations

import json
import re
from datetime import date
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from hub.master_store import MASTER_COLUMNS as STORED
from hub.master_store import MasterStore, person
from hub.report import write_report
from hub.settings import load_settings
from hub.storage import Storage
from transforms.merge import merge_sources

AS_OF = date(2026, 3, 1)
RAW_ID = "330106198001010014"
UNMASKED = re.compile(r"(?<![\dX*])\d{17}[\dX](?![\dX])")
_W = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)


def make_id(county: str, birth: str, seq: str) -> str:
    body = county + birth + seq
    return body + "10X98765432"[sum(int(d) * w for d, w in zip(body, _W, strict=True)) % 11]


def summary() -> dict[str, Any]:
    return {
        "policy": "zhejiang-two-subsidies 2026.1",
        "sources": [
            {
                "source": "cdpf",
                "batch_id": "cdpf-2026-03-01-abcdef012345",
                "verdict": "accepted",
                "rows": 10,
                "accepted": 9,
                "quarantined": 1,
                "reasons": {"ID_CHECKSUM": 1},
                "used_batch_id": "cdpf-2026-03-01-abcdef012345",
                "sample": f"first bad row {RAW_ID}, row id{RAW_ID}y and legacy 330106800101001",
            },
            {"source": "hrss", "batch_id": "hrss-x", "verdict": "held", "reasons": {}, "used_batch_id": None},
        ],
        "master": {"persons": 9, "conflicts": 2, "conflicts_by_type": {"NAME_MISMATCH": 2}},
        "decisions": [
            {
                "service": "living_subsidy",
                "title": "困难残疾人生活补贴",
                "evaluated": 9,
                "eligible": 3,
                "amount_total": 1035.0,
            }
        ],
        "exchange": [
            {
                "partner": "civil",
                "contract": "civil_two_subsidies",
                "file": "civil_two_subsidies_20260301.csv",
                "period": "2026-03",
                "rows": 3,
                "sha256": "ab" * 32,
            }
        ],
        "warnings": [
            f"hrss held; person {RAW_ID} looked odd",
            "see https://example.org/x and //cdn.example/y.css",
            "<script>alert(1)</script>",
        ],
    }


def test_report_is_self_contained_bilingual_and_masked(settings) -> None:
    path = write_report(Storage(settings), "cycle-2026-03-01", AS_OF, summary())
    assert path == Storage(settings).report_dir("cycle-2026-03-01") / "report.html"
    html = path.read_text(encoding="utf-8")
    data = path.with_name("report.json").read_text(encoding="utf-8")
    assert "http://" not in html and "https://" not in html and "//" not in html
    assert not re.search(r"<(script|link|img|iframe)\b|\bsrc=|\bhref=|url\(", html, re.IGNORECASE)
    assert "&lt;script&gt;" in html  # autoescaped, not executed
    for heading in (
        "数据批次",
        "Source batches",
        "主档",
        "Master file",
        "资格判定",
        "Decisions",
        "交换文件",
        "Exchange files",
    ):
        assert heading in html
    for text in (html, data):
        assert not UNMASKED.search(text), "an unmasked ID number in the report"
        assert "330106********0014" in text
        assert "330106800101001" not in text
    report = json.loads(data)
    assert report["run_id"] == "cycle-2026-03-01" and report["as_of"] == "2026-03-01"
    assert report["exchange"][0]["sha256"] == "ab" * 32  # hashes are data, left alone
    assert report["sources"][0]["reasons"] == {"ID_CHECKSUM": 1}
    assert "1035.00" in html


def test_report_renders_a_partial_summary(settings) -> None:
    path = write_report(Storage(settings), "r", AS_OF, {})
    assert "无 none" in path.read_text(encoding="utf-8")


# -- master store ----------------------------------------------------------------------------------------


def tiny_frames() -> dict[str, pd.DataFrame]:
    a, b = make_id("330106", "19800101", "001"), make_id("330102", "19900515", "002")
    cdpf = pd.DataFrame(
        {
            "id_number": [a, b],
            "name": ["赵䶮", "阿依·古丽"],
            "gender": ["male", "female"],
            "birth_date": ["1980-01-01", "1990-05-15"],
            "cert_number": [a + "41", b + "53"],
            "category": [4, 5],
            "level": [1, 3],
            "cert_status": ["active", "active"],
            "cert_issued": ["2020-01-01", "2021-06-01"],
            "cert_valid_until": ["2030-01-01", "2031-06-01"],
            "hukou_county": ["330106", "330102"],
            "needs_long_term_care": [True, True],
            "institutional_care": [False, True],
            "updated_at": ["2026-01-01 08:00:00"] * 2,
            "_batch_id": ["cdpf-b1"] * 2,
        }
    )
    police = pd.DataFrame(
        {
            "id_number": [a],
            "name": ["赵岩"],
            "gender": ["male"],
            "birth_date": ["1980-01-01"],
            "hukou_county": ["330106"],
            "hukou_status": ["normal"],
            "death_date": [None],
            "updated_at": ["2026-02-01 08:00:00"],
            "_batch_id": ["police-b1"],
        }
    )
    civil = pd.DataFrame(
        {
            "id_number": [a],
            "name": ["赵䶮"],
            "assistance_type": ["dibao"],
            "county": ["330106"],
            "dibao_standard": [1150.0],
            "start_date": ["2020-01-01"],
            "end_date": [None],
            "active": [True],
            "updated_at": ["2026-01-15 08:00:00"],
            "_batch_id": ["civil-b1"],
        }
    )
    return {"cdpf": cdpf, "police": police, "civil": civil}


@pytest.mark.sqlite
def test_master_store_round_trip_on_a_sqlite_file(tmp_path: Path) -> None:
    settings = load_settings(var_dir=tmp_path)
    url = settings.expand(settings.master_url)
    assert url.startswith("sqlite:///") and str(tmp_path) in url
    result = merge_sources(tiny_frames(), AS_OF)
    store = MasterStore(url)
    store.apply_merge(result, "run-1", AS_OF)
    assert [c.name for c in person.columns][: len(STORED)] == list(STORED)
    back = store.read_master()
    pd.testing.assert_frame_equal(back, result.master)
    conflicts = store.read_conflicts()
    pd.testing.assert_frame_equal(conflicts[list(result.conflicts.columns)], result.conflicts)
    assert set(conflicts["status"]) == {"open"} and set(conflicts["conflict_type"]) == {"NAME_MISMATCH"}

    decisions = pd.DataFrame(
        {
            "id_number": pd.array(list(result.master["id_number"]), dtype="string"),
            "service": pd.array(["living_subsidy"] * 2, dtype="string"),
            "period": pd.array(["2026-03"] * 2, dtype="string"),
            "eligible": [True, False],
            "amount": [345.0, 0.0],
            "reasons": pd.array(["", "NOT_LOW_INCOME"], dtype="string"),
            "policy": pd.array(["p"] * 2, dtype="string"),
            "policy_version": pd.array(["v"] * 2, dtype="string"),
        }
    )
    store.apply_decisions(decisions, "run-1", AS_OF, "policyhash", "sha")
    # a retried task: its first attempt undone, not doubled
    store.apply_decisions(decisions, "run-1", AS_OF, "policyhash", "sha")
    pd.testing.assert_frame_equal(store.read_decisions("run-1"), decisions)
    assert store.read_decisions("other").empty

    smaller = merge_sources({"cdpf": tiny_frames()["cdpf"].iloc[:1]}, AS_OF)
    store.apply_merge(smaller, "run-2", AS_OF)
    counts = store.counts()
    assert counts == {"persons": 1, "conflicts": 0, "conflicts_by_type": {}, "decisions": 2, "runs": 2}
    assert store.run_record("run-1")["decisions"] == 2
    store.dispose()


# -- the cycle stages, end to end on tiny staged batches --------------------------------------------------


def _stage(storage: Storage, source: str, frame: pd.DataFrame, validation: dict[str, Any]) -> str:
    batch_id = f"{source}-2026-03-01-000000000000"
    storage.record_batch(batch_id, source, "2026-03-01", len(frame) + 1)
    folder = storage.staged(source, batch_id)
    folder.mkdir(parents=True)
    frame.assign(_batch_id=batch_id).to_parquet(folder / "accepted.parquet", index=False)
    (folder / "validation.json").write_text(json.dumps(validation), encoding="utf-8")
    storage.set_verdict(batch_id, "accepted", len(frame), 1)
    return batch_id


def test_cycle_stages_on_tiny_batches(settings) -> None:
    from hub import cycle

    storage = Storage(settings)
    for source, frame in tiny_frames().items():
        _stage(storage, source, frame, {"rows": len(frame) + 1, "reason_counts": {"ID_CHECKSUM": 1}})
    run_id = "cycle-2026-03-01"

    merged = cycle.merge_stage(settings, AS_OF, run_id)
    assert merged["persons"] == 2 and merged["missing_sources"] == ["hrss"]
    assert merged["conflicts_by_type"] == {"NAME_MISMATCH": 1}
    decided = cycle.eligibility_stage(settings, AS_OF, run_id)
    assert decided["rows"] == 4
    decisions = pd.read_parquet(storage.run_dir(run_id) / "decisions.parquet")
    eligible = decisions[decisions["eligible"]].set_index("service")["amount"].to_dict()
    assert eligible == {"living_subsidy": 345.0, "nursing_subsidy": 300.0}
    assert (
        decisions.loc[decisions["service"] == "nursing_subsidy", "eligible"].sum() == 1
    )  # no police: not local
    exchanged = cycle.exchange_stage(settings, AS_OF, run_id)
    assert {f["partner"] for f in exchanged["files"]} == {"civil", "cdpf", "hrss", "police"}
    reported = cycle.report_stage(settings, AS_OF, run_id)
    html = Path(reported["path"]).read_text(encoding="utf-8")
    data = json.loads(Path(reported["json"]).read_text(encoding="utf-8"))
    assert not UNMASKED.search(html) and not UNMASKED.search(json.dumps(data))
    assert "//" not in html
    by_source = {s["source"]: s for s in data["sources"]}
    assert by_source["cdpf"]["reasons"] == {"ID_CHECKSUM": 1} and by_source["cdpf"]["verdict"] == "accepted"
    assert any("hrss" in w for w in data["warnings"])
    assert data["master"]["conflicts_by_type"] == {"NAME_MISMATCH": 1}
    assert len(data["exchange"]) == 5  # subsidies + four work lists (empty ones too: "nothing to check")
    for result in (merged, decided, exchanged, reported):
        json.dumps(result)  # XCom-safe


def test_report_links_only_validation_reports_that_exist_under_var(settings) -> None:
    """A relative link to each batch's validation.html beside the report; nothing else becomes a link."""
    storage = Storage(settings)
    page = storage.staged("cdpf", "cdpf-1") / "validation.html"
    page.parent.mkdir(parents=True)
    page.write_text("<html></html>", encoding="utf-8")
    shown = {
        "cdpf": "staged/cdpf/cdpf-1/validation.html",  # exists: linked
        "civil": "staged/civil/civil-1/validation.html",  # not there: text only
        "hrss": "https://cdn.example/validation.html",
        "police": "staged/../../../etc/validation.html",
    }
    summary = {"sources": [{"source": s, "validation_report": v} for s, v in shown.items()]}
    html = write_report(storage, "run-links", AS_OF, summary).read_text(encoding="utf-8")
    links = re.findall(r'href="([^"]*)"', html)
    assert links == ["../../staged/cdpf/cdpf-1/validation.html"]
    assert (storage.report_dir("run-links") / links[0]).resolve() == page.resolve()
    assert "staged/civil/civil-1/validation.html" in html  # still named, for the auditor to find
    data = json.loads((storage.report_dir("run-links") / "report.json").read_text(encoding="utf-8"))
    assert "validation_href" not in data["sources"][0]
