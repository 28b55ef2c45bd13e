"""One department's refused pull never stops the others: `hub run` with the police API dead.

First a clean run (exit 0), then a run for the next day with the police host dead. That run must
deliver (the cycle runs on the other sources' new batches and police's last accepted one), exit 3
(stale, not 1: failed), print one line per connection attempt, name source, transport, target and
cause once, fail within the connector's stated bound, and the report must say police is stale.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
from datetime import date, timedelta
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
HUB = [sys.executable, "-m", "hub.cli"]


def _dead_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # closed on exit: nothing listens there


def test_dead_police_host_leaves_the_cycle_running_on_its_last_good_batch(tmp_path: Path) -> None:
    from connectors.rest import ATTEMPTS

    var = tmp_path / "var"
    env = {**os.environ, "LIANBAN_VAR": str(var), "PYTHONPATH": str(ROOT)}
    for key in ("LIANBAN_POLICE_URL", "LIANBAN_POLICE_TOKEN", "LIANBAN_CONFIG"):
        env.pop(key, None)
    subprocess.run(
        [*HUB, "sandbox", "init", "--persons", "300", "--seed", "5"], env=env, cwd=ROOT, check=True
    )
    first = subprocess.run([*HUB, "run"], env=env, cwd=ROOT, capture_output=True, text=True)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    day1 = date.fromisoformat(json.loads((var / "sandbox" / "sandbox.json").read_text())["as_of"])
    day2 = day1 + timedelta(days=1)

    dead = f"http://127.0.0.1:{_dead_port()}"
    env.update({"LIANBAN_POLICE_URL": dead, "LIANBAN_POLICE_TOKEN": "not-a-real-token"})
    started = time.monotonic()
    second = subprocess.run(
        [*HUB, "run", "--date", str(day2)], env=env, cwd=ROOT, capture_output=True, text=True
    )
    elapsed = time.monotonic() - started
    out = second.stdout + second.stderr
    assert second.returncode == 3, out[-4000:]
    assert "STALE police" in out

    attempts = re.findall(rf"GET /api/v1/hukou/persons: attempt (\d)/{ATTEMPTS} failed", out)
    assert attempts == [str(n) for n in range(1, ATTEMPTS)], out[-4000:]  # one line per retried attempt
    final = f"[police via rest] {dead}/api/v1/hukou/persons page 1: gave up after {ATTEMPTS} attempts: ConnectionError: [Errno 111] Connection refused"
    assert final in out
    assert "not-a-real-token" not in out
    # the pull's error and the ingest DAG's verdict; no chain of wrapped transport errors
    assert out.count("Traceback") <= 2, out[-6000:]
    assert elapsed < 120, f"{elapsed:.0f} s"

    report = json.loads((var / "reports" / f"cycle-{day2}" / "report.json").read_text(encoding="utf-8"))
    assert [s["source"] for s in report["stale"]] == ["police"]
    police_day1 = [b for b in (var / "staged" / "police").iterdir() if f"-{day1:%Y%m%d}-" in b.name]
    assert report["stale"][0]["last_good_batch"] == police_day1[0].name
    assert any("STALE since" in w and w.startswith("police") for w in report["warnings"])
    used = json.loads((var / "runs" / f"cycle-{day2}" / "merge.json").read_text())["batches"]
    assert used["police"] == police_day1[0].name
    for source in ("cdpf", "civil", "hrss"):  # the others moved on to the new day's batch
        assert f"-{day2:%Y%m%d}-" in used[source], used
    assert list((var / "outbox" / "civil").rglob(f"civil_two_subsidies_{day2:%Y%m%d}.csv"))
    print(
        f"\nrefused police pull: hub run exit 3 in {elapsed:.0f} s (whole run), {len(attempts)} retry lines"
    )
