"""SQL transport: a 前置库 table read through SQLAlchemy in chunks with a server-side cursor.

Full mode lands the whole table. Incremental mode resumes from the composite watermark
(updated_at, key) and re-reads an overlap window behind it: rows already landed in that
window are recognised by their (updated_at, key) and dropped, so rows sharing the boundary
timestamp, or committed late with a slightly older one, are neither skipped nor landed twice.
"""

from __future__ import annotations

import json
import logging
from datetime import date, datetime, timedelta
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import sqlalchemy as sa

from connectors.credentials import sql_url
from connectors.errors import ConnectorError
from connectors.landing import BatchWriter, Landed
from hub.settings import SqlSource
from hub.storage import Storage

log = logging.getLogger(__name__)

KEYS_FILE = (
    "bookmark-keys.parquet"  # (updated_at, key) landed inside the overlap window; not part of the data
)


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


def _ts_text(series: pd.Series) -> pd.Series:
    """Timestamps as canonical text ('YYYY-MM-DD HH:MM:SS[.ffffff]') so bookmarks compare across backends."""
    parsed = pd.to_datetime(series, errors="raise")
    text = parsed.dt.strftime("%Y-%m-%d %H:%M:%S.%f").str.removesuffix(".000000")
    return text.where(series.notna())


def _key_text(frame: pd.DataFrame, columns: list[str]) -> pd.Series:
    key = frame[columns[0]].astype("string")
    for column in columns[1:]:
        key = key.str.cat(frame[column].astype("string"), sep="|")
    return key


class _Resume:
    """What the previous incremental batch left: its watermark and the keys landed inside the overlap."""

    def __init__(self, storage: Storage, source: str) -> None:
        raw, batch_id = storage.watermark_record(source)
        self.value: dict[str, Any] | None = json.loads(raw) if raw else None
        self.seen = pd.DataFrame({"ts": pd.Series(dtype="string"), "key": pd.Series(dtype="string")})
        if self.value and batch_id:
            keys = storage.landing(source, batch_id) / KEYS_FILE
            if keys.exists():
                self.seen = pd.read_parquet(keys).astype("string")

    def since(self, overlap: timedelta) -> datetime | None:
        return _parse_ts(self.value["ts"]) - overlap if self.value else None


def pull_sql(storage: Storage, source: str, config: SqlSource, as_of: date, order_by: list[str]) -> Landed:
    """Land the table (full) or what changed since the watermark (incremental) as parquet parts of text."""
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
    query = sa.select(table).order_by(*(table.c[c] for c in order_by))
    resume = _Resume(storage, source) if incremental else None
    overlap = timedelta(seconds=config.overlap_seconds)
    since = resume.since(overlap) if resume else None
    if since is not None and config.watermark_column:
        column = table.c[config.watermark_column]
        bound: Any = since if isinstance(column.type, sa.DateTime) else since.strftime("%Y-%m-%d %H:%M:%S")
        query = query.where(column >= bound)
    names = list(table.c.keys())
    schema = pa.schema([(n, pa.string()) for n in names])
    landed_keys: list[pd.DataFrame] = []
    last: tuple[str, str] | None = None
    window = as_of.strftime("%Y%m%d")
    with BatchWriter(storage, source, window, "sql") as batch, engine.connect() as conn:
        result = conn.execution_options(stream_results=True, yield_per=config.chunk_rows).execute(query)
        number = 0
        for chunk in result.partitions():
            frame = pd.DataFrame.from_records(chunk, columns=names)
            if incremental and resume is not None:
                ts = _ts_text(frame[config.watermark_column]).astype("string")
                key = _key_text(frame, config.key_columns)
                fresh = ~pd.MultiIndex.from_arrays([ts, key]).isin(pd.MultiIndex.from_frame(resume.seen))
                frame, ts, key = frame[fresh], ts[fresh], key[fresh]
                if frame.empty:
                    continue
                last = (str(ts.iloc[-1]), str(key.iloc[-1]))
                landed_keys = [
                    _recent(pd.concat([*landed_keys, pd.DataFrame({"ts": ts, "key": key})]), last, overlap)
                ]
            number += 1
            name = f"part-{number:05d}.parquet"
            text = frame.astype("string")
            pq.write_table(
                pa.Table.from_pandas(text, schema=schema, preserve_index=False), batch.path_for(name)
            )
            batch.added(name, len(frame))
            log.info("%s: fetched %d rows (part %d)", source, len(frame), number)
            if not incremental:
                row = frame.iloc[-1]
                last = ("|".join(str(row[c]) for c in order_by), "")
        watermark: str | None
        if incremental and resume is not None:
            if last is None and resume.value is not None:  # nothing new: keep the old bookmark and its keys
                last = (resume.value["ts"], resume.value["key"])
                landed_keys.append(resume.seen)
            watermark = _keep_recent(batch, resume, landed_keys, last, overlap)
        else:
            watermark = last[0] if last else None
        return batch.publish(watermark, delta=since is not None)


def _recent(keys: pd.DataFrame, last: tuple[str, str], overlap: timedelta) -> pd.DataFrame:
    """Only keys inside the overlap window behind the newest timestamp matter; memory stays bounded."""
    floor = (_parse_ts(last[0]) - overlap).strftime("%Y-%m-%d %H:%M:%S")
    return keys[keys["ts"] >= floor].astype("string")


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
