"""Change-feed (delta) batches of the police register through staging: deaths and volume are judged
against the usual daily rate learned from the accepted deltas, or a share of the last full batch, or a
configured rate; a feed declaring a large share of the province dead is held, a normal feed passes."""

from __future__ import annotations

import json
from datetime import date

from batch_builders import check
from landed_batches import write_landing

from core.settings import Settings
from core.storage import Storage
from stages.ingest import stage_batch

AS_OF = date(2025, 6, 30)
PEOPLE = [check(f"33010619800101{i:03d}") for i in range(300)]


def _item(holder: str, dead: bool = False) -> dict[str, object]:
    return {
        "gmsfhm": holder, "xm": "李䶮", "xbdm": "1", "csrq": holder[6:14], "hjdz_xzqhdm": "330106",
        "hkztdm": "1" if dead else "0", "swrq": "20250601" if dead else None, "gxsj": "2025-06-01 08:00:00",
    }  # fmt: skip


def _stage(
    settings: Settings, batch_id: str, window: str, items: list[dict[str, object]], delta: bool
) -> str:
    page = json.dumps({"items": items, "next_cursor": "x"}).encode()
    storage = Storage(settings)
    batch = write_landing(
        storage.landing("police", batch_id),
        "police",
        "rest",
        {"page-00001.json": page},
        {"page-00001.json": len(items)},
    )
    manifest = json.loads((batch / "manifest.json").read_text(encoding="utf-8"))
    (batch / "manifest.json").write_text(
        json.dumps(manifest | {"window": window, "delta": delta}), encoding="utf-8"
    )
    storage.record_batch(batch_id, "police", window, len(items))
    return stage_batch(settings, "police", batch_id, AS_OF).status


def _changes(start: int, n: int, dead: int) -> list[dict[str, object]]:
    return [_item(h, dead=i < dead) for i, h in enumerate(PEOPLE[start : start + n])]


def test_a_feed_declaring_the_province_dead_is_held_and_normal_feeds_pass(settings: Settings) -> None:
    assert _stage(settings, "p-full", "20250601", [_item(h) for h in PEOPLE], delta=False) == "accepted"
    # first delta, no rate learned yet: bounded by 5% of the 300 registered + 20 = 35 deaths
    assert _stage(settings, "p-d1", "20250602", _changes(0, 10, dead=1), delta=True) == "accepted"
    assert _stage(settings, "p-d2", "20250603", _changes(10, 12, dead=2), delta=True) == "accepted"
    # two days covered by this one: its rate is 4 changes, 0.5 deaths a day
    assert _stage(settings, "p-d3", "20250605", _changes(30, 8, dead=1), delta=True) == "accepted"
    # learned: median 10 changes, 1 death a day; deaths limit 5 x 1 x 1 + 20 = 25
    assert _stage(settings, "p-bad", "20250606", _changes(40, 150, dead=150), delta=True) == "held"
    note = Storage(settings).batch("p-bad")["note"]  # type: ignore[index]
    assert "增量死亡人数异常 delta batch has 150 deaths, usual 1/day (median of 3 delta batches)" in note
    assert "limit 5 x 1 x 1 + 20 = 25" in note
    assert "delta batch has 150 accepted rows, usual 10/day" not in note  # 150 <= 5 x 10 + 200 = 250
    assert _stage(settings, "p-d4", "20250606", _changes(200, 12, dead=3), delta=True) == "accepted"


def test_a_first_delta_with_a_large_share_dead_is_held(settings: Settings) -> None:
    assert _stage(settings, "p-full", "20250601", [_item(h) for h in PEOPLE], delta=False) == "accepted"
    assert _stage(settings, "p-bad", "20250602", _changes(0, 120, dead=120), delta=True) == "held"
    note = Storage(settings).batch("p-bad")["note"]  # type: ignore[index]
    assert "120 deaths, no usual rate yet, limit 5% of the 300 rows of the last full batch + 20 = 35" in note


def test_a_configured_daily_rate_is_used(settings: Settings) -> None:
    settings.gates.usual_daily = {"police": {"deaths": 10.0}}
    assert _stage(settings, "p-full", "20250601", [_item(h) for h in PEOPLE], delta=False) == "accepted"
    assert _stage(settings, "p-d1", "20250602", _changes(0, 70, dead=70), delta=True) == "accepted"  # <= 70
    assert _stage(settings, "p-d2", "20250603", _changes(100, 71, dead=71), delta=True) == "held"
    assert "usual 10/day (configured)" in Storage(settings).batch("p-d2")["note"]  # type: ignore[index]
