"""Services delivered (三查): eligible persons whose decision file has no receipt, through the real
exchange, the real delivery ledger (folder transport) and the audit stage."""

from __future__ import annotations

import json
import shutil
from datetime import timedelta
from pathlib import Path

import pandas as pd
from test_report import AS_OF, UNMASKED, _stage, tiny_frames

from core.storage import Storage
from stages.deliver import deliver, deliveries
from stages.exchange import read_carried


def test_only_the_file_without_a_receipt_is_listed_after_the_delay(settings) -> None:
    from stages.audit import audit_stage
    from stages.eligibility import eligibility_stage
    from stages.exchange import exchange_stage
    from stages.merge import merge_stage
    from stages.report import report_stage

    storage = Storage(settings)
    for source, frame in tiny_frames().items():
        _stage(storage, source, frame, {"rows": len(frame), "reason_counts": {}})
    first = "cycle-2026-03-01"
    merge_stage(settings, AS_OF, first)
    eligibility_stage(settings, AS_OF, first)
    exchanged = exchange_stage(settings, AS_OF, first)
    decisions = pd.read_parquet(storage.run_dir(first) / "decisions.parquet")
    subsidies = decisions[
        decisions["eligible"] & decisions["service"].isin(["living_subsidy", "nursing_subsidy"])
    ]
    assert len(subsidies) == 2

    # the exchange recorded which raw (ID, service) each decision file carries, pseudonymised ones too
    carried = read_carried(storage)
    pairs = set(zip(subsidies["id_number"], subsidies["service"], strict=True))
    for contract in ("civil_two_subsidies", "cdpf_subsidy_statistics"):
        rows = carried[carried["contract"] == contract]
        assert set(zip(rows["id_number"], rows["service"], strict=True)) == pairs
    files = {f["contract"]: Path(f["path"]).name for f in exchanged.files}

    deliver(settings)
    civil_file = files["civil_two_subsidies"]
    inbox = storage.var / "sandbox" / "partners" / "civil" / "inbox"
    (inbox / (civil_file + ".ack")).write_text('{"received": true}', encoding="utf-8")  # civil's receipt
    deliver(settings)
    status = {r["file"]: r["status"] for r in deliveries(storage)}
    assert status[civil_file] == "acked" and status[files["cdpf_subsidy_statistics"]] == "pending"

    def audit_on(days: int) -> tuple[pd.DataFrame, dict]:
        run = f"cycle-{AS_OF + timedelta(days=days)}"
        storage.run_dir(run).mkdir(parents=True, exist_ok=True)
        shutil.copy(storage.run_dir(first) / "decisions.parquet", storage.run_dir(run) / "decisions.parquet")
        summary = audit_stage(settings, AS_OF + timedelta(days=days), run)
        return pd.read_parquet(storage.run_dir(run) / "audit" / "no_receipt.parquet"), summary

    early, summary = audit_on(7)  # the configured delay (7 days) has not passed
    assert early.empty and summary.no_receipt["cases"] == 0
    late, summary = audit_on(10)
    assert set(zip(late["id_number"], late["service"], strict=True)) == pairs
    assert set(late["file"]) == {files["cdpf_subsidy_statistics"]} and set(late["partner"]) == {"cdpf_stats"}
    assert set(late["status"]) == {"pending"} and set(late["days_waiting"]) == {10}
    assert late["hukou_county"].notna().all()
    assert summary.no_receipt == {"cases": 2, "persons": 1, "files": 1, "delay_days": 7}

    reported = report_stage(settings, AS_OF + timedelta(days=10), "cycle-2026-03-11")
    html = Path(reported.path).read_text(encoding="utf-8")
    data = json.loads(Path(reported.json).read_text(encoding="utf-8"))
    assert data["audit"]["no_receipt"]["cases"] == 2
    assert {r["file"] for r in data["audit"]["no_receipt_sample"]} == {files["cdpf_subsidy_statistics"]}
    assert files["cdpf_subsidy_statistics"] in html and "逾期未回执" in html
    assert not UNMASKED.search(html) and not UNMASKED.search(json.dumps(data))
