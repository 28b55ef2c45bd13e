"""The current master becomes a view over the open versions instead of a second copy of them.

Every current row was already the person's open, not-removed version in person_version; writing it
twice cost a full merge about a fifth of its store time. Looking a person's open version up by number
needs no index of its own: the primary key (id_number, version) starts with the number.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29
"""

from __future__ import annotations

from collections.abc import Sequence
from importlib import import_module

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

RECORD = (
    "id_number, name, gender, birth_date, hukou_county, hukou_status, death_date, cert_number, category, "
    "level, cert_status, cert_issued, cert_valid_until, needs_long_term_care, institutional_care, dibao, "
    "dibao_edge, tekun, orphan_support, dibao_standard, employment, pension_type, work_injury_care, "
    "sources, cdpf_batch, police_batch, civil_batch, hrss_batch, record_hash"
)
CURRENT = (  # built from the constant column list above
    f"SELECT {RECORD}, valid_from, version, run_id FROM person_version WHERE valid_to IS NULL AND NOT removed"  # noqa: S608
)


def upgrade() -> None:
    op.drop_table("person")
    op.execute(f"CREATE VIEW person AS {CURRENT}")


def downgrade() -> None:
    """Back to the table of revision 0001, filled with the current rows."""
    first = import_module("store.migrations.versions.0001_master_file_history")
    op.execute("DROP VIEW person")
    op.create_table(
        "person",
        *first._record(),
        sa.Column("valid_from", sa.Date, nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("run_id", sa.String(64), nullable=False),
    )
    op.execute(f"INSERT INTO person ({RECORD}, valid_from, version, run_id) {CURRENT}")
