"""The whole cycle on a 2,000-person sandbox, through the real DAGs, against the generator's ground truth."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
from collections import Counter
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
    done = subprocess.run([*HUB, "run"], env=env, cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
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


def test_injected_name_conflicts_are_recorded(cycle: Path) -> None:
    import sqlalchemy as sa

    truth = pd.read_csv(cycle / "sandbox" / "truth" / "conflicts.csv", dtype=str)
    engine = sa.create_engine(f"sqlite:///{cycle / 'master.sqlite'}")
    conflicts = pd.read_sql("select id_number, conflict_type from conflict", engine)
    names = set(conflicts.loc[conflicts["conflict_type"] == "NAME_MISMATCH", "id_number"])
    assert set(truth.loc[truth["conflict_type"] == "NAME_MISMATCH", "id_number"]) == names


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
