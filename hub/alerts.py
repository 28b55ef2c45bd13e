"""Failure notices: a task that failed for good (after its last retry) posts one small JSON to an optional
webhook, `LIANBAN_ALERT_WEBHOOK` (docs/operations.md, Failure notices).

The notice carries where it failed (DAG, task, run, source) and the error's first line with every ID-shaped
token masked by the core rule (core.masking); never a row. A webhook that is down or slow (timeout 5 s) is
logged and ignored: a notice never fails or delays a task beyond that.
"""

from __future__ import annotations

import logging
import os
from typing import Any
from urllib.parse import urlsplit

log = logging.getLogger(__name__)
WEBHOOK_ENV = "LIANBAN_ALERT_WEBHOOK"
TIMEOUT_S = 5.0
MAX_ERROR_CHARS = 500


def failure_notice(context: Any) -> dict[str, Any]:
    """The notice for one failed task instance, from its Airflow context."""
    from core.masking import mask_text

    ti = context["ti"]
    error = context.get("exception")
    text = f"{type(error).__name__}: {error}" if error is not None else "failed (no exception recorded)"
    first = next((line for line in text.splitlines() if line.strip()), text)
    dag_id = str(ti.dag_id)
    return {
        "dag": dag_id,
        "task": str(ti.task_id),
        "run": str(ti.run_id),
        "try": getattr(ti, "try_number", None),
        "source": dag_id.removeprefix("ingest_") if dag_id.startswith("ingest_") else None,
        "error": mask_text(first)[:MAX_ERROR_CHARS],
    }


def notify_failure(context: Any) -> None:
    """Airflow's on_failure_callback: post the notice when a webhook is configured; never raise."""
    url = os.environ.get(WEBHOOK_ENV, "").strip()
    if not url:
        return
    try:
        import requests

        notice = failure_notice(context)
        requests.post(url, json=notice, timeout=TIMEOUT_S).raise_for_status()
    except Exception as exc:  # the notice is best effort; the task's own failure is what counts
        # the URL may carry a token: name its host only
        log.warning(
            "failure notice not delivered to the webhook on %s: %s",
            urlsplit(url).hostname or "?",
            type(exc).__name__,
        )
    else:
        log.info("failure notice sent for %s.%s", notice["dag"], notice["task"])
