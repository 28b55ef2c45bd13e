"""SQL transport: a 前置库 table read as Arrow batches (ADBC or PyMySQL, connectors.arrow_read), in chunks.

SQLAlchemy reflects the table and builds the query; the driver streams the rows.

Full mode lands the whole table. Incremental mode resumes from the composite watermark
(updated_at, key) and re-reads an overlap window behind it: rows already landed in that
window are recognised by their (updated_at, key) and dropped, so rows sharing the boundary
timestamp, or committed late with a slightly older one, are neither skipped nor landed twice.

Bookmarks cannot be poisoned: a row whose watermark value lies beyond the run's clock plus
`max_future_skew_seconds` (e.g. updated_at 9999-12-31), or is not a timestamp at all, is held
out of the data into held-out.parquet (staging quarantines it with the reason and the department
gets it back) and never advances the watermark, so later pulls still see every new row. Watermark
values are compared as one parsed type: fixed-width microsecond text over years 1-9999, whatever
precision the department's text or driver gave ('...:15' and '...:15.5' order correctly).
"""

from __future__ import annotations

import json
import logging
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import date, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import sqlalchemy as sa

from connectors.arrow_read import processors, raw_frame, read_chunks, text_schema, text_table
from connectors.credentials import sql_url
from connectors.errors import ConnectorError
from connectors.landing import BatchWriter, Landed
from core.settings import SqlSource
from core.storage import Storage

log = logging.getLogger(__name__)

KEYS_FILE = (
    "bookmark-keys.parquet"  # (updated_at, key) landed inside the overlap window; not part of the data
)
HELD_FILE = "held-out.parquet"  # rows whose watermark value cannot be trusted; quarantined by staging
HELD_REASON_COLUMN = "_held_reason"
_TS_SHAPE = r"^\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}:\d{2}(\.\d{1,6})?$"


def _reflect(engine: sa.Engine, source: str, name: str) -> sa.Table:
    try:
        with engine.connect() as conn:
            return sa.Table(name, sa.MetaData(), autoload_with=conn)
    except sa.exc.NoSuchTableError as exc:
        raise ConnectorError(
            source, "sql", name, f"table not found in {engine.url.render_as_string()}"
        ) from exc
    except sa.exc.OperationalError as exc:
        raise ConnectorError(source, "sql", name, f"cannot connect: {exc.orig}") from exc


def _parse_ts(text: str) -> datetime:
    return datetime.fromisoformat(text)


def ts_bound(moment: datetime) -> str:
    """A datetime as the canonical text of canonical_ts."""
    return moment.isoformat(sep=" ", timespec="microseconds")


def canonical_ts(series: pd.Series) -> pd.Series:
    """Watermark values as fixed-width text 'YYYY-MM-DD HH:MM:SS.ffffff'; null where a value is not a timestamp.

    Driver datetimes and department text alike go through text, are checked for shape and parsed by
    Arrow at microsecond resolution (years 1-9999, never through nanosecond timestamps), so text order is
    time order and '...:15' < '...:15.5' whatever precision each row was written with.
    """
    text = pa.array(series.astype("string").str.strip(), type=pa.string(), from_pandas=True)
    shaped = pc.fill_null(pc.match_substring_regex(text, _TS_SHAPE), False)
    base = pc.replace_substring(pc.utf8_slice_codeunits(text, 0, 19), "T", " ")
    seconds = pc.strptime(base, format="%Y-%m-%d %H:%M:%S", unit="us", error_is_null=True)
    digits = pc.utf8_rpad(pc.utf8_slice_codeunits(text, 20, 26), 6, "0")
    micros = pc.cast(pc.if_else(shaped, digits, "000000"), pa.int64()).cast(pa.duration("us"))
    parsed = pc.if_else(shaped, pc.add(seconds, micros), None)
    out = pc.strftime(parsed, format="%Y-%m-%d %H:%M:%S")  # %S carries the microseconds at unit us
    # strptime rolls an impossible day over (02-30 -> 03-02): such a value is not a timestamp
    out = pc.if_else(pc.fill_null(pc.equal(pc.utf8_slice_codeunits(out, 0, 19), base), False), out, None)
    return pd.Series(out.to_pandas(), index=series.index, dtype="string")


def _key_text(frame: pd.DataFrame, columns: list[str]) -> pd.Series:
    key = frame[columns[0]].astype("string")
    for column in columns[1:]:
        key = key.str.cat(frame[column].astype("string"), sep="|")
    return key


class _Resume:
    """What the previous incremental batch left: its watermark and the keys landed inside the overlap.

    Both are brought to canonical_ts text, so a bookmark written at another precision still matches.
    """

    def __init__(self, storage: Storage, source: str) -> None:
        raw, batch_id = storage.watermark_record(source)
        self.value: dict[str, Any] | None = json.loads(raw) if raw else None
        self.seen = pd.DataFrame({"ts": pd.Series(dtype="string"), "key": pd.Series(dtype="string")})
        if self.value:
            self.value["ts"] = canonical_ts(pd.Series([self.value["ts"]])).iloc[0]
            if pd.isna(self.value["ts"]):
                raise ConnectorError(source, "sql", "watermark", f"bookmark {raw!r} is not a timestamp")
        if self.value and batch_id:
            keys = storage.landing(source, batch_id) / KEYS_FILE
            if keys.exists():
                seen = pd.read_parquet(keys).astype("string")
                self.seen = seen.assign(ts=canonical_ts(seen["ts"]))

    def since(self, overlap: timedelta) -> datetime | None:
        return _parse_ts(self.value["ts"]) - overlap if self.value else None


class _Held:
    """Rows held out of an incremental batch, streamed to HELD_FILE (never kept whole in memory)."""

    def __init__(self, batch: BatchWriter, schema: pa.Schema) -> None:
        self.batch = batch
        self.schema = schema.append(pa.field(HELD_REASON_COLUMN, pa.string()))
        self.writer: pq.ParquetWriter | None = None
        self.rows = 0

    def add(self, frame: pd.DataFrame, reason: pd.Series) -> None:
        if frame.empty:
            return
        if self.writer is None:
            self.writer = pq.ParquetWriter(self.batch.path_for(HELD_FILE), self.schema)
        text = frame.astype("string").assign(**{HELD_REASON_COLUMN: reason.astype("string")})
        self.writer.write_table(pa.Table.from_pandas(text, schema=self.schema, preserve_index=False))
        self.rows += len(frame)

    def close(self, source: str, column: str, bound: str) -> None:
        if self.writer is None:
            return
        self.writer.close()
        self.batch.hold_out(
            HELD_FILE,
            self.rows,
            f"{column} later than the run's clock + skew ({bound}) or not a timestamp",
            column,
        )
        log.warning(
            "%s: %d row(s) held out: %s later than %s or not a timestamp; the bookmark ignores them",
            source,
            self.rows,
            column,
            bound,
        )


def pull_sql(
    storage: Storage,
    source: str,
    config: SqlSource,
    as_of: date,
    order_by: list[str],
    now: datetime | None = None,
) -> Landed:
    """Land the table (full) or what changed since the watermark (incremental) as parquet parts of text.

    `now`: the run's clock (local wall time, as the department's timestamps are), default the machine's.
    """
    engine = sa.create_engine(sql_url(config.conn_id, storage.settings.expand(config.url)))
    table = _reflect(engine, source, config.table)
    incremental = config.mode == "incremental"
    if incremental:
        if not config.watermark_column or not config.key_columns:
            raise ConnectorError(
                source, "sql", config.table, "incremental mode needs watermark_column and key_columns"
            )
        order_by = [config.watermark_column, *config.key_columns]
    missing = [c for c in order_by if c not in table.c]
    if missing:
        raise ConnectorError(
            source, "sql", config.table, f"expected columns {missing}, found {list(table.c.keys())}"
        )
    query = sa.select(table)
    resume = _Resume(storage, source) if incremental else None
    overlap = timedelta(seconds=config.overlap_seconds)
    since = resume.since(overlap) if resume else None
    if since is not None and config.watermark_column:
        column = table.c[config.watermark_column]
        # text columns: whole seconds, so '...:10' is not missed against '...:10.000000' (only re-read more)
        # rendered as a literal for the Arrow drivers; every backend compares a datetime column to
        # 'YYYY-MM-DD HH:MM:SS.ffffff' text as a timestamp (SQLite stores it as exactly that text)
        bound = (
            ts_bound(since)
            if isinstance(column.type, sa.DateTime)
            else since.replace(microsecond=0).isoformat(sep=" ")
        )
        query = query.where(column >= sa.literal(bound, sa.String()))
    future = ts_bound((now or datetime.now()) + timedelta(seconds=config.max_future_skew_seconds))
    names = list(table.c.keys())
    schema = text_schema(names)
    landed_keys: list[pd.DataFrame] = []
    last: tuple[str, str] | None = None
    window = as_of.strftime("%Y%m%d")
    procs = processors(engine, table)
    with BatchWriter(storage, source, window, "sql") as batch:
        held = _Held(batch, schema)
        number = 0
        # full mode writes each part on one background thread while the driver fetches the next chunk
        # (both release the GIL); at most one part waits, so memory stays at about two chunks
        writer = ThreadPoolExecutor(max_workers=1)
        pending: Future[None] | None = None
        for chunk in read_chunks(engine, query, order_by, config.chunk_rows, batch.path_for(".sort")):
            if not incremental:
                number += 1
                if pending is not None:
                    pending.result()
                pending = writer.submit(
                    _write_part, batch, f"part-{number:05d}.parquet", chunk, procs, schema
                )
                log.info("%s: fetched %d rows (part %d)", source, chunk.num_rows, number)
                tail = raw_frame(chunk.select(order_by).slice(chunk.num_rows - 1), procs).iloc[-1]
                last = ("|".join(str(tail[c]) for c in order_by), "")
                continue
            frame = raw_frame(chunk, procs)
            if incremental and resume is not None and config.watermark_column:
                raw = frame[config.watermark_column]
                ts = canonical_ts(raw)
                untrusted = (raw.notna() & ts.isna()) | (ts > future).fillna(False)
                held.add(frame[untrusted], _held_reasons(ts[untrusted], future))
                key = _key_text(frame, config.key_columns)
                fresh = ~untrusted & ~pd.MultiIndex.from_arrays([ts, key]).isin(
                    pd.MultiIndex.from_frame(resume.seen)
                )
                frame, ts, key = frame[fresh], ts[fresh], key[fresh]
                if frame.empty:
                    continue
                last = _newest(last, ts, key)
                if last is not None:
                    landed_keys = [
                        _recent(
                            pd.concat([*landed_keys, pd.DataFrame({"ts": ts, "key": key})]), last, overlap
                        )
                    ]
            number += 1
            name = f"part-{number:05d}.parquet"
            text = frame.astype("string")
            pq.write_table(
                pa.Table.from_pandas(text, schema=schema, preserve_index=False), batch.path_for(name)
            )
            batch.added(name, len(frame))
            log.info("%s: fetched %d rows (part %d)", source, len(frame), number)
        if pending is not None:
            pending.result()
        writer.shutdown()
        held.close(source, str(config.watermark_column), future)
        watermark: str | None
        if incremental and resume is not None:
            if last is None and resume.value is not None:  # nothing new: keep the old bookmark and its keys
                last = (resume.value["ts"], resume.value["key"])
                landed_keys.append(resume.seen)
            watermark = _keep_recent(batch, resume, landed_keys, last, overlap)
        else:
            watermark = last[0] if last else None
        return batch.publish(watermark, delta=since is not None)


def _write_part(
    batch: BatchWriter, name: str, chunk: pa.Table, procs: dict[str, Any], schema: pa.Schema
) -> None:
    pq.write_table(text_table(chunk, procs, schema), batch.path_for(name))
    batch.added(name, chunk.num_rows)


def _held_reasons(ts: pd.Series, future: str) -> pd.Series:
    return pd.Series(
        np.where(ts.isna(), "not a timestamp", f"later than the run's clock + skew ({future})"),
        index=ts.index,
        dtype="string",
    )


def _newest(last: tuple[str, str] | None, ts: pd.Series, key: pd.Series) -> tuple[str, str] | None:
    """The newest (timestamp, key) so far; rows without a timestamp cannot carry the bookmark."""
    dated = ts.notna()
    if not dated.any():
        return last
    top = str(ts[dated].max())
    if last is not None and last[0] > top:
        return last
    return top, str(key[dated & (ts == top)].iloc[-1])


def _recent(keys: pd.DataFrame, last: tuple[str, str], overlap: timedelta) -> pd.DataFrame:
    """Only keys inside the overlap window behind the newest timestamp matter; memory stays bounded."""
    floor = ts_bound(_parse_ts(last[0]) - overlap)
    return keys[(keys["ts"] >= floor).fillna(False)].astype("string")


def _keep_recent(
    batch: BatchWriter,
    resume: _Resume,
    landed: list[pd.DataFrame],
    last: tuple[str, str] | None,
    overlap: timedelta,
) -> str | None:
    """Write the keys still inside the overlap window beside the batch; return the watermark JSON."""
    if last is None:
        return None
    keys = _recent(pd.concat([resume.seen, *landed], ignore_index=True), last, overlap).drop_duplicates()
    keys.to_parquet(batch.path_for(KEYS_FILE), index=False)
    return json.dumps({"ts": last[0], "key": last[1]})
