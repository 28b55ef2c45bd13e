"""Open an HTML file in headless Chromium with the network off and watch it over the DevTools protocol.

Chromium runs with every host name unresolvable and a proxy that goes nowhere, so nothing can leave the
machine even if the page asked; the DevTools events then say whether it asked at all: every request the
page makes (Network.requestWillBeSent), every console message and uncaught exception. The page is
screenshotted and probed with small expressions (which sections exist, what the language switch shows).

Run as a script to screenshot a report: python -m tests.e2e.browser REPORT.html SHOT.png
"""

from __future__ import annotations

import base64
import itertools
import json
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from websockets.sync.client import connect

CHROMIUM = ("chromium", "chromium-browser", "google-chrome")


def chromium() -> str | None:
    return next((path for name in CHROMIUM if (path := shutil.which(name))), None)


@dataclass
class PageVisit:
    requests: list[str] = field(default_factory=list)
    console: list[tuple[str, str]] = field(default_factory=list)  # (level, text)
    exceptions: list[str] = field(default_factory=list)
    probes: dict[str, Any] = field(default_factory=dict)
    screenshot: Path | None = None
    seconds: float = 0.0


class _Session:
    """One DevTools websocket, one flattened page session; events are kept as they arrive."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.ids = itertools.count(1)
        self.events: list[dict[str, Any]] = []
        self.session: str | None = None

    def call(
        self, method: str, params: dict[str, Any] | None = None, timeout: float = 15.0
    ) -> dict[str, Any]:
        n = next(self.ids)
        message: dict[str, Any] = {"id": n, "method": method, "params": params or {}}
        if self.session and not method.startswith("Target."):
            message["sessionId"] = self.session
        self.ws.send(json.dumps(message))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            reply = json.loads(self.ws.recv(timeout=max(deadline - time.monotonic(), 0.01)))
            if reply.get("id") == n:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return dict(reply.get("result") or {})
            self.events.append(reply)
        raise TimeoutError(f"{method}: no answer in {timeout} s")

    def wait_for(self, event: str, timeout: float = 15.0) -> None:
        if any(e.get("method") == event for e in self.events):
            return
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            message = json.loads(self.ws.recv(timeout=max(deadline - time.monotonic(), 0.01)))
            self.events.append(message)
            if message.get("method") == event:
                return
        raise TimeoutError(f"no {event} in {timeout} s")

    def evaluate(self, expression: str) -> Any:
        result = self.call("Runtime.evaluate", {"expression": expression, "returnByValue": True})
        return result.get("result", {}).get("value")


def visit(html: Path, screenshot: Path, probes: dict[str, str], clicks: Sequence[str] = ()) -> PageVisit:
    """Load `html` offline, run each probe expression (after the `clicks` expressions), screenshot it."""
    binary = chromium()
    if binary is None:
        raise FileNotFoundError("no chromium binary on PATH (apt-get install chromium)")
    started = time.perf_counter()
    profile = Path(tempfile.mkdtemp(prefix="lianban-chromium-"))
    args = [
        binary,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--disable-extensions",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--metrics-recording-only",
        "--host-resolver-rules=MAP * ~NOTFOUND",
        "--proxy-server=127.0.0.1:9",
        "--proxy-bypass-list=<-loopback>",
        "--remote-debugging-port=0",
        f"--user-data-dir={profile}",
        "--window-size=1280,2000",
        "about:blank",
    ]
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        url = None
        assert process.stderr is not None
        deadline = time.monotonic() + 20
        while url is None and time.monotonic() < deadline:
            line = process.stderr.readline()
            if not line and process.poll() is not None:
                break
            found = re.search(r"DevTools listening on (ws://\S+)", line)
            url = found.group(1) if found else None
        if url is None:
            raise RuntimeError("chromium did not announce its DevTools endpoint")
        # keep draining chromium's chatter so a full pipe never blocks it
        threading.Thread(target=process.stderr.read, daemon=True).start()
        with connect(url, max_size=64 * 2**20, open_timeout=10) as ws:
            out = _drive(_Session(ws), html, screenshot, probes, clicks)
        out.seconds = time.perf_counter() - started
        return out
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
        shutil.rmtree(profile, ignore_errors=True)


def _drive(
    s: _Session, html: Path, screenshot: Path, probes: dict[str, str], clicks: Sequence[str]
) -> PageVisit:
    out = PageVisit()
    target = s.call("Target.createTarget", {"url": "about:blank"})["targetId"]
    s.session = s.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
    for domain in ("Page", "Network", "Runtime", "Log"):
        s.call(f"{domain}.enable")
    s.events.clear()
    s.call("Page.navigate", {"url": html.resolve().as_uri()})
    s.wait_for("Page.loadEventFired")
    for click in clicks:
        s.evaluate(click)
    out.probes = {name: s.evaluate(expression) for name, expression in probes.items()}
    height = s.call("Page.getLayoutMetrics")["cssContentSize"]["height"]
    s.call(
        "Emulation.setDeviceMetricsOverride",
        {
            "width": 1280,
            "height": int(min(max(height, 800), 12000)),
            "deviceScaleFactor": 1,
            "mobile": False,
        },
    )
    shot = s.call("Page.captureScreenshot", {"format": "png"}, timeout=30)
    screenshot.parent.mkdir(parents=True, exist_ok=True)
    screenshot.write_bytes(base64.b64decode(shot["data"]))
    out.screenshot = screenshot
    for e in s.events:
        params = e.get("params") or {}
        if e.get("method") == "Network.requestWillBeSent":
            out.requests.append(str(params["request"]["url"]))
        elif e.get("method") == "Runtime.consoleAPICalled":
            text = " ".join(str(a.get("value", a.get("description", ""))) for a in params.get("args", []))
            out.console.append((str(params.get("type")), text))
        elif e.get("method") == "Log.entryAdded":
            entry = params.get("entry") or {}
            out.console.append((str(entry.get("level")), str(entry.get("text"))))
        elif e.get("method") == "Runtime.exceptionThrown":
            out.exceptions.append(json.dumps(params.get("exceptionDetails"))[:500])
    return out


if __name__ == "__main__":
    result = visit(Path(sys.argv[1]), Path(sys.argv[2]), {"title": "document.title"})
    print(
        json.dumps(
            {
                "screenshot": str(result.screenshot),
                "requests": result.requests,
                "console": result.console,
                "seconds": round(result.seconds, 2),
            },
            ensure_ascii=False,
        )
    )
