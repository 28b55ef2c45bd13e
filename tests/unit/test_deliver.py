"""The deliver step over the folder transport: one copy, the ledger, receipts, deadline and re-send (补传)."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from test_exchange import tiny_conflicts, tiny_decisions, tiny_master
from typer.testing import CliRunner

from core.signing import PUBLIC_NAME, verify_delivery
from core.storage import Storage
from hub.cli import app
from stages.deliver import DeliveryError, deliver, deliveries
from stages.exchange import build_exchange
from transforms.exchange import exchange_datasets, load_exchange_contracts

ROOT = Path(__file__).resolve().parents[2]
AS_OF = date(2026, 3, 1)


def publish(storage: Storage, as_of: date = AS_OF) -> list:
    contracts = [
        c for c in load_exchange_contracts(ROOT / "schemas/exchange") if c.name == "civil_two_subsidies"
    ]
    datasets = exchange_datasets(tiny_master(), tiny_decisions(), tiny_conflicts())
    return build_exchange(storage, contracts, datasets, f"cycle-{as_of}", as_of)


def test_folder_delivery_once_then_receipt_then_delta_base(settings, monkeypatch) -> None:
    storage = Storage(settings)
    (made,) = publish(storage)
    inbox = storage.var / "sandbox" / "partners" / "civil" / "inbox"
    assert deliver(settings)["sent"] == 1
    names = sorted(p.name for p in inbox.iterdir() if not p.name.startswith("."))
    assert names == [made.path.name, made.path.name + ".manifest.json", made.path.name + ".ok"]
    assert list((inbox / ".lianban-incoming").iterdir()) == []
    assert verify_delivery(inbox / made.path.name, inbox / (made.path.name + ".manifest.json"),
                           storage.var / "keys" / PUBLIC_NAME)["rows"] == made.rows  # fmt: skip
    assert [r["status"] for r in deliveries(storage, "civil")] == ["pending"]
    assert deliver(settings) == {
        "sent": 0,
        "acked": 0,
        "already": 0,
        "resent": 0,
        "failed": 0,
    }  # no second copy
    (inbox / (made.path.name + ".ack")).write_text('{"received": true}', encoding="utf-8")
    assert deliver(settings)["acked"] == 1
    (inbox / (made.path.name + ".ack")).write_text('{"received": true, "again": 1}', encoding="utf-8")
    assert deliver(settings)["already"] == 1  # a duplicate receipt changes nothing
    (row,) = deliveries(storage, status="acked")
    assert row["attempts"] == 1 and json.loads(row["receipt"])["received"] is True
    acked = storage.var / "state" / "exchange" / "civil_two_subsidies" / "ACKED"
    assert acked.read_text(encoding="utf-8") == made.path.name
    monkeypatch.setenv("LIANBAN_VAR", str(storage.var))
    listed = CliRunner().invoke(app, ["deliveries", "--partner", "civil", "--status", "acked"])
    assert listed.exit_code == 0 and "civil_two" in listed.output and "acked" in listed.output
    assert "civil_two" not in CliRunner().invoke(app, ["deliveries", "--status", "failed"]).output
    assert CliRunner().invoke(app, ["deliveries", "--status", "lost"]).exit_code == 2


def test_missing_receipt_is_resent_then_raised_then_redelivered(settings) -> None:
    storage = Storage(settings)
    (made,) = publish(storage)
    inbox = storage.var / "sandbox" / "partners" / "civil" / "inbox"
    deliver(settings)
    later = datetime.now(UTC) + timedelta(hours=25)
    assert deliver(settings, now=later)["resent"] == 1  # 补传 after the 24 h deadline
    assert deliveries(storage)[0]["attempts"] == 2
    with pytest.raises(DeliveryError, match=rf"civil/{made.path.name}: no receipt within 1 day"):
        deliver(settings, now=later + timedelta(hours=25))
    assert [r["file"] for r in deliveries(storage, status="failed")] == [made.path.name]
    assert (
        deliver(settings, now=later + timedelta(hours=50))["sent"] == 0
    )  # raised once, then left to redeliver
    (inbox / (made.path.name + ".ok")).unlink()  # the partner lost it
    assert deliver(settings, force=True)["sent"] == 1  # hub redeliver
    assert (inbox / (made.path.name + ".ok")).exists()
    assert deliveries(storage)[0]["status"] == "pending"


def test_deliver_stage_after_exchange_sends_each_file_once(settings) -> None:
    from stages.deliver import deliver_stage

    storage = Storage(settings)
    (made,) = publish(storage)
    first = deliver_stage(settings, AS_OF, "cycle-2026-03-01")
    again = deliver_stage(settings, AS_OF, "cycle-2026-03-01")  # a retried task
    assert (first.sent, again.sent) == (1, 0)
    assert json.loads((storage.run_dir("cycle-2026-03-01") / "deliver.json").read_text())["sent"] == 0
    assert len(deliveries(storage)) == 1 and deliveries(storage)[0]["attempts"] == 1


def test_a_reject_file_goes_to_its_department_once(settings) -> None:
    from test_rejects import AS_OF as REJECT_DAY
    from test_rejects import HRSS, _hrss_batch

    from stages.exchange import write_pending_rejects

    storage = Storage(settings)
    _hrss_batch(settings)
    (made,) = write_pending_rejects(storage, {"hrss": HRSS}, "run-1", REJECT_DAY)
    assert deliver(settings)["sent"] == 1
    inbox = storage.var / "sandbox" / "partners" / "hrss" / "inbox"  # where hrss's contract delivers
    assert (inbox / made.path.name).read_bytes() == made.path.read_bytes()
    assert (
        write_pending_rejects(storage, {"hrss": HRSS}, "run-2", REJECT_DAY) == []
    )  # the next day: nothing new
    assert deliver(settings)["sent"] == 0
    assert [r["file"] for r in deliveries(storage, "hrss")] == [made.path.name]
