"""A gate-held batch through the real stages: the master stays on the source's last good batch, the run
report says which gate held it with which numbers, the department gets its reject file from the
exchange stage once, and only an explicit release lets the batch into the master."""

from __future__ import annotations

import hashlib
import json
import re
from datetime import date
from pathlib import Path

import pandas as pd
from batch_builders import cdpf_row, holders, land_sql

from core.settings import Settings
from core.storage import Storage
from stages.eligibility import eligibility_stage
from stages.exchange import exchange_stage
from stages.ingest import stage_batch
from stages.merge import merge_stage
from stages.report import report_stage
from store.master_store import open_store

AS_OF = date(2025, 6, 30)
RAW_ID = re.compile(r"(?<![0-9A-Za-z*])\d{17}[0-9Xx](?![0-9A-Za-z*])")


def _batch(people: list[str], cancelled: int) -> list[dict[str, str]]:
    """Certificates of `people`, the first `cancelled` of them cancelled (ZZZT 2), plus one row whose ID
    has a wrong check character (quarantined: something to send back)."""
    rows = [cdpf_row(h, ZZZT="2" if i < cancelled else "1") for i, h in enumerate(people)]
    bad = people[0][:17] + ("0" if people[0][17] != "0" else "1")
    return [*rows, cdpf_row(people[0], SFZH=bad)]


def _cert_status(settings: Settings) -> pd.Series:
    master = open_store(settings).read_master(["id_number", "cert_status"])
    return master.set_index("id_number")["cert_status"]


def test_held_batch_leaves_the_master_on_the_last_good_batch(settings: Settings, tmp_path: Path) -> None:
    assert (settings.gates.max_event_rise, settings.gates.event_rise_floor) == (0.5, 20)  # the shipped config
    storage = Storage(settings)
    people = holders(60)

    land_sql(settings, "cdpf", "cdpf-good", _batch(people, 4), tmp_path)
    assert stage_batch(settings, "cdpf", "cdpf-good", AS_OF).status == "accepted"
    merge_stage(settings, AS_OF, "run-1")
    eligibility_stage(settings, AS_OF, "run-1")
    first = exchange_stage(settings, AS_OF, "run-1")
    assert [r["batch_id"] for r in first.rejects] == ["cdpf-good"]
    before = _cert_status(settings)
    assert (before == "cancelled").sum() == 4

    # 4 -> 27 cancelled certificates: above 4 x 1.5 + 20 = 26
    land_sql(settings, "cdpf", "cdpf-jump", _batch(people, 27), tmp_path)
    held = stage_batch(settings, "cdpf", "cdpf-jump", AS_OF)
    assert held.status == "held" and held.accepted == 60 and held.quarantined == 1
    assert "cancellations rose from 4 in cdpf-good to 27" in held.note
    merged = merge_stage(settings, AS_OF, "run-2")
    assert merged.batches["cdpf"] == "cdpf-good"
    pd.testing.assert_series_equal(_cert_status(settings), before)  # the master did not move

    eligibility_stage(settings, AS_OF, "run-2")
    second = exchange_stage(settings, AS_OF, "run-2")
    assert [r["batch_id"] for r in second.rejects] == ["cdpf-jump"]  # cdpf-good was answered by run-1
    reject = Path(second.rejects[0]["path"])
    assert reject == storage.var / "outbox" / "cdpf" / "rejects" / "rejects_cdpf-jump.csv"
    sent = reject.read_bytes()
    assert hashlib.sha256(sent).hexdigest() == second.rejects[0]["sha256"]
    retried = exchange_stage(settings, AS_OF, "run-2")  # a retried task: same list, same bytes
    assert retried.rejects == second.rejects and reject.read_bytes() == sent

    reported = report_stage(settings, AS_OF, "run-2")
    data = json.loads(Path(reported.json).read_text(encoding="utf-8"))
    (warning,) = [w for w in data["warnings"] if w.startswith("cdpf:")]
    for part in (
        "cdpf-jump",
        "held",
        "注销人数异常上升",
        "from 4 in cdpf-good to 27",
        "limit 4 x 1.5 + 20 = 26",
        "master keeps cdpf batch cdpf-good",
        "hub batch release cdpf-jump --by NAME",
    ):
        assert part in warning, (part, warning)
    html = Path(reported.path).read_text(encoding="utf-8")
    assert "cdpf-jump" in html and "注销人数异常上升" in html
    assert not RAW_ID.search(html) and "//" not in html and "http" not in html
    links = re.findall(r'href="([^"#][^"]*)"', html)  # besides the in-page table of contents
    assert links == ["../../staged/cdpf/cdpf-jump/validation.html"]  # relative, to a file that is there
    assert (Path(reported.path).parent / links[0]).resolve().is_file()
    assert "rejects_cdpf-jump.csv" in [f["file"] for f in data["exchange"]]  # listed with the run's files

    storage.release("cdpf-jump", who="auditor")
    merge_stage(settings, AS_OF, "run-3")
    assert (_cert_status(settings) == "cancelled").sum() == 27  # released: now it feeds the master
