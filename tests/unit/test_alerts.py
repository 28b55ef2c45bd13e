"""Failure notices (hub.alerts): masked, small, and never a reason for a task to fail."""

from __future__ import annotations

import logging
import socket
import time
from types import SimpleNamespace

import pytest

from hub.alerts import failure_notice, notify_failure

ID = "330106199001011237"


def _context(error: BaseException) -> dict[str, object]:
    ti = SimpleNamespace(dag_id="ingest_police", task_id="pull", run_id="scheduled__2026-11-01", try_number=1)
    return {"ti": ti, "exception": error}


def test_the_notice_names_where_it_failed_and_masks_ids() -> None:
    error = ValueError(f"row 12: ID {ID} refused\nTraceback-like second line with {ID}")
    notice = failure_notice(_context(error))
    assert notice == {
        "dag": "ingest_police",
        "task": "pull",
        "run": "scheduled__2026-11-01",
        "try": 1,
        "source": "police",
        "error": "ValueError: row 12: ID 330106********1237 refused",
    }


def test_a_dead_webhook_is_logged_by_host_and_never_raises(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("LIANBAN_ALERT_WEBHOOK", f"http://127.0.0.1:{port}/hook/SECRET-TOKEN")
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="hub.alerts"):
        notify_failure(_context(RuntimeError("boom")))
    assert time.monotonic() - started < 6
    assert [r.getMessage() for r in caplog.records] == [
        "failure notice not delivered to the webhook on 127.0.0.1: ConnectionError"
    ]


def test_without_a_webhook_nothing_is_sent(monkeypatch: pytest.MonkeyPatch, caplog) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.delenv("LIANBAN_ALERT_WEBHOOK", raising=False)
    with caplog.at_level(logging.INFO, logger="hub.alerts"):
        notify_failure(_context(RuntimeError("boom")))
    assert caplog.records == []
