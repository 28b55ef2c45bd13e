"""Through the stages on a 400-person sandbox: decisions as changes, transitions, the reproducibility hash,
a backfill over past dates, and the mass-change guard holding files until `hub approve`."""

from __future__ import annotations

import json
from datetime import date, timedelta
from pathlib import Path

import pandas as pd
import pytest

from core.results import ExchangeResult
from core.settings import Settings, load_settings
from core.storage import Storage
from stages.eligibility import approve_and_build, eligibility_stage
from stages.exchange import exchange_stage
from stages.merge import merge_stage
from stages.report import report_stage
from store.master_store import MasterStore


@pytest.fixture(scope="module")
def landed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Settings, date]:
    """A sandbox province pulled and validated once (the stages below start from its staged batches)."""
    from sandbox.generator import init_sandbox
    from sandbox.services import police_simulator
    from stages.ingest import pull_stage, validate_stage

    settings = load_settings(var_dir=tmp_path_factory.mktemp("decisions") / "var")
    init_sandbox(settings, persons=400, seed=11)
    storage = Storage(settings)
    as_of = date.fromisoformat(json.loads((storage.sandbox / "sandbox.json").read_text("utf-8"))["as_of"])
    with police_simulator(settings):
        for source in settings.sources:
            landed = pull_stage(settings, source, as_of)
            validate_stage(settings, source, landed.batch_id, as_of)
    return settings, as_of


def _copy_var(settings: Settings, target: Path) -> Settings:
    """A private copy of the landed var directory, so each test starts from the same state."""
    import shutil

    shutil.copytree(settings.var_dir, target)
    return settings.model_copy(
        update={
            "var_dir": target,
            "master_url": settings.master_url.replace(str(settings.var_dir), str(target)),
        }
    )


def _civil_loses_assistance(settings: Settings, share: float, tag: str) -> int:
    """A new accepted civil batch in which `share` of the assisted persons' assistance has ended."""
    storage = Storage(settings)
    last = storage.last_accepted("civil")
    assert last is not None
    frame = pd.read_parquet(storage.staged("civil", last["batch_id"]) / "accepted.parquet")
    people = frame["id_number"].drop_duplicates().sort_values()
    chosen = people.iloc[:: max(1, round(1 / share))]
    hit = frame["id_number"].isin(chosen).to_numpy()
    frame.loc[hit, "active"] = False
    batch_id = f"civil-{tag}"
    out = storage.staged("civil", batch_id)
    out.mkdir(parents=True)
    frame.assign(_batch_id=batch_id).to_parquet(out / "accepted.parquet", index=False)
    storage.record_batch(batch_id, "civil", tag, len(frame))
    storage.set_verdict(batch_id, "accepted", len(frame), 0)
    return len(chosen)


def _run(settings: Settings, day: date, run_id: str) -> dict:
    merge_stage(settings, day, run_id)
    return eligibility_stage(settings, day, run_id)


def test_decisions_as_changes_reproducible_and_backfilled(
    landed: tuple[Settings, date], tmp_path: Path
) -> None:
    settings, as_of = landed
    settings = _copy_var(settings, tmp_path / "var")
    storage = Storage(settings)
    days = [as_of, as_of + timedelta(days=31), as_of + timedelta(days=62)]
    first = _run(settings, days[0], "run-1")
    assert first.mode == "write" and first.written["opened"] == first.rows  # everything, once
    assert first.guard["held"] == [] and all(s["exempt"] for s in first.guard["services"].values())
    again = eligibility_stage(settings, days[0], "run-1-again")  # the same inputs, another run
    assert again.decisions_sha256 == first.decisions_sha256
    assert again.written["opened"] == 0 and again.transitions == {}
    assert (storage.run_dir("run-1") / "decisions.parquet").read_bytes() == (
        storage.run_dir("run-1-again") / "decisions.parquet"
    ).read_bytes()

    _civil_loses_assistance(settings, 0.02, "day2")
    second = _run(settings, days[1], "run-2")
    third = _run(settings, days[2], "run-3")
    changed = second.written["opened"]
    assert 0 < changed < first.rows * 0.05  # only the changed decisions are written
    moves = pd.read_parquet(storage.run_dir("run-2") / "transitions.parquet")
    assert len(moves) and set(moves["transition"]) <= {"gained", "lost", "amount_changed"}
    lost = moves[moves["transition"] == "lost"]
    assert len(lost) and lost["stop_reason"].notna().all()
    ended = lost[lost["stop_reason"].str.contains("NOT_LOW_INCOME")]
    assert (
        len(ended)
        and (ended["effective_month"] == f"{(days[1].replace(day=1) + timedelta(days=32)):%Y-%m}").all()
    )
    files = exchange_stage(settings, days[1], "run-2")
    assert not files.held
    # the declared 临时救助 period (policies/zhejiang.yaml adjustments) ends before the third day: the
    # one-off service stops for every holder at once, which the guard holds for an operator to approve
    # (docs/operations.md, Held outbound files)
    assert "temporary_assistance" not in second.guard["held"]
    assert "temporary_assistance" in third.guard["held"]
    stops = pd.read_parquet(storage.run_dir("run-3") / "transitions.parquet")
    stops = stops[stops["service"] == "temporary_assistance"]
    assert len(stops) and (stops["transition"] == "lost").all()
    # each stop for the period's end, but for a certificate that expired meanwhile (that stop comes first)
    assert stops["stop_reason"].str.fullmatch("NOT_DECLARED|CERT_EXPIRED").all()
    assert (stops["stop_reason"] == "NOT_DECLARED").mean() > 0.9

    store = MasterStore(settings.expand(settings.master_url))
    opened = store.read_decision_versions("run-1")
    assert len(opened) == first.rows  # the same-day rerun opened nothing
    assert opened["caused_by"].str.contains("cdpf-").all()  # the batches the decision's facts came from
    assert store.read_decision_versions("run-2")["caused_by"].notna().all()
    for day, run in zip(days, (first, second, third), strict=True):
        backfill = eligibility_stage(settings, day, f"backfill-{day}")
        assert backfill.mode == ("write" if day == days[-1] else "backfill")
        assert backfill.decisions_sha256 == run.decisions_sha256  # the same decisions as the run
        if backfill.mode == "backfill":
            assert backfill.matches_store and backfill.master_as_of == day.isoformat()
        assert store.run_record(run.run_id)["decisions_sha256"] == run.decisions_sha256
    in_force = store.decisions_in_force(days[1])
    ran = pd.read_parquet(storage.run_dir("run-2") / "decisions.parquet")
    cols = ["id_number", "service", "eligible", "amount", "reasons"]
    pd.testing.assert_frame_equal(in_force[cols], ran[cols], check_dtype=False)
    store.dispose()


def test_a_mass_change_holds_the_service_files_until_approved(
    landed: tuple[Settings, date], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings, as_of = landed
    settings = _copy_var(settings, tmp_path / "var")
    storage = Storage(settings)
    day2 = as_of + timedelta(days=31)
    _run(settings, as_of, "run-1")
    exchange_stage(settings, as_of, "run-1")
    _civil_loses_assistance(settings, 0.5, "mass")
    decided = _run(settings, day2, "run-2")
    assert decided.guard["held"] == ["living_subsidy"]
    share = decided.guard["services"]["living_subsidy"]["share"]
    assert share > settings.guard.max_changed_share
    assert decided.guard["services"]["nursing_subsidy"]["share"] <= settings.guard.max_changed_share
    hold = json.loads((storage.run_dir("run-2") / "holds.json").read_text("utf-8"))
    assert hold["held"] == ["living_subsidy"]

    exchanged = exchange_stage(settings, day2, "run-2")
    # every contract that carries the held service waits: civil's list and the federation's statistics
    held = ["cdpf_subsidy_statistics", "civil_two_subsidies"]
    assert sorted(h["contract"] for h in exchanged.held) == held
    assert not set(held) & {f["contract"] for f in exchanged.files}
    period = f"{day2:%Y-%m}"
    assert not list((storage.outbox("civil", period)).glob("*subsid*"))
    reported = report_stage(settings, day2, "run-2")
    data = json.loads(Path(reported.json).read_text("utf-8"))
    [warning] = [w for w in data["warnings"] if "living_subsidy" in w]
    assert "HELD" in warning and "hub approve run-2" in warning
    row = next(d for d in data["decisions"] if d["service"] == "living_subsidy")
    assert row["outbound"] == "暂扣 HELD"

    with pytest.raises(ValueError, match="--reason"):
        approve_and_build(settings, "run-2", "王审核", " ")
    from typer.testing import CliRunner

    from hub.cli import app

    monkeypatch.setenv("LIANBAN_VAR", str(settings.var_dir))
    args = ["approve", "run-2", "--by", "王审核", "--reason", "低保年审集中退出，已核实"]
    done = CliRunner().invoke(app, args)
    assert done.exit_code == 0, done.output
    assert "approved run-2 by 王审核" in done.output and "living_subsidy" in done.output
    exchanged = ExchangeResult.load(storage, "run-2")
    assert exchanged is not None
    assert set(held) <= {f["contract"] for f in exchanged.files} and not exchanged.held
    assert list((storage.outbox("civil", period)).glob("*"))
    approval = json.loads((storage.run_dir("run-2") / "approval.json").read_text("utf-8"))
    assert approval["reason"] == "低保年审集中退出，已核实" and approval["at"]
    data = json.loads((storage.report_dir("run-2") / "report.json").read_text("utf-8"))
    [warning] = [w for w in data["warnings"] if "living_subsidy" in w]
    assert "王审核" in warning and "approved" in warning
    with pytest.raises(ValueError, match="already approved"):
        approve_and_build(settings, "run-2", "李", "again")
    with pytest.raises(LookupError):
        approve_and_build(settings, "run-1", "李", "nothing held")
    refused = CliRunner().invoke(app, ["approve", "run-1", "--by", "李", "--reason", "nothing held"])
    assert refused.exit_code == 1 and "no held outbound files" in refused.output
