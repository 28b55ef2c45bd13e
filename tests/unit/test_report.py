"""The auditor report (self-contained, masked), the master store round trip, and the cycle stages end to end."""

from __future__ import annotations

import json
import re
from datetime import date
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from core.settings import load_settings
from core.storage import Storage
from stages.report import write_report
from store.master_store import MASTER_COLUMNS as STORED
from store.master_store import MasterStore, person
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
    # in-page anchors (the table of contents) are the only links; no script, image or stylesheet
    assert not re.search(r"<(script|link|img|iframe)\b|\bsrc=|\bhref=\"(?!#)|url\(", html, re.IGNORECASE)
    assert set(re.findall(r'href="#([^"]+)"', html)) <= set(re.findall(r'id="([^"]+)"', html))
    assert "&lt;script&gt;" in html  # autoescaped, not executed
    for heading in (
        "数据批次",
        "Source batches",
        "主档人数",
        "persons in master",
        "运行概况",
        "Run summary",
        "逐源校验",
        "Validation per source",
        "隔离原因",
        "Quarantine by reason",
        "三查",
        "Audits",
        "送达与回执",
        "Mass-change guard",
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
    from stages.eligibility import eligibility_stage
    from stages.exchange import exchange_stage
    from stages.merge import merge_stage
    from stages.report import report_stage

    storage = Storage(settings)
    for source, frame in tiny_frames().items():
        _stage(storage, source, frame, {"rows": len(frame) + 1, "reason_counts": {"ID_CHECKSUM": 1}})
    run_id = "cycle-2026-03-01"

    merged = merge_stage(settings, AS_OF, run_id)
    assert merged.persons == 2 and merged.missing_sources == ["hrss"]
    assert merged.conflicts_by_type == {"NAME_MISMATCH": 1}
    decided = eligibility_stage(settings, AS_OF, run_id)
    assert decided.rows == 2 * 10  # two persons x the ten services of the bundle
    decisions = pd.read_parquet(storage.run_dir(run_id) / "decisions.parquet")
    subsidies = decisions[decisions["service"].isin(["living_subsidy", "nursing_subsidy"])]
    eligible = subsidies[subsidies["eligible"]].set_index("service")["amount"].to_dict()
    assert eligible == {"living_subsidy": 345.0, "nursing_subsidy": 300.0}
    assert (
        decisions.loc[decisions["service"] == "nursing_subsidy", "eligible"].sum() == 1
    )  # no police: not local
    exchanged = exchange_stage(settings, AS_OF, run_id)
    assert {f["partner"] for f in exchanged.files} == {"civil", "cdpf", "cdpf_stats", "hrss", "police"}
    reported = report_stage(settings, AS_OF, run_id)
    html = Path(reported.path).read_text(encoding="utf-8")
    data = json.loads(Path(reported.json).read_text(encoding="utf-8"))
    assert not UNMASKED.search(html) and not UNMASKED.search(json.dumps(data))
    assert "//" not in html
    by_source = {s["source"]: s for s in data["sources"]}
    assert by_source["cdpf"]["reasons"] == {"ID_CHECKSUM": 1} and by_source["cdpf"]["verdict"] == "accepted"
    assert any("hrss" in w for w in data["warnings"])
    assert data["master"]["conflicts_by_type"] == {"NAME_MISMATCH": 1}
    # subsidies, temporary assistance, referral, statistics + four work lists (empty ones too)
    assert len(data["exchange"]) == 8
    for result in (merged, decided, exchanged, reported):
        json.dumps(result.as_json())  # XCom-safe: what the DAG task returns


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
    links = re.findall(r'href="([^"#][^"]*)"', html)
    assert links == ["../../staged/cdpf/cdpf-1/validation.html"]
    assert (storage.report_dir("run-links") / links[0]).resolve() == page.resolve()
    assert "staged/civil/civil-1/validation.html" in html  # still named, for the auditor to find
    data = json.loads((storage.report_dir("run-links") / "report.json").read_text(encoding="utf-8"))
    assert "validation_href" not in data["sources"][0]


# -- the audits, charts, the language switch and the index across runs -------------------------------------


def audit_summary() -> dict[str, Any]:
    data = summary()
    data["validation"] = [
        {
            "source": "cdpf",
            "batch_id": "cdpf-2026-03-01-abcdef012345",
            "gates": [{"gate": "invalid_ratio", "passed": True, "value": 0.1, "limit": 0.2, "detail": "ok"}],
            "checks": [
                {
                    "check": "expect_column_values_to_be_valid_id_number",
                    "column": "id_number",
                    "severity": "error",
                    "passed": False,
                    "failing_rows": 31,
                    "refused_before": 31,
                    "refused_before_codes": {"ID_CHECKSUM": 31},
                    "explained_nulls": 0,
                    "not_checked": 0,
                    "rows_flagged": 0,
                    "reason_code": "ID_INVALID",
                    "sample": [RAW_ID],
                }
            ],
            "passed": 0,
            "failed": 1,
        }
    ]
    data["audit"] = {
        "months": ["2026-01", "2026-02"],
        "payments": {
            "ELIGIBLE_NOT_PAID": {"persons": 3, "months": 5, "amount": -1500.0},
            "PAID_NOT_ELIGIBLE": {"persons": 2, "months": 6, "amount": 1800.0},
        },
        "payment_counties": [
            {
                "hukou_county": "330106",
                "finding": "PAID_NOT_ELIGIBLE",
                "persons": 2,
                "months": 6,
                "amount": 1800.0,
            }
        ],
        "payment_persons": [
            {
                "hukou_county": "330106",
                "id_number": RAW_ID,
                "service": "nursing_subsidy",
                "finding": "PAID_NOT_ELIGIBLE",
                "months": "2026-01,2026-02",
                "month_count": 2,
                "entitled": 0.0,
                "paid": 600.0,
                "difference": 600.0,
            }
        ],
        "fund": {"PAID_AFTER_STOP": 2},
        "fund_findings": [
            {
                "rule": "PAID_AFTER_STOP",
                "county": "330106",
                "id_number": RAW_ID,
                "service": "nursing_subsidy",
                "month": "2026-02",
                "amount": 300.0,
                "evidence": f"{RAW_ID} 2026-02: paid after death on 2025-12-01",
            }
        ],
        "needs": {"NEEDS_SURVEY_MISSING": 4},
        "needs_by_county": [{"county": "330106", "finding": "NEEDS_SURVEY_MISSING", "persons": 4}],
        "villages": {"count": 2, "by_tier": {"1": 1, "3": 1}, "allowance_total": 3600.0},
        "village_list": [
            {"village": "330106001201", "residents": 12, "tier": 1, "allowance": 1200.0, "county": "330106"},
            {"village": "330106001202", "residents": 77, "tier": 3, "allowance": 2400.0, "county": "330106"},
        ],
        "rules": {
            "village_tiers": [
                {"below": 30, "amount": 1200},
                {"below": 51, "amount": 1800},
                {"below": None, "amount": 2400},
            ]
        },
    }
    data["other_stages"] = [{"name": "delivery", "record": {"receipts": 7, "pending": 1}}]
    return data


def test_report_shows_audits_truthful_checks_and_charts(settings) -> None:
    storage = Storage(settings)
    path = write_report(storage, "cycle-2026-03-01", AS_OF, audit_summary())
    html = path.read_text(encoding="utf-8")
    data = json.loads(path.with_name("report.json").read_text(encoding="utf-8"))
    assert not UNMASKED.search(html) and not UNMASKED.search(json.dumps(data, ensure_ascii=False))
    assert "//" not in html and not re.search(r"<script\b", html)
    # the switch: two radio buttons and CSS, Chinese checked first
    assert re.search(r'<input type="radio" name="lang" id="lang-zh" class="lang" checked>', html)
    assert "#lang-en:checked ~ .page .zh { display: none; }" in html
    assert html.count('<svg class="chart"') >= 3  # quarantine, conflicts, payments by county
    for text in (
        "应享未享",
        "不应享而享",
        "-1500.00",
        "1800.00",
        "paid after death on 2025-12-01",
        "&lt; 30",
        "30-50",
        "&gt;= 51",
    ):
        assert text in html, text
    # the ID check is shown failing with the 31 rows the standardiser refused, not "pass, 0"
    row = re.search(r"expect_column_values_to_be_valid_id_number</td>.*?</tr>", html, re.S)
    assert (
        row
        and "不通过" in row.group(0)
        and ">31<" in row.group(0)
        and "ID_CHECKSUM</span>:31" in row.group(0)
    )
    assert "receipts" in html.split('id="deliveries"')[1].split("</section>")[0]  # a delivery record, shown
    # the JSON twin carries the same figures
    assert data["audit"]["payments"]["PAID_NOT_ELIGIBLE"] == {"persons": 2, "months": 6, "amount": 1800.0}
    assert data["validation"][0]["checks"][0]["failing_rows"] == 31
    index = (storage.var / "reports" / "index.html").read_text(encoding="utf-8")
    assert "cycle-2026-03-01/report.html" in index and "<svg" in index and "//" not in index


def test_index_lists_every_run_with_trends(settings) -> None:
    from stages.report import run_rows

    storage = Storage(settings)
    for day, extra in ((date(2026, 1, 1), 0), (date(2026, 2, 1), 2), (date(2026, 3, 1), 5)):
        data = audit_summary()
        data["audit"]["payments"]["PAID_NOT_ELIGIBLE"]["persons"] = extra
        write_report(storage, f"cycle-{day}", day, data)
    rows = run_rows(storage)
    assert [r["run_id"] for r in rows] == ["cycle-2026-01-01", "cycle-2026-02-01", "cycle-2026-03-01"]
    assert [r["not_eligible"] for r in rows] == [0, 2, 5] and rows[0]["fund"] == 2
    index = (storage.var / "reports" / "index.html").read_text(encoding="utf-8")
    assert index.count("<polyline") >= 2 and index.count("/report.html") == 6  # link text and href per run


def test_a_stale_source_is_the_first_thing_the_report_says(settings) -> None:
    """Which source is stale, since when (its last good data and its first refused pull) and why: at
    the top, before the contents and the summary cards."""
    from core.staleness import record_refusal, stale_sources

    storage = Storage(settings)
    record_refusal(storage, "police", date(2026, 2, 28), ConnectionError("[police via rest] dead host"))
    record_refusal(storage, "police", AS_OF, ConnectionError(f"[police via rest] page 1 ({RAW_ID}): refused"))
    stale = stale_sources(storage, ["cdpf", "police"])
    assert [(s["source"], s["refused_since"], s["as_of"]) for s in stale] == [
        ("police", "2026-02-28", "2026-03-01")
    ]
    html = write_report(storage, "cycle-stale", AS_OF, {**summary(), "stale": stale}).read_text(
        encoding="utf-8"
    )
    banner = html.index('<div class="stale" id="stale">')
    assert banner < html.index('<nav class="toc">') < html.index('<section id="summary">')
    text = re.sub(r"<[^>]+>", "", html[banner : html.index("</div>", banner)])
    assert "police" in text and "STALE" in text and "数据过期" in text
    assert "pulls refused since 2026-02-28 (最近last 2026-03-01)" in text
    assert f"ConnectionError: [police via rest] page 1 ({RAW_ID[:6]}********{RAW_ID[-4:]}): refused" in text
    assert "(no accepted batch)" in text


def test_a_successful_pull_ends_the_stale_record(settings) -> None:
    from core.staleness import clear_refusal, record_refusal, refusal

    storage = Storage(settings)
    record_refusal(storage, "hrss", date(2026, 2, 27), RuntimeError("no file"))
    clear_refusal(storage, "hrss")
    record_refusal(storage, "hrss", AS_OF, RuntimeError("no file"))
    assert refusal(storage, "hrss")["refused_since"] == "2026-03-01"  # type: ignore[index]
