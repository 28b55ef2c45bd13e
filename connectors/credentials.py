"""Credentials and endpoints: an Airflow Connection per source first, environment variables second.

A source's config may name `conn_id`. Under Airflow (scheduler or `hub run`) the connection comes
from Airflow's secrets backends: the metadata database (UI, `airflow connections add`), an
`AIRFLOW_CONN_<ID>` variable (URI or JSON), or a configured secrets manager. Without a conn_id, or
when no such connection exists, the source's environment variables are read as before, which
keeps `hub run` working with nothing but a shell environment.

What each transport takes from the connection:
- sql:  host, port, login, password, schema = database; conn type postgres or mysql (or extra
        `drivername`, a SQLAlchemy driver such as `postgresql+psycopg`);
- rest: host (a full `https://...` URL, or host + port + schema as the scheme) and password = token;
- sftp: host, port, login, password, extra `key_file`, `key_passphrase`, `known_hosts` (a file path).

Every secret found is handed to Airflow's secret masker, so it never appears in a task log.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ConnectionValues:
    conn_id: str
    conn_type: str | None
    host: str | None
    port: int | None
    login: str | None
    password: str | None
    schema: str | None
    uri: str
    extra: dict[str, Any] = field(default_factory=dict)


def mask(*secrets: str | None) -> None:
    """Register secrets with Airflow's masker (a no-op where Airflow is not installed)."""
    secrets = tuple(s for s in secrets if s)
    if not secrets:  # nothing to hide: keep Airflow out of plain library use (and its memory)
        return
    try:
        from airflow.sdk.log import mask_secret
    except ImportError:  # pragma: no cover - Airflow is a dependency; kept for library use
        return
    for secret in secrets:
        mask_secret(secret)


def lookup(conn_id: str | None) -> ConnectionValues | None:
    """The Airflow connection `conn_id`, or None when none is configured or defined."""
    if not conn_id:
        return None
    from airflow.sdk import Connection
    from airflow.sdk.exceptions import AirflowNotFoundException

    try:
        conn = Connection.get(conn_id)
    except AirflowNotFoundException:
        log.info("no Airflow connection %r; using the environment variables", conn_id)
        return None
    mask(conn.password, str(conn.extra_dejson.get("key_passphrase") or ""))
    return ConnectionValues(
        conn_id=conn_id,
        conn_type=conn.conn_type,
        host=conn.host,
        port=conn.port,
        login=conn.login,
        password=conn.password,
        schema=conn.schema,
        uri=conn.get_uri(),
        extra=dict(conn.extra_dejson),
    )


# conn type -> SQLAlchemy driver installed with the project (extra `drivername` overrides it)
SQL_DRIVERS = {"postgres": "postgresql+psycopg", "postgresql": "postgresql+psycopg", "mysql": "mysql+pymysql"}


def sql_url(conn_id: str | None, configured: str) -> str:
    """The SQLAlchemy URL built from the connection's fields, else the configured (env-expanded) URL."""
    import sqlalchemy as sa

    conn = lookup(conn_id)
    if conn is None:
        url = configured
    else:
        driver = str(conn.extra.get("drivername") or SQL_DRIVERS.get(conn.conn_type or "", conn.conn_type))
        url = sa.engine.URL.create(
            driver, conn.login, conn.password, conn.host, conn.port, conn.schema
        ).render_as_string(hide_password=False)

    try:
        mask(sa.engine.make_url(url).password)
    except sa.exc.ArgumentError:
        log.debug("not a SQLAlchemy URL; create_engine will say why")
    return url


def rest_endpoint(conn_id: str | None) -> tuple[str | None, str | None]:
    """(base URL, bearer token) from the connection; (None, None) where it has none."""
    conn = lookup(conn_id)
    base_url = token = None
    if conn and conn.host:
        if "://" in conn.host:
            base_url = conn.host
        else:
            scheme = conn.schema or "https"
            base_url = f"{scheme}://{conn.host}" + (f":{conn.port}" if conn.port else "")
    if conn and conn.password:
        token = conn.password
    return base_url, token


def sftp_values(conn_id: str | None) -> dict[str, str]:
    """The connection as the SFTP client's variable names (HOST, PORT, USER, ...); empty without one."""
    conn = lookup(conn_id)
    if conn is None:
        mask(
            *(os.environ.get(k) for k in os.environ if k.endswith(("_SFTP_PASSWORD", "_SFTP_KEY_PASSPHRASE")))
        )
        return {}
    values = {
        "HOST": conn.host,
        "PORT": str(conn.port) if conn.port else None,
        "USER": conn.login,
        "PASSWORD": conn.password,
        "KEY": conn.extra.get("key_file"),
        "KEY_PASSPHRASE": conn.extra.get("key_passphrase"),
        "KNOWN_HOSTS": conn.extra.get("known_hosts"),
    }
    return {k: str(v) for k, v in values.items() if v}
