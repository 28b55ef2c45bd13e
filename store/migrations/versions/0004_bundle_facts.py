"""The facts of 就业帮扶, 机动轮椅车燃油补贴 and 临时救助 join the master file.

Four attributes (schemas/master.yaml; docs/domain.md, The 一件事 bundle): police's 户口性质
(`hukou_nature`, rural or urban: the 临时救助 amount), and from cdpf the lower-limb disability
(`lower_limb`), the 机动轮椅车 registered to the holder (`wheelchair_vehicles`) and the needs survey's
able-to-work item (`able_to_work`). `sources` (one character per attribute) widens from 22 to 26.
Existing versions read the new flags as false and the others as unknown until the next merge sees
them (which then opens a new version for each person whose record gained a value).

The `person` view names its columns, so it is dropped and made again with the new ones (PostgreSQL
also refuses to change the type of a column a view reads).

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-03
"""

from __future__ import annotations

from collections.abc import Sequence
from importlib import import_module

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_VIEW = import_module("store.migrations.versions.0002_person_is_a_view")
ADDED = "hukou_nature, lower_limb, wheelchair_vehicles, able_to_work"
RECORD = _VIEW.RECORD.replace("work_injury_care, ", f"work_injury_care, {ADDED}, ")
CURRENT = (  # built from the constant column lists above
    f"SELECT {RECORD}, valid_from, version, run_id FROM person_version WHERE valid_to IS NULL AND NOT removed"  # noqa: S608
)


def upgrade() -> None:
    op.execute("DROP VIEW person")
    with op.batch_alter_table("person_version") as batch:
        batch.add_column(sa.Column("hukou_nature", sa.String(8)))
        batch.add_column(sa.Column("lower_limb", sa.Boolean, nullable=False, server_default=sa.false()))
        batch.add_column(sa.Column("wheelchair_vehicles", sa.SmallInteger))
        batch.add_column(sa.Column("able_to_work", sa.Boolean, nullable=False, server_default=sa.false()))
        batch.alter_column("sources", type_=sa.String(26), existing_type=sa.String(22))
    op.execute(f"CREATE VIEW person AS {CURRENT}")


def downgrade() -> None:
    """Drops the four columns; `sources` keeps the first 22 codes (the new attributes come last)."""
    op.execute("DROP VIEW person")
    op.execute("UPDATE person_version SET sources = SUBSTR(sources, 1, 22)")
    with op.batch_alter_table("person_version") as batch:
        for column in reversed(ADDED.split(", ")):
            batch.drop_column(column)
        batch.alter_column("sources", type_=sa.String(22), existing_type=sa.String(26))
    op.execute(f"CREATE VIEW person AS {_VIEW.CURRENT}")
