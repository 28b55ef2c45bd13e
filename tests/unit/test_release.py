"""`hub batch release` as an operator uses it: through the real folder pull and staging, a release holds
across a same-day re-run, an unreadable batch is refused with its reason, a batch held for a few bad
bytes is accepted in part (its bad lines quarantined and returned), and ids may be given by prefix."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pandas as pd
import pytest
from batch_builders import holders
from typer.testing import CliRunner

from core.settings import Settings
from core.storage import Storage
from hub.cli import app
from hub.release import release_batch
from stages.exchange import exchange_stage
from stages.ingest import pull_stage, validate_stage
from stages.merge import merge_stage

AS_OF = date(2025, 6, 30)
HEADER = "公民身份号码,姓名,就业状态,养老保险类型,工伤保险生活护理费,更新时间"


def _drop(settings: Settings, lines: list[bytes]) -> None:
    """Put an hrss file and its .ok marker in the sandbox drop folder, replacing what was there."""
    folder = Path(settings.expand(settings.sources["hrss"].path))  # type: ignore[union-attr]
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.iterdir():
        old.unlink()
    name = "hrss_persons_20250630.csv"
    (folder / name).write_bytes(b"\r\n".join([HEADER.encode("gb18030"), *lines]) + b"\r\n")
    (folder / (name + ".ok")).write_bytes(b"")


def _row(holder: str, name: str = "张三") -> bytes:
    return f"{holder},{name},就业,职工,否,2025-06-01 08:00:00".encode("gb18030")


def _run(settings: Settings) -> dict:
    """What a cycle's ingest does for hrss: pull, then stage."""
    batch_id = pull_stage(settings, "hrss", AS_OF).batch_id
    return validate_stage(settings, "hrss", batch_id, AS_OF)


def test_a_release_holds_across_a_same_day_rerun(settings: Settings) -> None:
    people = holders(10)
    _drop(settings, [_row(h) for h in people[:7]] + [_row(h[:17]) for h in people[7:]])  # 3 of 10 bad: > 20%
    first = _run(settings)
    assert first.status == "held"
    storage = Storage(settings)
    released = release_batch(settings, first.batch_id[:-4], who="王审核")  # a unique prefix is enough
    assert released["status"] == "accepted" and released["note"].startswith("released by 王审核 at ")
    again = _run(settings)  # the same file, the same day: the same batch, staged again
    assert again.batch_id == first.batch_id
    assert (again.status, again.accepted, again.quarantined) == ("accepted", 7, 3)
    decision = storage.decision(first.batch_id)
    assert decision is not None and (decision["decision"], decision["decided_by"]) == ("release", "王审核")
    assert "invalid ratio 30.0%" in decision["held_note"]
    assert merge_stage(settings, AS_OF, "run-1").batches["hrss"] == first.batch_id


def test_an_unreadable_batch_is_refused_and_a_few_bad_bytes_can_be_accepted_in_part(
    settings: Settings,
) -> None:
    people = holders(12)
    bad = _row(people[4], "李X四").replace(b"X", b"\xff")  # one invalid GB18030 byte in a name
    _drop(settings, [_row(h) for h in people[:4]] + [bad] + [_row(h) for h in people[5:]])
    held = _run(settings)
    assert held.status == "held" and held.accepted == 0
    storage = Storage(settings)
    with pytest.raises(
        ValueError, match=r"cannot be released: it was held because it cannot be read"
    ) as refused:
        release_batch(settings, held.batch_id, who="王审核")
    assert "line 6" in str(refused.value) and "--partial" in str(refused.value)
    assert storage.batch(held.batch_id)["status"] == "held"  # type: ignore[index]
    assert merge_stage(settings, AS_OF, "run-1").batches["hrss"] is None  # nothing to merge, no crash

    accepted = release_batch(settings, held.batch_id, who="王审核", partial=True)
    assert (accepted["status"], accepted["accepted_rows"], accepted["quarantined_rows"]) == (
        "accepted",
        11,
        1,
    )
    assert accepted["note"].startswith("accepted in part by 王审核 at ")
    decision = storage.decision(held.batch_id)
    assert decision is not None
    assert (decision["decision"], decision["accepted_rows"], decision["quarantined_rows"]) == (
        "partial",
        11,
        1,
    )
    staged = storage.staged("hrss", held.batch_id)
    quarantine = pd.read_parquet(staged / "quarantine.parquet")
    assert quarantine[["_source_line", "reason_codes"]].values.tolist() == [[6, "ENCODING_INVALID"]]
    assert sorted(pd.read_parquet(staged / "accepted.parquet")["id_number"]) == sorted(
        people[:4] + people[5:]
    )
    assert _run(settings).status == "accepted"  # a same-day re-run honours the decision
    merged = merge_stage(settings, AS_OF, "run-2")
    assert merged.batches["hrss"] == held.batch_id
    rejects = exchange_stage(settings, AS_OF, "run-2").rejects
    assert [r["rows"] for r in rejects if r["source"] == "hrss"] == [1]  # the bad line goes back to 人社


def test_a_batch_with_other_columns_cannot_be_accepted_even_in_part(settings: Settings) -> None:
    people = holders(3)
    folder = Path(settings.expand(settings.sources["hrss"].path))  # type: ignore[union-attr]
    _drop(settings, [_row(h) for h in people])
    csv = folder / "hrss_persons_20250630.csv"
    csv.write_bytes(csv.read_bytes().replace("姓名".encode("gb18030"), b"XM", 1))
    held = _run(settings)
    assert held.status == "held"
    for partial in (False, True):
        with pytest.raises(ValueError, match="SchemaDrift") as refused:
            release_batch(settings, held.batch_id, who="王审核", partial=partial)
        assert "send the file again" in str(refused.value)
    assert Storage(settings).decision(held.batch_id) is None


def test_the_batch_list_shows_whole_ids_and_release_takes_a_unique_prefix(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LIANBAN_VAR", str(settings.var_dir))
    monkeypatch.setenv("COLUMNS", "80")
    storage = Storage(settings)
    storage.record_batch("hrss-20250630-aaaa11112222", "hrss", "20250630", 3)
    storage.record_batch("hrss-20250630-aaaa33334444", "hrss", "20250630", 3)
    listed = CliRunner().invoke(app, ["batch", "list"])
    assert listed.exit_code == 0
    assert "hrss-20250630-aaaa11112222" in listed.output and "hrss-20250630-aaaa33334444" in listed.output
    ambiguous = CliRunner().invoke(app, ["batch", "release", "hrss-20250630-aaaa", "--by", "x"])
    assert ambiguous.exit_code == 1 and "prefix of 2 batches" in ambiguous.output
    landed = CliRunner().invoke(app, ["batch", "release", "hrss-20250630-aaaa3", "--by", "x"])
    assert landed.exit_code == 1 and "hrss-20250630-aaaa33334444 is landed, not held" in landed.output
