"""Alembic migrations of the master store, shipped inside the hub package (no alembic.ini needed).

`upgrade(engine)` brings a database to head; MasterStore calls it on open. `python -m store.migrations
ARGS` runs the alembic command line against the configured master store (or `--url URL`), e.g.
`python -m store.migrations current`, `... upgrade head --sql` for a DBA, or
`... revision --autogenerate -m "what changed"` after editing schemas/master.yaml or store/schema.py.
"""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

HERE = Path(__file__).resolve().parent
_heads: set[str] | None = None


class StoreSchemaError(RuntimeError):
    """The database holds master-store tables Alembic does not manage (a store from before migrations)."""


def config(url: str | None = None) -> Config:
    """A programmatic Alembic config: scripts from this package, the URL given (if any)."""
    cfg = Config()
    cfg.set_main_option("script_location", str(HERE))
    if url is not None:
        cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def heads() -> set[str]:
    """The head revision(s) of the shipped migrations (read once per process)."""
    global _heads
    if _heads is None:
        _heads = set(ScriptDirectory.from_config(config()).get_heads())
    return _heads


def upgrade(engine: sa.Engine) -> None:
    """Upgrade the database to head; one cheap query when it already is there."""
    with engine.begin() as conn:
        current = set(MigrationContext.configure(conn).get_current_heads())
        if current == heads():
            return
        if not current and sa.inspect(conn).has_table("person"):
            raise StoreSchemaError(
                f"{engine.url.render_as_string(hide_password=True)} holds a master store from before "
                "schema migrations (table person, no alembic_version); it cannot be upgraded in place: "
                "move it away and rebuild the master from landing (`hub run`)"
            )
        cfg = config()
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")
