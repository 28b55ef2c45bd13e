"""The SFTP transport against a real OpenSSH server: markers, checksums, host keys, hostile names, drops."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import socket
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest
from sshd import LocalSshd, drop_file, known_hosts_with_other_key, write_ed25519_key

from connectors.errors import ConnectorError
from connectors.sftp import SftpClient, SftpSource, check_name, pull_sftp
from core.landing import Manifest
from core.storage import Storage

pytestmark = pytest.mark.integration

AS_OF = date(2026, 10, 31)
HRSS_CSV = (
    "公民身份号码,姓名,就业状态,养老保险类型,工伤保险生活护理费,更新时间\r\n"
    "330106199001011237,王䶮,就业,职工,否,2026-10-30 08:00:00\r\n"
    "33010619920202123X,李㵘,失业,城乡居民,否,2026-10-30 08:00:00\r\n"
).encode("gb18030")


def _config(drop: Path, **overrides: Any) -> SftpSource:
    values: dict[str, Any] = {
        "transport": "sftp",
        "contract": "schemas/sources/hrss.yaml",
        "folder": str(drop),
        "pattern": "*.csv",
        "timeout_s": 10.0,
        "retry_wait_s": 0.05,
    }
    return SftpSource(**(values | overrides))


def _landing(storage: Storage) -> Path:
    return storage.var / "landing" / "hrss"


def _manifests(storage: Storage) -> list[dict[str, Any]]:
    return [
        json.loads(p.read_text(encoding="utf-8")) for p in sorted(_landing(storage).glob("*/manifest.json"))
    ]


def _names(landed_manifest: Manifest) -> list[str]:
    return [f.name for f in landed_manifest.files]


def _files_under(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if p.is_file()}


def test_file_without_marker_is_not_taken(settings, sftp_env: str, drop: Path) -> None:
    drop_file(drop, "hrss_persons_20261030.csv", HRSS_CSV)
    drop_file(drop, "hrss_persons_20261031.csv", HRSS_CSV + b"x", marker=None)  # still uploading
    storage = Storage(settings)

    first = pull_sftp(storage, "hrss", _config(drop), AS_OF)
    assert _names(first.manifest) == ["hrss_persons_20261030.csv"]
    assert first.rows == 2
    assert storage.watermark("hrss") == "hrss_persons_20261030.csv"

    (drop / "hrss_persons_20261031.csv.ok").touch()  # the partner finishes: now it is taken
    second = pull_sftp(storage, "hrss", _config(drop), AS_OF + timedelta(days=1))
    assert _names(second.manifest) == ["hrss_persons_20261031.csv"]
    assert storage.watermark("hrss") == "hrss_persons_20261031.csv"


def test_checksum_mismatch_is_refused(settings, sftp_env: str, drop: Path) -> None:
    drop_file(drop, "hrss_persons_20261031.csv", HRSS_CSV, checksum="0" * 64)
    storage = Storage(settings)
    with pytest.raises(ConnectorError, match="SHA-256 mismatch") as refused:
        pull_sftp(storage, "hrss", _config(drop), AS_OF)
    assert "hrss_persons_20261031.csv" in str(refused.value)
    assert list(_landing(storage).iterdir()) == []  # no batch, no temporary folder or .part file
    assert storage.watermark("hrss") is None


def test_unknown_host_key_is_refused(
    settings, sshd: LocalSshd, sftp_env: str, drop: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    known_hosts = tmp_path / "known_hosts_without_server"
    known_hosts.write_text("# no entry for the test server\n", encoding="ascii")
    monkeypatch.setenv(f"{sftp_env}_KNOWN_HOSTS", str(known_hosts))
    drop_file(drop, "hrss_persons_20261031.csv", HRSS_CSV)
    logins = sshd.accepted_logins()

    with pytest.raises(ConnectorError, match="unknown host key") as refused:
        pull_sftp(Storage(settings), "hrss", _config(drop), AS_OF)
    message = str(refused.value)
    assert f"{sshd.host}:{sshd.port}" in message
    assert str(known_hosts) in message
    assert "SHA256:" in message  # the offered fingerprint, to compare out of band
    assert known_hosts.read_text(encoding="ascii") == "# no entry for the test server\n"  # nothing auto-added
    assert sshd.accepted_logins() == logins  # refused before authenticating


def test_changed_host_key_is_refused(
    settings, sshd: LocalSshd, sftp_env: str, drop: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    known_hosts = known_hosts_with_other_key(sshd, tmp_path / "known_hosts_other_key")
    pinned = known_hosts.read_text(encoding="ascii")
    monkeypatch.setenv(f"{sftp_env}_KNOWN_HOSTS", str(known_hosts))
    drop_file(drop, "hrss_persons_20261031.csv", HRSS_CSV)

    with pytest.raises(ConnectorError, match="host key CHANGED") as refused:
        pull_sftp(Storage(settings), "hrss", _config(drop), AS_OF)
    message = str(refused.value)
    assert f"{sshd.host}:{sshd.port}" in message
    assert str(known_hosts) in message
    assert message.count("SHA256:") == 2  # offered and pinned fingerprints
    assert known_hosts.read_text(encoding="ascii") == pinned


@pytest.mark.parametrize(
    "name",
    [
        "../hrss.csv",
        "../../etc/cron.d/x.csv",
        "a/b.csv",
        "/etc/passwd",
        "a\\b.csv",
        "..\\..\\x.csv",
        "a\x00b.csv",
        "a\x01b.csv",
        "a\x7fb.csv",
        "hrss.csv\n",  # a trailing newline slips past a `$`-anchored pattern
        "a\u202eb.csv",  # right-to-left override
        "a" * 256,
        "数" * 86,  # 86 characters pass the pattern, 258 UTF-8 bytes do not
        "-rf.csv",
        ".hidden.csv",
        "..",
        ".",
        "",
        "a b.csv",
        "ａｂ.csv",  # full-width letters are outside the allow-list
    ],
)
def test_name_validator_refuses_unsafe_names(name: str) -> None:
    with pytest.raises(ConnectorError, match="unsafe remote file name"):
        check_name(name, "hrss", "/drop")


@pytest.mark.parametrize(
    "name",
    ["hrss_persons_20261031.csv", "人社_补充-20261031.csv", "A", "x" * 251 + ".csv", "v1.2.3-rc_1.csv"],
)
def test_name_validator_accepts_partner_names(name: str) -> None:
    assert check_name(name, "hrss") == name


@pytest.mark.parametrize(
    "name", ["a\x01b.csv", "tab\there.csv", "new\nline.csv", "esc\x1b[2J.csv", "-rf.csv", ".hidden.csv"]
)
def test_unsafe_names_on_the_server_are_refused(
    settings, sftp_env: str, drop: Path, tmp_path: Path, name: str
) -> None:
    drop_file(drop, "hrss_persons_20261030.csv", HRSS_CSV)
    drop_file(drop, name, HRSS_CSV + b"evil")
    storage = Storage(settings)
    before = _files_under(tmp_path)

    with pytest.raises(ConnectorError, match="unsafe remote file name refused") as refused:
        pull_sftp(storage, "hrss", _config(drop), AS_OF)
    assert repr(name) in str(refused.value)  # shown escaped: control characters never reach a log raw
    assert _files_under(tmp_path) == before  # nothing written anywhere, landing/ included
    assert list(_landing(storage).iterdir()) == []


def test_traversal_in_a_remote_path_is_refused_before_any_local_path(
    sftp_env: str, drop: Path, tmp_path: Path
) -> None:
    drop_file(drop, "hrss_persons_20261030.csv", HRSS_CSV)
    with SftpClient.from_env(sftp_env, source="hrss") as client:
        for remote in (f"{drop}/../{drop.name}/hrss_persons_20261030.csv", f"{drop}/..", f"{drop}/-rf.csv"):
            with pytest.raises(ConnectorError):
                client.retrieve(remote, tmp_path / "out.csv")
        assert not (tmp_path / "out.csv").exists()
        got = client.retrieve(f"{drop}/hrss_persons_20261030.csv", tmp_path / "out.csv")
    assert got.path.read_bytes() == HRSS_CSV


def test_connection_dropped_mid_transfer_is_retried_and_lands_once(
    settings,
    sshd: LocalSshd,
    sftp_env: str,
    drop: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    data = os.urandom(48 * 2**20)
    drop_file(drop, "hrss_persons_20261031.csv", data, checksum="good")
    cuts: list[int] = []
    real_retrieve = SftpClient.retrieve

    def retrieve_with_cut(self: SftpClient, remote: Any, local_path: Path, **kwargs: Any) -> Any:
        def progress(done: int) -> None:
            if not cuts and done >= 4 * 2**20:
                cuts.append(sshd.drop_sessions())  # kill the server's session processes mid-download

        return real_retrieve(self, remote, local_path, progress=progress, **kwargs)

    monkeypatch.setattr(SftpClient, "retrieve", retrieve_with_cut)
    caplog.set_level(logging.INFO, logger="connectors.sftp")
    logins = sshd.accepted_logins()
    storage = Storage(settings)

    landed = pull_sftp(storage, "hrss", _config(drop), AS_OF)

    assert cuts and cuts[0] > 0
    assert "connection lost" in caplog.text
    assert "in 2 attempt(s)" in caplog.text
    assert sshd.accepted_logins() - logins == 2  # the first session and the reconnect
    batches = list(_landing(storage).iterdir())
    assert batches == [landed.path]  # exactly one batch, no temporary folder left behind
    assert sorted(p.name for p in landed.path.iterdir()) == ["hrss_persons_20261031.csv", "manifest.json"]
    assert (landed.path / "hrss_persons_20261031.csv").read_bytes() == data
    assert landed.manifest.files[0].sha256 == hashlib.sha256(data).hexdigest()


def test_gb18030_content_arrives_byte_identical(
    settings, sftp_env: str, drop: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    secret = "s3cret-never-logged-" + os.urandom(4).hex()
    monkeypatch.setenv(f"{sftp_env}_PASSWORD", secret)  # set beside the key; must never reach a log
    caplog.set_level(logging.DEBUG)
    other = HRSS_CSV.replace("王䶮".encode("gb18030"), "赵䶮㵘".encode("gb18030"))
    drop_file(drop, "hrss_persons_20261031.csv", HRSS_CSV, checksum="good")
    drop_file(drop, "人社_补充_20261031.csv", other, checksum="good")
    storage = Storage(settings)

    landed = pull_sftp(storage, "hrss", _config(drop), AS_OF)

    assert _names(landed.manifest) == ["hrss_persons_20261031.csv", "人社_补充_20261031.csv"]
    assert (landed.path / "hrss_persons_20261031.csv").read_bytes() == HRSS_CSV
    assert (landed.path / "人社_补充_20261031.csv").read_bytes() == other
    assert "䶮" in (landed.path / "hrss_persons_20261031.csv").read_bytes().decode("gb18030")
    assert "㵘" in (landed.path / "人社_补充_20261031.csv").read_bytes().decode("gb18030")
    assert [f.sha256 for f in landed.manifest.files] == [
        hashlib.sha256(HRSS_CSV).hexdigest(),
        hashlib.sha256(other).hexdigest(),
    ]
    assert landed.rows == 4 and landed.manifest.transport == "sftp"
    assert secret not in caplog.text
    assert secret not in repr(SftpClient.from_env(sftp_env, source="hrss"))


def test_repull_yields_no_duplicate_landing(settings, sftp_env: str, drop: Path) -> None:
    drop_file(drop, "hrss_persons_20261030.csv", HRSS_CSV)
    storage = Storage(settings)
    first = pull_sftp(storage, "hrss", _config(drop), AS_OF)
    assert first.new

    again = pull_sftp(storage, "hrss", _config(drop), AS_OF)  # same window
    next_day = pull_sftp(storage, "hrss", _config(drop), AS_OF + timedelta(days=1))
    # The partner re-sends the same bytes under new names, once with a .sha256 (skipped before download).
    drop_file(drop, "hrss_persons_20261101.csv", HRSS_CSV)
    drop_file(drop, "hrss_persons_20261102.csv", HRSS_CSV, checksum="good")
    resent = pull_sftp(storage, "hrss", _config(drop), AS_OF + timedelta(days=2))
    for landed in (again, next_day, resent):
        assert (landed.batch_id, landed.new) == (first.batch_id, False)
    assert storage.watermark("hrss") == "hrss_persons_20261102.csv"
    assert len(_manifests(storage)) == 1

    fresh = HRSS_CSV.replace(b"2026-10-30", b"2026-11-03")
    drop_file(drop, "hrss_persons_20261103.csv", fresh)
    newer = pull_sftp(storage, "hrss", _config(drop), AS_OF + timedelta(days=3))
    assert newer.new and _names(newer.manifest) == ["hrss_persons_20261103.csv"]
    digests = [f["sha256"] for m in _manifests(storage) for f in m["files"]]
    assert sorted(digests) == sorted(
        {hashlib.sha256(HRSS_CSV).hexdigest(), hashlib.sha256(fresh).hexdigest()}
    )


def test_taken_files_move_to_processed(settings, sftp_env: str, drop: Path) -> None:
    drop_file(drop, "hrss_persons_20261031.csv", HRSS_CSV, checksum="good")
    storage = Storage(settings)
    landed = pull_sftp(storage, "hrss", _config(drop, move_to_processed=True), AS_OF)
    assert landed.new
    assert sorted(p.name for p in drop.iterdir()) == ["processed"]
    assert sorted(p.name for p in (drop / "processed").iterdir()) == [
        "hrss_persons_20261031.csv",
        "hrss_persons_20261031.csv.ok",
        "hrss_persons_20261031.csv.sha256",
    ]
    again = pull_sftp(storage, "hrss", _config(drop, move_to_processed=True), AS_OF + timedelta(days=1))
    assert (again.batch_id, again.new) == (landed.batch_id, False)


def test_missing_connection_variable_names_it(settings, drop: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LIANBAN_HRSS_SFTP_HOST", raising=False)
    with pytest.raises(ConnectorError, match="LIANBAN_HRSS_SFTP_HOST is not set"):
        pull_sftp(Storage(settings), "hrss", _config(drop), AS_OF)


def test_file_over_the_size_ceiling_is_refused(settings, sftp_env: str, drop: Path) -> None:
    drop_file(drop, "hrss_persons_20261031.csv", HRSS_CSV)
    storage = Storage(settings)
    with pytest.raises(ConnectorError, match="exceeds the ceiling"):
        pull_sftp(storage, "hrss", _config(drop, max_file_bytes=len(HRSS_CSV) - 1), AS_OF)
    assert list(_landing(storage).iterdir()) == []


def test_wrong_client_key_fails_authentication_clearly(
    settings, sshd: LocalSshd, sftp_env: str, drop: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stranger = tmp_path / "stranger_ed25519"
    write_ed25519_key(stranger)
    monkeypatch.setenv(f"{sftp_env}_KEY", str(stranger))
    with pytest.raises(ConnectorError, match=f"authentication failed for user '{sshd.user}'"):
        pull_sftp(Storage(settings), "hrss", _config(drop), AS_OF)


def test_unreachable_server_is_retried_then_reported(
    settings, sftp_env: str, drop: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    with socket.socket() as probe:  # a port with nobody listening
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv(f"{sftp_env}_PORT", str(port))
    with pytest.raises(ConnectorError, match="gave up after 3 attempts"):
        pull_sftp(Storage(settings), "hrss", _config(drop, attempts=3), AS_OF)
    assert caplog.text.count("reconnecting") == 2


def test_a_symbolic_link_on_the_server_is_skipped_not_followed(
    settings, sftp_env: str, drop: Path, caplog: pytest.LogCaptureFixture
) -> None:
    drop_file(drop, "hrss_persons_20261030.csv", HRSS_CSV)
    (drop / "hrss_persons_20261031.csv").symlink_to("/etc/passwd")
    (drop / "hrss_persons_20261031.csv.ok").touch()
    with caplog.at_level(logging.WARNING, logger="connectors.sftp"):
        landed = pull_sftp(Storage(settings), "hrss", _config(drop), AS_OF)
    assert _names(landed.manifest) == ["hrss_persons_20261030.csv"]
    assert (
        "hrss_persons_20261031.csv is not a regular file (symbolic link or folder); not taken" in caplog.text
    )
    assert not any(b"root:" in p.read_bytes() for p in landed.path.iterdir())
