"""Endpoints and secrets from Airflow Connections (AIRFLOW_CONN_* here), env variables as the fallback."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import pytest

from connectors.credentials import rest_endpoint, sftp_values, sql_url
from connectors.rest import pull_rest
from core.settings import RestSource
from core.storage import Storage
from sandbox.simulator import create_app, serve

pytestmark = pytest.mark.integration
TOKEN = "conn-t0ken-for-tests"


def _conn(monkeypatch: pytest.MonkeyPatch, conn_id: str, **fields: object) -> None:
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(fields))


def test_rest_endpoint_from_host_port_schema_or_full_url(monkeypatch: pytest.MonkeyPatch) -> None:
    _conn(
        monkeypatch, "lb_police", conn_type="http", host="10.1.2.3", port=8443, schema="https", password="tk"
    )
    assert rest_endpoint("lb_police") == ("https://10.1.2.3:8443", "tk")
    _conn(monkeypatch, "lb_police", conn_type="http", host="http://gateway.gov/police", password="tk2")
    assert rest_endpoint("lb_police") == ("http://gateway.gov/police", "tk2")
    assert rest_endpoint("no_such_connection") == (None, None)
    assert rest_endpoint(None) == (None, None)


def test_sql_url_prefers_the_connection(monkeypatch: pytest.MonkeyPatch) -> None:
    _conn(
        monkeypatch,
        "lb_civil",
        conn_type="postgresql",
        host="db",
        port=5432,
        login="u",
        password="p",
        schema="front",
    )
    assert sql_url("lb_civil", "sqlite:///fallback.sqlite") == "postgresql+psycopg://u:p@db:5432/front"
    assert sql_url("missing", "sqlite:///fallback.sqlite") == "sqlite:///fallback.sqlite"


def test_sftp_values_from_connection_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    _conn(
        monkeypatch, "lb_hrss", conn_type="sftp", host="sftp.hrss", port=2222, login="lianban",
        extra={"key_file": "/keys/id_ed25519", "known_hosts": "/keys/known_hosts"},
    )  # fmt: skip
    assert sftp_values("lb_hrss") == {
        "HOST": "sftp.hrss", "PORT": "2222", "USER": "lianban",
        "KEY": "/keys/id_ed25519", "KNOWN_HOSTS": "/keys/known_hosts",
    }  # fmt: skip
    assert sftp_values(None) == {}


def test_rest_pull_uses_the_connection_over_the_environment(settings, tmp_path: Path, monkeypatch) -> None:
    data = tmp_path / "persons.jsonl"
    row = {"gmsfhm": "330112199001010011", "xm": "王五", "xbdm": "1", "csrq": "19900101",
           "hjdz_xzqhdm": "330112", "hkztdm": "0", "swrq": None, "gxsj": "2026-10-31 08:00:00"}  # fmt: skip
    data.write_text(json.dumps(row, ensure_ascii=False) + "\n", encoding="utf-8")
    config = RestSource(
        transport="rest", contract="x", conn_id="lb_police", base_url_env="TEST_POLICE_URL",
        token_env="TEST_POLICE_TOKEN", endpoint="/api/v1/hukou/persons", page_size=10, timeout_s=5,
    )  # fmt: skip
    monkeypatch.setenv("TEST_POLICE_URL", "http://127.0.0.1:9")  # dead: must not be used
    monkeypatch.setenv("TEST_POLICE_TOKEN", "wrong")
    with serve(create_app(data, TOKEN)) as url:
        _conn(monkeypatch, "lb_police", conn_type="http", host=url, password=TOKEN)
        landed = pull_rest(Storage(settings), "police", config, date(2026, 11, 1), list(row))
    assert landed.rows == 1
