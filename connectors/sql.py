"""SQL transport: a 前置库 table read through SQLAlchemy in chunks with a server-side cursor."""

from __future__ import annotations

import logging
from datetime import date

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import sqlalchemy as sa

from connectors.errors import ConnectorError
from connectors.landing import BatchWriter, Landed
from hub.settings import SqlSource
from hub.storage import Storage

log = logging.getLogger(__name__)


def pull_sql(storage: Storage, source: str, config: SqlSource, as_of: date, order_by: list[str]) -> Landed:
    """Land the whole table as parquet parts of native text columns (full reload)."""
    url = storage.settings.expand(config.url)
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            table = sa.Table(config.table, sa.MetaData(), autoload_with=conn)
    except sa.exc.NoSuchTableError as exc:
        raise ConnectorError(
            source, "sql", config.table, f"table not found in {engine.url.render_as_string()}"
        ) from exc
    except sa.exc.OperationalError as exc:
        raise ConnectorError(source, "sql", config.table, f"cannot connect: {exc.orig}") from exc
    missing = [c for c in order_by if c not in table.c]
    if missing:
        raise ConnectorError(
            source, "sql", config.table, f"expected ordering columns {missing}, found {list(table.c.keys())}"
        )
    query = sa.select(table).order_by(*(table.c[c] for c in order_by))
    names = list(table.c.keys())
    schema = pa.schema([(n, pa.string()) for n in names])
    watermark: str | None = None
    with BatchWriter(storage, source, as_of.strftime("%Y%m%d"), "sql") as batch, engine.connect() as conn:
        result = conn.execution_options(stream_results=True, yield_per=config.chunk_rows).execute(query)
        for number, chunk in enumerate(result.partitions(), start=1):
            frame = pd.DataFrame.from_records(chunk, columns=names).astype("string")
            name = f"part-{number:05d}.parquet"
            pq.write_table(
                pa.Table.from_pandas(frame, schema=schema, preserve_index=False), batch.path_for(name)
            )
            batch.added(name, len(chunk))
            log.info("%s: fetched %d rows (part %d)", source, len(chunk), number)
            last = chunk[-1] if chunk else None
            if last is not None:
                watermark = "|".join(str(last[names.index(c)]) for c in order_by)
        return batch.publish(watermark)
