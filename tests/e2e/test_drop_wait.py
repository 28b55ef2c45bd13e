"""A drop source's wait (config `wait:`), through the real ingestion DAG under dag.test() as `hub run`
runs it: a late file is waited for and pulled; a missing one fails the wait at the deadline with one
error naming source, transport, folder and cause, the source is recorded stale, and each task that
failed for good posts its notice to the webhook (LIANBAN_ALERT_WEBHOOK, a real HTTP server here).

Each run is a subprocess (tests/e2e/drop_wait_driver.py): Airflow is configured once per process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

from core.settings import ROOT

pytestmark = pytest.mark.e2e
DRIVER = Path(__file__).with_name("drop_wait_driver.py")
AS_OF = "2026-11-02"


@pytest.fixture
def webhook() -> Iterator[tuple[str, list[dict[str, object]]]]:
    """A real HTTP server on a free loopback port that records every JSON body POSTed to it."""
    received: list[dict[str, object]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (http.server's name)
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append({"path": self.path, **json.loads(body)})
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hooks/lianban", received
    finally:
        server.shutdown()
        server.server_close()


def _run(tmp_path: Path, when: str, wait: dict[str, object], webhook: str = "") -> tuple[dict[str, str], str]:
    raw = yaml.safe_load((ROOT / "config" / "sandbox.yaml").read_text(encoding="utf-8"))
    raw["sources"]["hrss"].update(path="{var}/drops/hrss", wait=wait)
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(raw, allow_unicode=True), encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "LIANBAN_ALERT_WEBHOOK": webhook}
    done = subprocess.run(
        [sys.executable, str(DRIVER), str(config), str(tmp_path / "var"), AS_OF, when],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-4000:]
    states = json.loads(next(line for line in done.stdout.splitlines() if line.startswith("STATES "))[7:])
    return states, out


def test_a_late_file_is_waited_for_and_pulled(tmp_path: Path) -> None:
    states, out = _run(tmp_path, "late", {"poke_seconds": 1, "deadline_minutes": 2, "mode": "reschedule"})
    assert states["wait"] == "success" and states["pull"] == "success", (states, out[-4000:])
    looks = out.index("hrss: no ready file in")
    assert looks < out.index("DROPPED") < out.index("hrss: 1 file(s) ready in")
    landed = list((tmp_path / "var" / "landing" / "hrss").glob("hrss-20261102-*/hrss_persons_20261102.csv"))
    assert len(landed) == 1, out[-3000:]
    assert not (tmp_path / "var" / "state" / "refused" / "hrss.json").exists()


def test_a_missing_file_fails_the_wait_at_the_deadline_naming_source_and_folder(
    tmp_path: Path, webhook: tuple[str, list[dict[str, object]]]
) -> None:
    url, notices = webhook
    states, out = _run(tmp_path, "never", {"poke_seconds": 1, "deadline_minutes": 0.1, "mode": "poke"}, url)
    assert states == {"wait": "failed", "pull": "upstream_failed", "stage": "success", "fresh": "failed"}
    folder = tmp_path / "var" / "drops" / "hrss"
    error = (
        f"[hrss via folder] {folder}: no file matching hrss_persons_*.csv with its .ok "
        f"marker arrived by the deadline (0.1 min after the wait began at "
    )
    # raised once, where the wait fails (the stage's returned value names it as the stale reason)
    assert out.count(f"connectors.errors.ConnectorError: {error}") == 1, out[-5000:]
    assert "Sensor has timed out" not in out  # our deadline, not Airflow's backstop
    refused = json.loads((tmp_path / "var" / "state" / "refused" / "hrss.json").read_text(encoding="utf-8"))
    assert refused["as_of"] == AS_OF and refused["error"].startswith(f"ConnectorError: {error}")
    # one notice per task that failed for good, in the order they failed
    assert [(n["path"], n["dag"], n["task"], n["source"]) for n in notices] == [
        ("/hooks/lianban", "ingest_hrss", "wait", "hrss"),
        ("/hooks/lianban", "ingest_hrss", "fresh", "hrss"),
    ]
    assert str(notices[0]["error"]).startswith(f"ConnectorError: {error}")
    assert str(notices[1]["error"]).startswith("RuntimeError: hrss is stale")
    assert all(str(n["run"]).startswith("manual__") for n in notices)
