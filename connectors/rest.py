"""REST transport: bearer-token JSON API with paging, timeouts, backoff retries and a rate limit.

A change feed is followed from a bookmarked cursor. Its bookmark cannot be poisoned: an item whose
updated-at lies beyond the run's clock plus `max_future_skew_seconds` stops the pull before it (the
feed is in time order, so the cursor would otherwise jump past every later change), and it and any
item whose updated-at is not a timestamp are held out into held-out.json, which staging quarantines.
"""

from __future__ import annotations

import json
import logging
import os
import time
from datetime import date, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
import requests
from tenacity import RetryCallState, retry, retry_if_exception, stop_after_attempt, wait_exponential

from connectors.credentials import mask, rest_endpoint
from connectors.errors import ConnectorError
from connectors.landing import BatchWriter, Landed
from connectors.sql import canonical_ts, ts_bound
from core.settings import RestSource
from core.storage import Storage

log = logging.getLogger(__name__)

RETRY_STATUS = {429, 500, 502, 503, 504}
# The only retry policy for a REST pull (its Airflow task has no retries): a dead host fails after
# ATTEMPTS calls, i.e. within ATTEMPTS * (5 s connect + timeout_s read) + 15.5 s of backoff.
ATTEMPTS = 6


class RetryableResponse(Exception):
    """A response worth another try (429 or 5xx); carries Retry-After when the server sent one."""

    def __init__(self, status: int, retry_after: float | None) -> None:
        super().__init__(f"HTTP {status}")
        self.status = status
        self.retry_after = retry_after


def _retryable(exc: BaseException) -> bool:
    return isinstance(
        exc,
        RetryableResponse
        | requests.ConnectionError
        | requests.Timeout
        | requests.exceptions.ChunkedEncodingError,
    )


class RestClient:
    """One JSON API: a session with auth, explicit timeouts and at most `rate` requests per second."""

    def __init__(self, base_url: str, token: str, timeout_s: float = 30.0, rate: float = 20.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {token}"
        self.timeout = (5.0, timeout_s)
        self.min_interval = 1.0 / rate
        self._last = 0.0

    def __enter__(self) -> RestClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.session.close()

    @retry(
        retry=retry_if_exception(_retryable),
        wait=wait_exponential(multiplier=0.5, max=30),
        stop=stop_after_attempt(ATTEMPTS),
        reraise=True,
        before_sleep=lambda state: _log_attempt(state),
    )
    def request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        """One call with retries on connection errors, 429 (honouring Retry-After) and 5xx."""
        pause = self.min_interval - (time.monotonic() - self._last)
        if pause > 0:
            time.sleep(pause)
        self._last = time.monotonic()
        response = self.session.request(method, self.base_url + path, timeout=self.timeout, **kwargs)
        if response.status_code in RETRY_STATUS:
            header = response.headers.get("Retry-After")
            retry_after = float(header) if header and header.replace(".", "", 1).isdigit() else None
            if retry_after:
                time.sleep(min(retry_after, 60.0))
            raise RetryableResponse(response.status_code, retry_after)
        response.raise_for_status()
        return response

    def get(self, path: str, params: dict[str, Any]) -> requests.Response:
        return self.request("GET", path, params=params)

    def verify(self, path: str, ids: list[str], batch_size: int = 500) -> list[dict[str, Any]]:
        """Ask about a list of ID numbers in bounded POST batches (a read-only query, so safe to retry)."""
        found: list[dict[str, Any]] = []
        for start in range(0, len(ids), batch_size):
            body = self.request("POST", path, json={"ids": ids[start : start + batch_size]}).json()
            found.extend(body["items"])
        return found


def _log_attempt(state: RetryCallState) -> None:
    """One line per failed attempt: which call, which attempt, why, and the pause before the next."""
    _, method, path = state.args[:3]
    pause = state.next_action.sleep if state.next_action else 0.0
    error = state.outcome.exception() if state.outcome else None
    log.warning(
        "%s %s: attempt %d/%d failed (%s); next in %.1f s",
        method,
        path,
        state.attempt_number,
        ATTEMPTS,
        type(error).__name__ if error is not None else "?",
        pause,
    )


def _secret(name: str, source: str) -> str:
    value = os.environ.get(name)
    if not value:
        raise ConnectorError(source, "rest", "configuration", f"environment variable {name} is not set")
    return value


def pull_rest(
    storage: Storage,
    source: str,
    config: RestSource,
    as_of: date,
    required: list[str],
    updated_at: str | None = None,
    now: datetime | None = None,
) -> Landed:
    """Page through the endpoint (or its change feed) and land each body as received, after checking it.

    `updated_at`: the items' native updated-at field, which guards the change feed's cursor; `now`: the
    run's clock (local wall time), default the machine's.
    """
    conn_url, conn_token = rest_endpoint(config.conn_id)
    base_url = conn_url or config.base_url or _secret(config.base_url_env or "", source)
    token = conn_token or _secret(config.token_env, source)
    mask(token)
    with (
        BatchWriter(storage, source, as_of.strftime("%Y%m%d"), "rest") as batch,
        RestClient(base_url, token, config.timeout_s) as client,
    ):
        if config.mode == "changes":
            bound = ts_bound((now or datetime.now()) + timedelta(seconds=config.max_future_skew_seconds))
            return _pull_changes(storage, source, config, batch, client, required, (updated_at, bound))
        page, total_pages = 1, 1
        while page <= total_pages:
            where = f"{config.endpoint} page {page}"
            body = _fetch(
                client, config.endpoint, {"page": page, "page_size": config.page_size}, source, where
            )
            items = _check_page(body, required, source, where, "total_pages")
            total_pages = int(json.loads(body)["total_pages"])
            batch.add_bytes(f"page-{page:05d}.json", body, len(items))
            log.info("%s: page %d/%d, %d items", source, page, total_pages, len(items))
            page += 1
        return batch.publish(as_of.isoformat())


def _pull_changes(
    storage: Storage,
    source: str,
    config: RestSource,
    batch: BatchWriter,
    client: RestClient,
    required: list[str],
    guard: tuple[str | None, str],
) -> Landed:
    """Follow the change feed from the bookmarked cursor; the new cursor is committed after landing.

    The committed cursor only ever rests on an item that was landed: held-out items at the end of what
    was read are read (and held out) again next time, and a future-dated item ends the pull.
    """
    committed = cursor = storage.watermark(source)
    delta = bool(cursor)  # from the start of the feed the batch is the whole register
    held: list[dict[str, Any]] = []
    page = 1
    while True:
        params: dict[str, Any] = {"limit": config.page_size}
        if cursor:
            params["cursor"] = cursor
        where = f"{config.endpoint} after cursor {cursor or '(start)'}"
        body = _fetch(client, config.endpoint, params, source, where)
        items = _check_page(body, required, source, where, "next_cursor")
        following = json.loads(body)["next_cursor"]
        bad, future = _untrusted(items, guard)
        kept = [item for item, b in zip(items, bad, strict=True) if not b]
        held.extend(item for item, b in zip(items, bad, strict=True) if b)
        if items and not bad[-1]:
            committed = following
        elif kept:  # the page ends in held-out items: rest on the last landed one (or re-read this page)
            committed = _cursor_of(kept[-1], config.cursor_fields) or committed
        if kept:
            if len(kept) < len(items):
                body = json.dumps({"items": kept, "next_cursor": committed}, ensure_ascii=False).encode()
            batch.add_bytes(f"page-{page:05d}.json", body, len(kept))
            page += 1
        if future or not following or not items:
            break
        cursor = following
    if held:
        column, bound = guard
        batch.path_for(HELD_FILE).write_bytes(json.dumps({"items": held}, ensure_ascii=False).encode())
        reason = f"{column} later than the run's clock + skew ({bound}) or not a timestamp"
        batch.hold_out(HELD_FILE, len(held), reason, str(column))
        log.warning("%s: %d change(s) held out: %s", source, len(held), reason)
    return batch.publish(committed, delta=delta)


HELD_FILE = "held-out.json"


def _untrusted(items: list[dict[str, Any]], guard: tuple[str | None, str]) -> tuple[np.ndarray, bool]:
    """Items not to land (updated-at not a timestamp, or from the first future-dated item on: the feed is
    in time order) and whether a future-dated item was met."""
    column, bound = guard
    if column is None or not items:
        return np.zeros(len(items), dtype=bool), False
    ts = canonical_ts(pd.Series([item.get(column) for item in items], dtype=object))
    bad = ts.isna().to_numpy(dtype=bool, copy=True)
    future = (ts > bound).fillna(False).to_numpy(dtype=bool)
    if future.any():
        bad[int(np.argmax(future)) :] = True
    return bad, bool(future.any())


def _cursor_of(item: dict[str, Any], fields: list[str]) -> str | None:
    """The feed's cursor for an item, when the configuration says how it is formed."""
    if not fields or any(item.get(f) is None for f in fields):
        return None
    return "|".join(str(item[f]) for f in fields)


def _fetch(client: RestClient, path: str, params: dict[str, Any], source: str, where: str) -> bytes:
    try:
        return client.get(path, params).content
    except requests.HTTPError as exc:
        raise ConnectorError(source, "rest", where, f"HTTP {exc.response.status_code}") from exc
    except (RetryableResponse, requests.RequestException) as exc:
        root: BaseException = exc  # requests wraps urllib3 wraps the socket error: name the last one
        while (inner := root.__cause__ or root.__context__) is not None and len(str(inner)) <= len(str(root)):
            root = inner
        cause = f"{type(exc).__name__}: {root}"
        # `from None`: the message carries the cause; one traceback instead of five chained ones.
        raise ConnectorError(
            source, "rest", f"{client.base_url}{where}", f"gave up after {ATTEMPTS} attempts: {cause}"
        ) from None


def _check_page(
    body: bytes, required: list[str], source: str, where: str, paging_key: str
) -> list[dict[str, Any]]:
    """The contract check before landing: JSON with an items list whose entries carry every native field."""
    try:
        doc = json.loads(body)
    except ValueError as exc:
        raise ConnectorError(source, "rest", where, f"expected JSON, got {exc}") from exc
    if not isinstance(doc, dict) or not isinstance(doc.get("items"), list) or paging_key not in doc:
        raise ConnectorError(source, "rest", where, f"expected an object with 'items' and '{paging_key}'")
    items: list[dict[str, Any]] = doc["items"]
    for index, item in enumerate(items, start=1):
        missing = [k for k in required if k not in item]
        if missing:
            raise ConnectorError(source, "rest", f"{where} item {index}", f"missing fields {missing}")
    return items
