"""Exactly once, proved against a real sshd and the simulator's receiving endpoint under uvicorn.

A real `python -m stages.deliver` subprocess is SIGKILLed at a different step of each delivery (every
upload, every rename, the marker, each REST chunk and the commit) and then re-run. Meanwhile a poller
on the partner's side watches the inbox folders: it must never see a partial file, a marker whose
data or manifest does not match it, or a delivered file replaced by a second copy. At the end every
published file is on the partner's side exactly once, with a receipt in the ledger.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from sshd import LocalSshd

from core.publish import publish_unit
from core.settings import ROOT, load_settings
from core.signing import PUBLIC_NAME, load_signing_key, verify_delivery
from core.storage import Storage
from sandbox.simulator import create_receiver_app, serve
from stages.deliver import deliver, deliveries

pytestmark = pytest.mark.integration

TRIALS = 22  # interrupted deliveries, alternating SFTP and REST
PAYLOAD_BYTES = 600_000
CHUNK_BYTES = 32 * 1024
SFTP_STEPS = 8  # connected, upload x3, publish x3, done
REST_STEPS = PAYLOAD_BYTES // CHUNK_BYTES + 3  # chunks, commit, done
TOKEN = "receiver-token"


class Poller(threading.Thread):
    """The partner: watches its inbox, checks every visible file, writes an ack for each complete unit."""

    def __init__(self, inbox: Path, expected: dict[str, bytes]) -> None:
        super().__init__(daemon=True)
        self.inbox, self.expected = inbox, expected
        self.stop = threading.Event()
        self.partial: list[str] = []
        self.unmatched: list[str] = []
        self.inodes: dict[str, set[int]] = {}
        self.checked: set[tuple[tuple[int, int, int], ...]] = set()
        self.polls = 0

    def run(self) -> None:
        while not self.stop.is_set():
            self.poll()
            time.sleep(0.002)

    def poll(self) -> None:
        self.polls += 1
        try:
            names = [n for n in os.listdir(self.inbox) if not n.startswith(".")]
        except FileNotFoundError:
            return
        for name in names:
            path = self.inbox / name
            try:
                if name.endswith(".ok"):
                    self.check_unit(name.removesuffix(".ok"))
                elif name.endswith((".manifest.json", ".ack")):
                    continue
                elif name not in self.expected:
                    self.partial.append(f"unexpected file {name}")
                elif path.stat().st_size != len(self.expected[name]):
                    self.partial.append(f"{name}: {path.stat().st_size} of {len(self.expected[name])} bytes")
            except FileNotFoundError:
                continue  # renamed away between listing and looking (only the hidden staging does that)

    def check_unit(self, name: str) -> None:
        paths = [self.inbox / f"{name}.ok", self.inbox / name, self.inbox / f"{name}.manifest.json"]
        try:
            stats = [p.stat() for p in paths]
        except FileNotFoundError:  # a marker without its pair: exactly what must never be seen
            if paths[0].exists():
                self.unmatched.append(f"{name}: marker without data or manifest")
            return
        self.inodes.setdefault(name, set()).add(stats[1].st_ino)
        seen = tuple((st.st_ino, st.st_mtime_ns, st.st_size) for st in stats)
        if seen not in self.checked:  # hash each state of the unit once, not on every poll
            marker = paths[0].read_text(encoding="ascii").split("\n")
            data, manifest = paths[1].read_bytes(), paths[2].read_bytes()
            if marker[0].split()[0] != hashlib.sha256(data).hexdigest() or marker[1].split()[0] != (
                hashlib.sha256(manifest).hexdigest()
            ):
                self.unmatched.append(name)
            self.checked.add(seen)
        ack = self.inbox / f"{name}.ack"
        if not ack.exists() or self.polls % 50 == 0:  # and now and then a duplicate receipt
            ack.write_text(json.dumps({"file": name, "ok": True}), encoding="utf-8")


def _contracts(folder: Path, sftp_inbox: Path) -> Path:
    folder.mkdir()
    routes = {
        "hrss": {"transport": "sftp", "env_prefix": "LIANBAN_HRSS_PUSH", "folder": str(sftp_inbox),
                 "attempts": 2, "retry_wait_s": 0.1},
        "police": {"transport": "rest", "base_url_env": "LIANBAN_POLICE_PUSH_URL",
                   "token_env": "LIANBAN_POLICE_PUSH_TOKEN", "chunk_bytes": CHUNK_BYTES, "attempts": 2},
    }  # fmt: skip
    for partner, delivery in routes.items():
        body = {"contract": f"{partner}_push", "partner": partner, "delivery": delivery}
        (folder / f"{partner}_push.yaml").write_text(json.dumps(body), encoding="utf-8")
    return folder


def _run_killed(env: dict[str, str], contracts: Path, partner: str, kill_at: int | None) -> str:
    """Run the deliver step; SIGKILL it right after its `kill_at`-th step line. Returns the last step seen."""
    process = subprocess.Popen(
        [sys.executable, "-m", "stages.deliver", "--contracts", str(contracts), "--partner", partner, "-vv"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stderr is not None
    steps, last = 0, "never started"
    for line in process.stderr:
        if " push " in line:
            steps += 1
            step = line.rsplit(": ", 1)[-1].strip()
            role = "marker" if step.endswith(".ok") else "manifest" if step.endswith(".json") else "data"
            last = f"{step.split()[0]} {role}" if step.startswith(("upload", "publish")) else step
            if kill_at is not None and steps == kill_at:
                os.kill(process.pid, signal.SIGKILL)
                break
    process.wait(timeout=30)
    if kill_at is None:
        assert process.returncode == 0, f"deliver exited {process.returncode}"
    return last if process.returncode == -signal.SIGKILL else f"finished ({last})"


def test_killed_deliveries_leave_exactly_one_copy_and_nothing_partial(
    sshd: LocalSshd, drop: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = load_settings(var_dir=tmp_path / "var")
    storage = Storage(settings)
    key = load_signing_key(storage.var)
    rest_inbox = tmp_path / "police-inbox"
    contracts = _contracts(tmp_path / "contracts", drop)
    app = create_receiver_app(rest_inbox, TOKEN)
    expected = {"hrss": {}, "police": {}}  # partner -> file -> bytes
    pollers = {"hrss": Poller(drop, expected["hrss"]), "police": Poller(rest_inbox, expected["police"])}
    kills: list[tuple[str, str]] = []
    with serve(app) as url:
        env = {**os.environ, "PYTHONPATH": str(ROOT), "LIANBAN_VAR": str(storage.var),
               "LIANBAN_POLICE_PUSH_URL": url, "LIANBAN_POLICE_PUSH_TOKEN": TOKEN,
               **sshd.env("LIANBAN_HRSS_PUSH")}  # fmt: skip
        for name, value in env.items():
            if name.startswith("LIANBAN_"):
                monkeypatch.setenv(name, value)
        for poller in pollers.values():
            poller.start()
        started = time.monotonic()
        for trial in range(TRIALS):
            partner = ("hrss", "police")[trial % 2]
            rows = PAYLOAD_BYTES // 66
            payload = (
                b"code\r\n" + (hashlib.sha256(str(trial).encode()).hexdigest().encode() + b"\r\n") * rows
            )
            name = f"{partner}_push_{trial:02d}.csv"
            manifest = {"contract": f"{partner}_push", "partner": partner, "run_id": f"run-{trial}", "rows": rows,
                        "format": "csv", "encoding": "utf-8"}  # fmt: skip
            unit = publish_unit(storage.outbox(partner, "2026-03"), name, payload, manifest, key)
            expected[partner][unit.path.name] = payload
            steps = SFTP_STEPS if partner == "hrss" else REST_STEPS
            kill_at = 1 + (trial // 2 * 3) % (steps - 1)  # a different step each time, never after the last
            if partner == "police" and trial // 2 % 4 == 3:
                kill_at = steps - 1  # right after "commit": killed while the commit is in flight
            kills.append((partner, _run_killed(env, contracts, partner, kill_at)))
            deliver(settings, contracts, partner=partner)  # the re-run, in-process
        for partner in pollers:  # the re-run that finishes the job, then one that must send nothing
            _run_killed(env, contracts, partner, None)
            assert deliver(settings, contracts, partner=partner)["sent"] == 0
        time.sleep(0.2)
        for poller in pollers.values():
            poller.poll()
        for partner in pollers:  # collect the acks the partner wrote meanwhile
            deliver(settings, contracts, partner=partner)
        elapsed = time.monotonic() - started
        for poller in pollers.values():
            poller.stop.set()
            poller.join(5)
    interrupted = [k for k in kills if not k[1].startswith("finished")]
    duplicates = sum(len(v) - 1 for p in pollers.values() for v in p.inodes.values())
    duplicates += sum(n - 1 for n in app.state.published.values())
    figures = {
        "trials": TRIALS,
        "interrupted": len(interrupted),
        "kill_points": sorted({f"{p}:{step}" for p, step in interrupted}),
        "partial_seen": sum(len(p.partial) for p in pollers.values()),
        "unmatched_seen": sum(len(p.unmatched) for p in pollers.values()),
        "duplicates": duplicates,
        "polls": sum(p.polls for p in pollers.values()),
        "seconds": round(elapsed, 1),
    }
    sys.stdout.write(f"\ninterrupted-delivery figures: {json.dumps(figures, ensure_ascii=False)}\n")
    assert len(interrupted) >= 20 and len(figures["kill_points"]) >= 10, figures
    assert pollers["hrss"].partial == [] and pollers["police"].partial == []
    assert pollers["hrss"].unmatched == [] and pollers["police"].unmatched == []
    assert duplicates == 0
    for partner, inbox in (("hrss", drop), ("police", rest_inbox)):
        visible = sorted(n for n in os.listdir(inbox) if not n.startswith("."))
        wanted = sorted(f"{n}{s}" for n in expected[partner] for s in ("", ".manifest.json", ".ok", ".ack"))
        assert visible == wanted  # exactly one copy of each file, nothing else
        for name, payload in expected[partner].items():
            assert (inbox / name).read_bytes() == payload
            verify_delivery(inbox / name, inbox / f"{name}.manifest.json", storage.var / "keys" / PUBLIC_NAME)
    assert os.listdir(drop / ".lianban-incoming") == []  # no temporary file left on the partner's side
    assert all(n == 1 for n in app.state.published.values()) and len(app.state.published) == TRIALS // 2
    rows = deliveries(storage)
    assert len(rows) == TRIALS and {r["status"] for r in rows} == {"acked"}


def test_receiving_endpoint_honours_idempotency_and_never_replaces(tmp_path: Path) -> None:
    import requests

    inbox = tmp_path / "inbox"
    with serve(create_receiver_app(inbox, TOKEN)) as url:
        base = f"{url}/api/v1/exchange/files/f.csv"
        auth = {"Authorization": f"Bearer {TOKEN}"}

        def post(path: str, key: str | None, **kw: object) -> requests.Response:
            headers = {**auth, **({"Idempotency-Key": key} if key else {})}
            return requests.post(f"{base}/{path}", headers=headers, timeout=10, **kw)  # type: ignore[arg-type]

        assert post("chunks/0", None, data=b"a").status_code == 400  # no key
        assert requests.post(f"{base}/chunks/0", data=b"a", timeout=10).status_code == 401
        assert post("chunks/0", "r:f.csv:0", data=b"code\r\n1\r\n").json()["chunk"] == 0
        assert post("chunks/0", "r:f.csv:0", data=b"code\r\n1\r\n").status_code == 200  # replayed
        assert post("chunks/0", "r:f.csv:0", data=b"other").status_code == 422  # same key, other body
        data = b"code\r\n1\r\n"
        manifest = json.dumps(
            {"file": "f.csv", "sha256": hashlib.sha256(data).hexdigest(), "rows": 1}
        ).encode()
        marker = f"{hashlib.sha256(data).hexdigest()}  f.csv\n"
        body = {"manifest": base64.b64encode(manifest).decode(), "marker": marker, "chunks": ["r:f.csv:0"]}
        first = post("commit", "r:f.csv:commit", json=body).json()
        assert first["duplicate"] is False and first["rows"] == 1 and (inbox / "f.csv").read_bytes() == data
        again = post("commit", "r2:f.csv:commit", json=body).json()  # another run sends the same unit
        assert again["duplicate"] is True and again["receipt_id"] == first["receipt_id"]
        other = {**body, "marker": "0" * 64 + "  f.csv\n"}
        assert post("commit", "r3:f.csv:commit", json=other).status_code == 409  # never replaced
        assert (inbox / "f.csv").read_bytes() == data


def test_sftp_push_refuses_a_changed_host_key(sshd: LocalSshd, drop: Path, tmp_path: Path) -> None:
    from sshd import known_hosts_with_other_key

    from connectors.errors import ConnectorError
    from connectors.push import SftpPush, Unit

    settings = load_settings(var_dir=tmp_path / "var")
    unit_file = publish_unit(
        Storage(settings).outbox("hrss", "2026-03"), "x.csv", b"code\r\n1\r\n",
        {"contract": "c", "partner": "hrss", "run_id": "r", "rows": 1}, load_signing_key(settings.var_dir),
    )  # fmt: skip
    push = SftpPush(
        sshd.host, sshd.port, sshd.user, folder=str(drop), key_path=sshd.client_key, attempts=1,
        known_hosts=known_hosts_with_other_key(sshd, tmp_path / "known_hosts"),
    )  # fmt: skip
    with pytest.raises(ConnectorError, match="host key CHANGED"):
        push.deliver(Unit("hrss", "c", "r", unit_file.path, unit_file.sha256))
    assert os.listdir(drop) == []
