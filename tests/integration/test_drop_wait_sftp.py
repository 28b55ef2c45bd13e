"""The drop wait on the SFTP transport against a real OpenSSH server: a file dropped late is seen by
the next look and pulled; with none by the deadline the look fails naming source, transport, the
remote folder and the cause. (The DAG wiring of the wait is tested on a folder source in
tests/e2e/test_drop_wait.py; the wait's looks are the same function.)"""

from __future__ import annotations

import threading
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
import yaml
from sshd import LocalSshd, drop_file

from connectors.errors import ConnectorError
from core.settings import ROOT, load_settings
from core.staleness import refusal
from core.storage import Storage
from stages.ingest import pull_stage, wait_stage

pytestmark = pytest.mark.integration
AS_OF = date(2026, 11, 2)
CSV = "公民身份号码,姓名,就业状态,养老保险类型,工伤保险生活护理费,更新时间\r\n".encode("gb18030")


def _settings(tmp_path: Path, drop: Path):  # type: ignore[no-untyped-def]
    raw = yaml.safe_load((ROOT / "config" / "sandbox.yaml").read_text(encoding="utf-8"))
    raw["sources"]["hrss"] = {
        "transport": "sftp",
        "contract": "schemas/sources/hrss.yaml",
        "merge": True,
        "folder": str(drop),
        "pattern": "hrss_*.csv",
        "timeout_s": 10.0,
        "retry_wait_s": 0.05,
        "wait": {"poke_seconds": 0.5, "deadline_minutes": 1},
    }
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(raw, allow_unicode=True), encoding="utf-8")
    return load_settings(config, var_dir=tmp_path / "var")


def test_a_late_sftp_file_is_seen_by_the_next_look_and_pulled(
    tmp_path: Path, sftp_env: str, drop: Path
) -> None:
    settings = _settings(tmp_path, drop)
    started = datetime.now(UTC)
    assert wait_stage(settings, "hrss", AS_OF, started, datetime.now(UTC)) is False
    drop_file(drop, "hrss_20261102.csv", CSV, marker=None)  # data without its marker: not ready
    assert wait_stage(settings, "hrss", AS_OF, started, datetime.now(UTC)) is False
    threading.Timer(1.0, lambda: (drop / "hrss_20261102.csv.ok").write_bytes(b"")).start()
    looks = 0
    while not wait_stage(settings, "hrss", AS_OF, started, datetime.now(UTC)):
        looks += 1
        assert looks < 40, "the marker never showed"
        time.sleep(0.5)
    assert looks >= 1  # it did wait
    landed = pull_stage(settings, "hrss", AS_OF)
    assert landed.new and landed.rows == 0


def test_no_sftp_file_by_the_deadline_fails_naming_the_remote_folder(
    tmp_path: Path, sshd: LocalSshd, sftp_env: str, drop: Path
) -> None:
    settings = _settings(tmp_path, drop)
    started = datetime.now(UTC)
    assert wait_stage(settings, "hrss", AS_OF, started, started + timedelta(seconds=59)) is False
    with pytest.raises(ConnectorError) as raised:
        wait_stage(settings, "hrss", AS_OF, started, started + timedelta(minutes=1))
    assert str(raised.value).startswith(
        f"[hrss via sftp] {sshd.host}:{sshd.port}{drop}: no file matching hrss_*.csv with its .ok marker "
        "arrived by the deadline (1 min after the wait began at "
    )
    recorded = refusal(Storage(settings), "hrss")
    assert recorded is not None and recorded["as_of"] == AS_OF.isoformat()
