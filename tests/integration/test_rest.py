"""The REST connector against the police simulator under uvicorn, with injected faults."""

from __future__ import annotations

import json
import time
from datetime import date, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest

from connectors.errors import ConnectorError
from connectors.rest import RestClient, pull_rest
from core.settings import RestSource
from core.storage import Storage
from sandbox.simulator import Faults, create_app, serve
from stages.ingest import stage_batch

pytestmark = pytest.mark.integration
TOKEN = "t0ken-for-tests"
REQUIRED = ["gmsfhm", "xm", "xbdm", "csrq", "hjdz_xzqhdm", "hkztdm", "gxsj"]


def _data(tmp_path: Path, n: int = 230) -> Path:
    path = tmp_path / "persons.jsonl"
    rows = [
        {"gmsfhm": f"33011219900101{i:04d}", "xm": "王䶮" if i % 2 else "欧阳㵘", "xbdm": "1", "csrq": "19900101",
         "hjdz_xzqhdm": "330112", "hkztdm": "0", "swrq": None, "gxsj": "2026-10-31 08:00:00"}
        for i in range(n)
    ]  # fmt: skip
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def _config(page_size: int = 50) -> RestSource:
    return RestSource(
        transport="rest", contract="x", base_url_env="TEST_POLICE_URL", token_env="TEST_POLICE_TOKEN",
        endpoint="/api/v1/hukou/persons", page_size=page_size, timeout_s=5,
    )  # fmt: skip


def _pull(settings, url: str, monkeypatch: pytest.MonkeyPatch, token: str = TOKEN):
    monkeypatch.setenv("TEST_POLICE_URL", url)
    monkeypatch.setenv("TEST_POLICE_TOKEN", token)
    return pull_rest(Storage(settings), "police", _config(), date(2026, 11, 1), REQUIRED)


def _landed_items(path: Path) -> list[dict]:
    return [
        item for page in sorted(path.glob("page-*.json")) for item in json.loads(page.read_bytes())["items"]
    ]


def test_dropped_connections_and_500s_are_retried_and_land_once(settings, tmp_path, monkeypatch) -> None:
    data = _data(tmp_path)
    with serve(create_app(data, TOKEN, Faults(drop_every=2, error_500_every=5))) as url:
        landed = _pull(settings, url, monkeypatch)
        again = _pull(settings, url, monkeypatch)
    items = _landed_items(landed.path)
    assert landed.rows == 230 and len(items) == 230
    assert len({i["gmsfhm"] for i in items}) == 230
    assert again.batch_id == landed.batch_id and not again.new
    assert {i["xm"] for i in items} == {"王䶮", "欧阳㵘"}
    source_lines = data.read_bytes().splitlines()
    landed_text = b"".join(p.read_bytes() for p in landed.path.glob("page-*.json"))
    assert all(line in landed_text for line in source_lines[:5]), "items must arrive byte-identical"


def test_429_retry_after_is_honoured(settings, tmp_path, monkeypatch) -> None:
    with serve(create_app(_data(tmp_path, 100), TOKEN, Faults(rate_limit_every=2, retry_after_s=0.3))) as url:
        started = time.monotonic()
        landed = _pull(settings, url, monkeypatch)
        elapsed = time.monotonic() - started
    assert landed.rows == 100
    assert elapsed >= 0.3  # one 429 (request 2 of 3) waited its Retry-After


def test_wrong_token_is_refused_without_leaking_it(settings, tmp_path, monkeypatch) -> None:
    with serve(create_app(_data(tmp_path, 10), TOKEN)) as url, pytest.raises(ConnectorError) as err:
        _pull(settings, url, monkeypatch, token="wrong-secret-value")
    assert "police via rest" in str(err.value) and "HTTP 401" in str(err.value)
    assert "wrong-secret-value" not in str(err.value)
    assert not list((settings.var_dir / "landing" / "police").glob("police-*"))


def test_verify_asks_in_bounded_batches(tmp_path) -> None:
    with (
        serve(create_app(_data(tmp_path), TOKEN, Faults(drop_every=3))) as url,
        RestClient(url, TOKEN) as client,
    ):
        asked = [f"33011219900101{i:04d}" for i in range(0, 460, 2)] + ["110105194912310021"]
        found = client.verify("/api/v1/hukou/verify", asked, batch_size=100)
    assert sorted(i["gmsfhm"] for i in found) == sorted(asked[:115])


def test_change_feed_resumes_from_the_cursor_without_gaps_or_repeats(settings, tmp_path, monkeypatch) -> None:
    data = _data(tmp_path, 40)  # all 40 share one gxsj, so pages split inside one timestamp
    config = _config(page_size=7).model_copy(update={"mode": "changes", "endpoint": "/api/v1/hukou/changes"})
    monkeypatch.setenv("TEST_POLICE_TOKEN", TOKEN)
    storage = Storage(settings)
    with serve(create_app(data, TOKEN, Faults(drop_every=4))) as url:
        monkeypatch.setenv("TEST_POLICE_URL", url)
        first = pull_rest(storage, "police", config, date(2026, 11, 1), REQUIRED)
    assert sorted(i["gmsfhm"] for i in _landed_items(first.path)) == [
        f"33011219900101{i:04d}" for i in range(40)
    ]
    later = {"gmsfhm": "330112199001019999", "xm": "李㵘", "xbdm": "1", "csrq": "19900101", "hjdz_xzqhdm": "330112",
             "hkztdm": "1", "swrq": "20261101", "gxsj": "2026-10-31 08:00:00"}  # fmt: skip
    newer = {**later, "gmsfhm": "330112199001020001", "gxsj": "2026-11-01 09:00:00"}
    with data.open("a", encoding="utf-8") as fh:
        fh.write(json.dumps(later, ensure_ascii=False) + "\n" + json.dumps(newer, ensure_ascii=False) + "\n")
    with serve(create_app(data, TOKEN)) as url:
        monkeypatch.setenv("TEST_POLICE_URL", url)
        second = pull_rest(storage, "police", config, date(2026, 11, 2), REQUIRED)
        third = pull_rest(storage, "police", config, date(2026, 11, 3), REQUIRED)
    assert sorted(i["gmsfhm"] for i in _landed_items(second.path)) == [
        "330112199001019999",
        "330112199001020001",
    ]
    assert _landed_items(third.path) == [] and third.rows == 0
    assert storage.watermark("police") == "2026-11-01 09:00:00|330112199001020001"


def test_a_change_dated_9999_neither_lands_nor_moves_the_cursor(settings, tmp_path, monkeypatch) -> None:
    data = _data(tmp_path, 20)
    poison = {"gmsfhm": "330112199001010777", "xm": "李㵘", "xbdm": "1", "csrq": "19900101",
              "hjdz_xzqhdm": "330112", "hkztdm": "1", "swrq": "20261101", "gxsj": "9999-12-31 23:59:59"}  # fmt: skip
    junk = {**poison, "gmsfhm": "330112199001010888", "gxsj": "2026-10-31 25:00:00"}  # not a time
    with data.open("a", encoding="utf-8") as fh:
        fh.write(json.dumps(poison, ensure_ascii=False) + "\n" + json.dumps(junk, ensure_ascii=False) + "\n")
    config = _config(page_size=7).model_copy(
        update={"mode": "changes", "endpoint": "/api/v1/hukou/changes", "cursor_fields": ["gxsj", "gmsfhm"]}
    )
    monkeypatch.setenv("TEST_POLICE_TOKEN", TOKEN)
    storage = Storage(settings)
    day = datetime(2026, 11, 1, 6, 0)
    with serve(create_app(data, TOKEN)) as url:
        monkeypatch.setenv("TEST_POLICE_URL", url)
        first = pull_rest(storage, "police", config, date(2026, 11, 1), REQUIRED, "gxsj", now=day)
    assert sorted(i["gmsfhm"] for i in _landed_items(first.path)) == [
        f"33011219900101{i:04d}" for i in range(20)
    ]
    held = json.loads((first.path / "held-out.json").read_bytes())["items"]
    assert sorted(i["gmsfhm"] for i in held) == ["330112199001010777", "330112199001010888"]
    assert first.manifest.held_out[0].rows == 2 and first.manifest.rows == 20
    # not the unreadable item's place ('2026-10-31 25:00:00' sorts after every real time of that day)
    assert storage.watermark("police") == "2026-10-31 08:00:00|330112199001010019"

    staged = stage_batch(settings, "police", first.batch_id, date(2026, 11, 1))
    quarantine = pd.read_parquet(staged.path / "quarantine.parquet")
    from_held = quarantine[quarantine["_source_file"] == "held-out.json"]
    assert sorted(from_held["id_raw"]) == ["330112199001010777", "330112199001010888"]
    assert from_held["reason_codes"].str.contains("DATE_INVALID").all()

    newer = {**poison, "gmsfhm": "330112199001020001", "gxsj": "2026-11-01 09:00:00"}
    with data.open("a", encoding="utf-8") as fh:
        fh.write(json.dumps(newer, ensure_ascii=False) + "\n")
    with serve(create_app(data, TOKEN)) as url:
        monkeypatch.setenv("TEST_POLICE_URL", url)
        second = pull_rest(
            storage, "police", config, date(2026, 11, 2), REQUIRED, "gxsj", now=day + timedelta(days=1)
        )
    assert [i["gmsfhm"] for i in _landed_items(second.path)] == [
        "330112199001020001"
    ]  # later pulls still land
    # the cursor rested on the last landed item, so the unreadable one is met (and held out) once more
    assert [i["gmsfhm"] for i in json.loads((second.path / "held-out.json").read_bytes())["items"]] == [
        "330112199001010888",
        "330112199001010777",
    ]
    assert storage.watermark("police") == "2026-11-01 09:00:00|330112199001020001"
