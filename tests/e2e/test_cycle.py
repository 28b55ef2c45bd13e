"""The whole cycle on a 2,000-person sandbox, through the real DAGs, against the generator's ground truth."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
from collections import Counter
from datetime import date
from pathlib import Path

import pandas as pd
import pytest

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
HUB = [sys.executable, "-m", "hub.cli"]


@pytest.fixture(scope="module")
def cycle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    var = tmp_path_factory.mktemp("e2e") / "var"
    env = {**os.environ, "LIANBAN_VAR": str(var)}
    env.pop("LIANBAN_POLICE_URL", None)
    subprocess.run(
        [*HUB, "sandbox", "init", "--persons", "2000", "--seed", "7"], env=env, cwd=ROOT, check=True
    )
    # --verbose: the stage and Airflow logs at INFO, which the personal-data scan reads
    done = subprocess.run([*HUB, "run", "--verbose"], env=env, cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    # the run's own output (python logging, Airflow's console) beside var/, for the personal-data scan
    (var.parent / "hub-run.log").write_text(done.stdout + done.stderr, encoding="utf-8")
    return var


def _as_of(var: Path) -> str:
    return json.loads((var / "sandbox" / "sandbox.json").read_text(encoding="utf-8"))["as_of"]


def test_quarantine_matches_ground_truth(cycle: Path) -> None:
    truth = pd.read_csv(cycle / "sandbox" / "truth" / "quarantine.csv", dtype=str, keep_default_na=False)
    assert len(truth) > 0, "the sandbox injected no unfixable defect"
    expected = Counter(zip(truth["source"], truth["id_raw"], truth["reason_code"], strict=True))
    found: Counter[tuple[str, str, str]] = Counter()
    for path in sorted((cycle / "staged").glob("*/*/quarantine.parquet")):
        source = path.parent.parent.name
        q = pd.read_parquet(path)
        for id_raw, codes in zip(q["id_raw"].fillna(""), q["reason_codes"], strict=True):
            primary = [c for c in str(codes).split(";") if (source, id_raw, c) in expected]
            found[(source, id_raw, primary[0] if primary else str(codes))] += 1
    assert found == expected


def _staged(var: Path, name: str, columns: list[str]) -> pd.DataFrame:
    """One staged file of every batch, with its source."""
    frames = [
        pd.read_parquet(path, columns=columns).assign(source=path.parent.parent.name)
        for path in sorted((var / "staged").glob(f"*/*/{name}"))
    ]
    return pd.concat(frames, ignore_index=True)


def test_every_defect_class_lands_where_it_should(cycle: Path) -> None:
    """Per injected defect class (truth/defects.csv): each damaged row the hub must refuse is in quarantine
    with that class's reason code; each row it must repair or keep is accepted and in no quarantine; and
    every quarantined row is one the generator damaged (no clean row is refused)."""
    from sandbox.generator import DEFECT_KINDS

    defects = pd.read_csv(cycle / "sandbox" / "truth" / "defects.csv", dtype=str, keep_default_na=False)
    truth = pd.read_csv(cycle / "sandbox" / "truth" / "quarantine.csv", dtype=str, keep_default_na=False)
    quarantine = _staged(cycle, "quarantine.parquet", ["id_raw", "reason_codes"])
    quarantine["id_raw"] = quarantine["id_raw"].fillna("")
    coded = quarantine.assign(code=quarantine["reason_codes"].str.split(";")).explode("code")
    refused = set(zip(coded["source"], coded["id_raw"], coded["code"], strict=True))
    refused_rows = set(zip(quarantine["source"], quarantine["id_raw"], strict=True))
    accepted = _staged(cycle, "accepted.parquet", ["id_number"])
    kept = set(zip(accepted["source"], accepted["id_number"], strict=True))

    for kind in DEFECT_KINDS:
        rows = defects[defects["defect"] == kind.name]
        assert len(rows) > 0, f"the sandbox injected no {kind.name}; this check would be empty"
        if kind.reason is not None:
            missed = [
                (s, r)
                for s, r in zip(rows["source"], rows["id_raw"], strict=True)
                if (s, r, kind.reason) not in refused
            ]
            assert not missed, (
                f"{kind.name}: {len(missed)} rows not quarantined as {kind.reason}, e.g. {missed[:3]}"
            )
            continue
        for source, person, raw in zip(rows["source"], rows["id_number"], rows["id_raw"], strict=True):
            sources = ["cdpf", "police", "civil", "hrss"] if source == "all" else [source]
            for s in sources:
                assert (s, raw) not in refused_rows, f"{kind.name}: {s} row {raw!r} was quarantined"
            if source != "all":
                assert (source, person) in kept, f"{kind.name}: {source} row of {person[:6]}... not accepted"

    expected_rows = set(zip(truth["source"], truth["id_raw"], strict=True))
    clean_refused = refused_rows - expected_rows
    assert not clean_refused, f"{len(clean_refused)} clean rows quarantined, e.g. {sorted(clean_refused)[:3]}"


def test_every_decision_matches_ground_truth(cycle: Path) -> None:
    truth = pd.read_csv(cycle / "sandbox" / "truth" / "decisions.csv", dtype={"id_number": str})
    got = pd.read_parquet(cycle / "runs" / f"cycle-{_as_of(cycle)}" / "decisions.parquet")
    merged = truth.merge(
        got[["id_number", "service", "eligible", "amount"]],
        on=["id_number", "service"],
        how="outer",
        suffixes=("_truth", "_hub"),
        indicator=True,
    )
    assert (merged["_merge"] == "both").all(), merged[merged["_merge"] != "both"].head(10).to_string()
    wrong = merged[
        (merged["eligible_truth"].astype(bool) != merged["eligible_hub"].astype(bool))
        | ((merged["amount_truth"] - merged["amount_hub"]).abs() > 0.005)
    ]
    assert wrong.empty, f"{len(wrong)} decisions differ, e.g.\n{wrong.head(10).to_string()}"
    assert merged["eligible_truth"].astype(bool).sum() > 50
    # every service of the bundle is compared, and each has persons on both sides of its rules
    from core.settings import load_settings
    from transforms.eligibility import load_policy

    settings = load_settings(var_dir=cycle)
    policy = load_policy(settings.path(settings.policy), date.fromisoformat(_as_of(cycle)))
    per_service = merged.groupby("service")["eligible_truth"].agg(["sum", "count"])
    assert set(per_service.index) == set(policy.services) and len(policy.services) >= 7
    thin = per_service[(per_service["sum"] < 3) | (per_service["sum"] == per_service["count"])]
    assert thin.empty, f"a service the comparison cannot test: {thin.to_string()}"


def test_injected_name_conflicts_are_recorded(cycle: Path) -> None:
    import sqlalchemy as sa

    truth = pd.read_csv(cycle / "sandbox" / "truth" / "conflicts.csv", dtype=str)
    engine = sa.create_engine(f"sqlite:///{cycle / 'master.sqlite'}")
    conflicts = pd.read_sql("select id_number, conflict_type from conflict", engine)
    names = set(conflicts.loc[conflicts["conflict_type"] == "NAME_MISMATCH", "id_number"])
    assert set(truth.loc[truth["conflict_type"] == "NAME_MISMATCH", "id_number"]) == names
    # every conflict type, person by person (DEAD_BUT_ACTIVE may come from hrss and from civil: one pair)
    found = set(zip(conflicts["id_number"], conflicts["conflict_type"], strict=True))
    expected = set(zip(truth["id_number"], truth["conflict_type"], strict=True))
    assert found == expected, (sorted(found - expected)[:5], sorted(expected - found)[:5])
    assert {t for _, t in expected} >= {
        "NAME_MISMATCH",
        "DEAD_BUT_ACTIVE",
        "CERT_ACTIVE_MOVED_OUT",
        "ID_SUPERSEDED",
    }


def test_reissued_numbers_are_kept_and_followed(cycle: Path) -> None:
    """Police's 原公民身份号码 pairs land in id_change; the master keys those people by the new number only."""
    import sqlalchemy as sa

    reissued = pd.read_csv(cycle / "sandbox" / "truth" / "defects.csv", dtype=str).query(
        "defect == 'id_reissued'"
    )
    police = pd.read_json(next((cycle / "sandbox" / "police").glob("*.jsonl")), lines=True, dtype=str)
    police = police.dropna(subset=["ygmsfhm"])
    engine = sa.create_engine(f"sqlite:///{cycle / 'master.sqlite'}")
    changes = pd.read_sql("select old_id, new_id, source from id_change", engine)
    persons = set(pd.read_sql("select id_number from person", engine)["id_number"])
    assert len(reissued) > 0 and set(changes["source"]) == {"police"}
    assert set(zip(changes["old_id"], changes["new_id"], strict=True)) == set(
        zip(police["ygmsfhm"], police["gmsfhm"], strict=True)
    )
    assert set(changes["new_id"]) == set(reissued["id_number"]) <= persons
    assert not set(changes["old_id"]) & persons


def test_exchange_files_match_manifests_and_neutralise_formulas(cycle: Path) -> None:
    manifests = sorted((cycle / "outbox").glob("*/*/*.manifest.json"))
    assert manifests, "no exchange file was written"
    for manifest_path in manifests:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        data = manifest_path.with_name(manifest_path.name.removesuffix(".manifest.json"))
        assert hashlib.sha256(data.read_bytes()).hexdigest() == manifest["sha256"]
    formula_ids = set(pd.read_csv(cycle / "sandbox" / "truth" / "formula_names.csv", dtype=str)["id_number"])
    civil = next((cycle / "outbox" / "civil").glob("*/civil_two_subsidies_*.csv"))
    table = pd.read_csv(civil, dtype=str, encoding="gb18030", keep_default_na=False)
    assert not table.map(lambda v: v[:1] in {"=", "+", "-", "@", "\t", "\r"}).any().any()
    hits = table[table["公民身份号码"].isin(formula_ids)]
    assert len(hits) > 0, "no formula-looking name reached the civil file; the check would be empty"
    assert hits["姓名"].str.match(r"'[=+]").all()


def test_report_is_self_contained_and_masked(cycle: Path) -> None:
    report = cycle / "reports" / f"cycle-{_as_of(cycle)}"
    html = (report / "report.html").read_text(encoding="utf-8")
    assert not re.search(r"https?://|src=\"//", html)
    for text in (html, (report / "report.json").read_text(encoding="utf-8")):
        assert not re.search(r"(?<![\dX*])\d{17}[\dX](?![\dX])", text), "an unmasked ID number in the report"


def test_every_quarantined_row_goes_back_to_its_department(cycle: Path) -> None:
    for path in sorted((cycle / "staged").glob("*/*/quarantine.parquet")):
        source, batch = path.parent.parent.name, path.parent.name
        quarantined = pd.read_parquet(path)
        rejects = cycle / "outbox" / source / "rejects" / f"rejects_{batch}.csv"
        if quarantined.empty:
            assert not rejects.exists()
            continue
        encoding = "gb18030" if source == "hrss" else "utf-8"
        table = pd.read_csv(rejects, dtype=str, encoding=encoding, keep_default_na=False)
        assert sorted(table["行号"].astype(int)) == sorted(quarantined["_source_line"].astype(int))
        assert (table["错误原因"] != "").all()


def test_validation_reports_are_offline_and_masked(cycle: Path) -> None:
    pages = sorted((cycle / "staged").glob("*/*/validation.html"))
    assert len(pages) >= 4
    for page in pages:
        html = page.read_text(encoding="utf-8")
        assert not re.search(r"https?:|//|\bsrc=|\bhref=|url\(|@import", html), page
        assert not re.search(r"(?<![\dX*])\d{17}[\dX](?![\dX])", html), f"unmasked ID in {page}"


def _audit(var: Path, name: str) -> pd.DataFrame:
    return pd.read_parquet(var / "runs" / f"cycle-{_as_of(var)}" / "audit" / f"{name}.parquet")


def test_payment_audit_matches_ground_truth_person_by_person(cycle: Path) -> None:
    """应享未享 / 不应享而享: every (person, service, month) the generator made differ, with both amounts."""
    truth = pd.read_csv(cycle / "sandbox" / "truth" / "payments.csv", dtype={"id_number": str, "month": str})
    assert set(truth["kind"]) == {
        "underpaid_month",
        "never_paid",
        "paid_after_death",
        "paid_moved_out",
        "paid_cancelled_cert",
        "paid_twice",
        "above_policy",
    }
    found = _audit(cycle, "payment_findings")
    expected = set(
        zip(
            truth["id_number"],
            truth["service"],
            truth["month"],
            truth["entitled"],
            truth["paid"],
            strict=True,
        )
    )
    got = set(
        zip(
            found["id_number"],
            found["service"],
            found["month"].dt.strftime("%Y%m"),
            found["entitled"],
            found["paid"],
            strict=True,
        )
    )
    assert got == expected, (sorted(got - expected)[:5], sorted(expected - got)[:5])
    kind = dict(zip(zip(truth["id_number"], truth["month"], strict=False), truth["kind"], strict=True))
    for row in found.itertuples():
        k = kind[(row.id_number, f"{row.month:%Y%m}")]
        want = {"underpaid_month": "ELIGIBLE_NOT_PAID", "never_paid": "ELIGIBLE_NOT_PAID"}.get(k)
        want = want or ("OVERPAID" if k in ("paid_twice", "above_policy") else "PAID_NOT_ELIGIBLE")
        assert row.finding == want, (k, row.finding)
    work_list = next((cycle / "outbox" / "civil").glob("*/civil_payment_audit_*.csv"))
    assert oct(work_list.stat().st_mode & 0o777) == "0o600"
    listed = pd.read_csv(work_list, encoding="gb18030", dtype=str)
    assert set(listed["公民身份号码"]) == set(truth["id_number"])


def test_fund_monitoring_matches_ground_truth(cycle: Path) -> None:
    truth = pd.read_csv(cycle / "sandbox" / "truth" / "fund_findings.csv", dtype=str, keep_default_na=False)
    found = _audit(cycle, "fund_findings")
    found = found[found["rule"] != "COUNTY_RISE"]  # a county figure, not injected per person
    expected = set(zip(truth["id_number"], truth["service"], truth["month"], truth["rule"], strict=True))
    got = set(
        zip(
            found["id_number"],
            found["service"].fillna(""),
            found["month"].dt.strftime("%Y%m"),
            found["rule"],
            strict=True,
        )
    )
    assert got == expected, (sorted(got - expected)[:5], sorted(expected - got)[:5])
    assert {r for *_, r in expected} == {
        "DUPLICATE_PAYMENT",
        "AMOUNT_OUTSIDE_POLICY",
        "PAID_AFTER_STOP",
        "SHARED_ACCOUNT",
    }
    assert not re.search(r"\d{17}[\dX]", " ".join(found["evidence"]))


def test_delivery_and_needs_audits_match_ground_truth(cycle: Path) -> None:
    truth = pd.read_csv(cycle / "sandbox" / "truth" / "payments.csv", dtype={"id_number": str})
    never = set(
        zip(*[truth.loc[truth["kind"] == "never_paid", c] for c in ("id_number", "service")], strict=True)
    )
    late = _audit(cycle, "not_delivered")
    assert set(zip(late["id_number"], late["service"], strict=True)) == never and never
    # the exchange indexed every eligible subsidy decision it sent civil; in a first run no file is
    # older than the receipt delay yet, so none is listed as unreceipted
    decisions = pd.read_parquet(cycle / "runs" / f"cycle-{_as_of(cycle)}" / "decisions.parquet")
    paid = decisions[decisions["eligible"] & decisions["service"].isin(["living_subsidy", "nursing_subsidy"])]
    carried = pd.concat(
        pd.read_parquet(p) for p in (cycle / "state" / "carried" / "civil_two_subsidies").glob("*.parquet")
    )
    assert set(zip(carried["id_number"], carried["service"], strict=True)) == set(
        zip(paid["id_number"], paid["service"], strict=True)
    )
    assert _audit(cycle, "no_receipt").empty

    import sqlalchemy as sa

    needs = pd.read_csv(cycle / "sandbox" / "truth" / "needs.csv", dtype=str, keep_default_na=False)
    engine = sa.create_engine(f"sqlite:///{cycle / 'master.sqlite'}")
    master = pd.read_sql("select id_number, cert_status, hukou_status from person", engine)
    alive = set(
        master.loc[(master["cert_status"] == "active") & (master["hukou_status"] != "dead"), "id_number"]
    )
    as_of = pd.Timestamp(_as_of(cycle))
    surveyed = pd.to_datetime(needs["surveyed_on"].replace("", None))
    unknown = needs[surveyed.isna() | ((as_of - surveyed).dt.days > 365)]
    expected = set(unknown["id_number"]) & alive
    found = _audit(cycle, "needs_unknown")
    assert set(found["id_number"]) == expected and expected

    villages = _audit(cycle, "villages")
    residents = needs[needs["id_number"].isin(alive)].groupby("village").size()
    known = villages[villages["village"] != "unknown"].set_index("village")["residents"]
    assert known.to_dict() == residents.to_dict()
    assert villages["village"].str.fullmatch(r"\d{12}|unknown").all()
    assert set(villages.loc[villages["village"] != "unknown", "tier"]) >= {1, 2}


REPORT_SECTIONS = (
    "summary",
    "sources",
    "validation",
    "quarantine",
    "conflicts",
    "decisions",
    "audits",
    "exchange",
)
PROBES = {
    "sections": f"{list(REPORT_SECTIONS)}.filter(id => document.getElementById(id) !== null)",
    "svg": "document.querySelectorAll('svg.chart').length",
    "h1": "document.querySelector('h1').innerText",
    "audits": "document.getElementById('audits').innerText",
    "outside": "[...document.querySelectorAll('[src],[href]')].map(e => e.getAttribute('src') || e.getAttribute('href'))"
    ".filter(u => !u.startsWith('#') && !u.startsWith('../'))",
}


def test_report_opens_offline_in_chromium(cycle: Path) -> None:
    """The report in headless Chromium with the network off: every section there, charts drawn, Chinese by
    default and English after the switch, no console error and no request but the file itself."""
    from browser import chromium, visit

    if chromium() is None:
        pytest.fail("chromium is not installed (.ci/run installs it)")
    report = cycle / "reports" / f"cycle-{_as_of(cycle)}" / "report.html"
    shot = cycle / "screenshots" / "report.png"
    seen = visit(report, shot, PROBES)
    assert seen.requests == [report.resolve().as_uri()], seen.requests
    assert not seen.exceptions and not [c for c in seen.console if c[0] in ("error", "assert")], seen.console
    assert seen.probes["sections"] == list(REPORT_SECTIONS)
    assert seen.probes["svg"] >= 3 and seen.probes["outside"] == []
    assert seen.probes["h1"].startswith("联办数据交换运行报告") and "Lianban" not in seen.probes["h1"]
    assert "应享未享" in seen.probes["audits"] and "不应享而享" in seen.probes["audits"]
    english = visit(
        report,
        cycle / "screenshots" / "report-en.png",
        PROBES,
        ["document.getElementById('lang-en').click()"],
    )
    assert english.probes["h1"] == "Lianban cycle report"
    assert (
        "Eligible, not paid" in english.probes["audits"]
        or "eligible not paid" in english.probes["audits"].lower()
    )
    assert shot.stat().st_size > 20_000 and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    index = visit(
        cycle / "reports" / "index.html",
        cycle / "screenshots" / "index.png",
        {
            "rows": "document.querySelectorAll('#runs tr').length",
            "svg": "document.querySelectorAll('svg.chart').length",
        },
    )
    assert index.probes["rows"] >= 2 and index.probes["svg"] == 2 and not index.console
    assert seen.seconds + english.seconds + index.seconds < 30


def test_the_browser_probe_sees_requests_and_console_errors(tmp_path: Path) -> None:
    """The probe above can fail: a page that fetches and logs an error is caught, and the fetch never
    leaves the machine."""
    from browser import chromium, visit

    if chromium() is None:
        pytest.fail("chromium is not installed (.ci/run installs it)")
    page = tmp_path / "bad.html"
    page.write_text(
        '<!DOCTYPE html><html><body><img src="https://example.invalid/x.png">'
        "<script>console.error('boom'); undefinedFunction();</script></body></html>",
        encoding="utf-8",
    )
    seen = visit(page, tmp_path / "bad.png", {"n": "1"})
    assert "https://example.invalid/x.png" in seen.requests
    assert ("error", "boom") in seen.console and seen.exceptions


def test_hub_report_and_runs_commands(cycle: Path) -> None:
    """`hub report` rewrites the latest run's report from the run's files; its JSON twin carries the audit
    stage's figures; `hub runs` lists the run and writes the index."""
    env = {**os.environ, "LIANBAN_VAR": str(cycle)}
    run_id = f"cycle-{_as_of(cycle)}"
    done = subprocess.run([*HUB, "report"], env=env, cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"reports/{run_id}/report.html" in done.stdout
    twin = json.loads((cycle / "reports" / run_id / "report.json").read_text(encoding="utf-8"))
    audit = json.loads((cycle / "runs" / run_id / "audit.json").read_text(encoding="utf-8"))
    assert twin["audit"]["payments"] == audit["payments"] and twin["audit"]["fund"] == audit["fund"]
    assert twin["audit"]["villages"] == audit["villages"]
    cdpf = next(v for v in twin["validation"] if v["source"] == "cdpf")
    valid = next(c for c in cdpf["checks"] if c["check"] == "expect_column_values_to_be_valid_id_number")
    refused = sum(
        n for code, n in cdpf_reasons(cycle).items() if code.startswith("ID_") and code != "ID_MISSING"
    )
    assert valid["failing_rows"] == refused > 0 and valid["passed"] is False
    listed = subprocess.run([*HUB, "runs"], env=env, cwd=ROOT, capture_output=True, text=True)
    assert listed.returncode == 0 and run_id in listed.stdout and "index.html" in listed.stdout
    missing = subprocess.run(
        [*HUB, "report", "cycle-1999-01-01"], env=env, cwd=ROOT, capture_output=True, text=True
    )
    assert missing.returncode != 0 and "cycle-1999-01-01" in missing.stderr + missing.stdout


def cdpf_reasons(var: Path) -> dict[str, int]:
    path = next((var / "staged" / "cdpf").glob("*/validation.json"))
    return dict(json.loads(path.read_text(encoding="utf-8"))["reason_counts"])


def test_explain_gives_the_cycle_decisions_with_facts_and_sources(cycle: Path) -> None:
    """`hub explain --json` agrees with the run's decisions for every service, masked unless asked (audited)."""
    decisions = pd.read_parquet(cycle / "runs" / f"cycle-{_as_of(cycle)}" / "decisions.parquet")
    chosen = decisions[(decisions["service"] == "nursing_subsidy") & decisions["eligible"]]["id_number"].iloc[
        0
    ]
    env = {**os.environ, "LIANBAN_VAR": str(cycle)}
    done = subprocess.run(
        [*HUB, "explain", chosen, "--json"], env=env, cwd=ROOT, capture_output=True, text=True, check=True
    )
    result = json.loads(done.stdout)
    assert chosen not in done.stdout and result["id_number"] == f"{chosen[:6]}********{chosen[-4:]}"
    mine = decisions[decisions["id_number"] == chosen].set_index("service")
    assert {s["service"] for s in result["services"]} == set(mine.index)
    for s in result["services"]:
        assert s["eligible"] == bool(mine.loc[s["service"], "eligible"])
        assert s["amount"] == pytest.approx(float(mine.loc[s["service"], "amount"]))
        assert s["eligible"] == all(c["passed"] for c in s["checks"]) or s["reasons"] == ["AMOUNT_UNKNOWN"]
    nursing = next(s for s in result["services"] if s["service"] == "nursing_subsidy")
    severity = next(c for c in nursing["checks"] if c["code"] == "NOT_SEVERE")
    assert {f["attribute"]: f["source"] for f in severity["facts"]} == {"category": "cdpf", "level": "cdpf"}
    assert all(f["batch"].startswith("cdpf-") for f in severity["facts"])
    assert nursing["amount_computed"] == pytest.approx(nursing["amount"])
    assert "nursing_tier" in nursing["amount_formula"] and "nursing_tier" not in nursing["amount_filled"]
    audit = cycle / "state" / "audit.jsonl"
    before = audit.read_text(encoding="utf-8").count("\n") if audit.exists() else 0
    raw = subprocess.run(
        [*HUB, "explain", chosen, "--unmasked", "--lang", "en"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert raw.returncode == 0 and chosen in raw.stdout and "nursing_subsidy" in raw.stdout
    assert audit.read_text(encoding="utf-8").count("\n") == before + 1


def test_no_personal_data_where_none_is_contracted(cycle: Path) -> None:
    """No valid ID number, certificate number or sandbox name in logs (the run's output at INFO, Airflow's
    task log files), reports, run records, the Airflow metadata database (XCom, the event log, rendered
    fields), the audit log, manifests, or any partner file whose contract does not carry them
    (tests/e2e/pii_scan.py)."""
    from pii_scan import name_pattern, scan, scan_text, scanned_files

    output = (cycle.parent / "hub-run.log").read_text(encoding="utf-8")
    hits, places = scan(cycle, ROOT, [("hub run output", output)])
    assert not hits, f"{len(hits)} personal data found, e.g. {hits[:10]}"
    # the scan looked where the data would be: Airflow task logs, XCom, reports, run records, manifests
    scanned = {p.relative_to(cycle).parts[0] for p in scanned_files(cycle, ROOT)}
    assert {"reports", "runs", "outbox", "staged"} <= scanned, scanned
    assert places > 20 and len(output) > 10_000, "the run logged almost nothing: the scan would be empty"
    # and it finds what it looks for: the contracted civil file carries raw numbers and names
    civil = next((cycle / "outbox" / "civil").glob("*/civil_two_subsidies_*.csv"))
    found = {h.kind for h in scan_text("civil", civil.read_bytes().decode("gb18030"), name_pattern(cycle))}
    assert found == {"id_number", "name"}
