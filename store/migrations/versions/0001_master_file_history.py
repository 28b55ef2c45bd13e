"""Master file with history: person, person_version, id_change, conflict lifecycle, decision, run.

A frozen copy of the store's tables as of this revision (today built by store/schema.py from
schemas/master.yaml; tests compare the migrated database with them).

Revision ID: 0001
Revises:
Create Date: 2026-05-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _record(with_id: bool = True) -> list[sa.Column]:
    cols = [sa.Column("id_number", sa.String(18), primary_key=True)] if with_id else []
    return [
        *cols,
        sa.Column("name", sa.String(64)),
        sa.Column("gender", sa.String(8)),
        sa.Column("birth_date", sa.Date),
        sa.Column("hukou_county", sa.String(12)),
        sa.Column("hukou_status", sa.String(16)),
        sa.Column("death_date", sa.Date),
        sa.Column("cert_number", sa.String(20)),
        sa.Column("category", sa.SmallInteger),
        sa.Column("level", sa.SmallInteger),
        sa.Column("cert_status", sa.String(16)),
        sa.Column("cert_issued", sa.Date),
        sa.Column("cert_valid_until", sa.Date),
        sa.Column("needs_long_term_care", sa.Boolean, nullable=False),
        sa.Column("institutional_care", sa.Boolean, nullable=False),
        sa.Column("dibao", sa.Boolean, nullable=False),
        sa.Column("dibao_edge", sa.Boolean, nullable=False),
        sa.Column("tekun", sa.Boolean, nullable=False),
        sa.Column("orphan_support", sa.Boolean, nullable=False),
        sa.Column("dibao_standard", sa.Float),
        sa.Column("employment", sa.String(16)),
        sa.Column("pension_type", sa.String(16)),
        sa.Column("work_injury_care", sa.Boolean, nullable=False),
        sa.Column("sources", sa.String(22)),
        sa.Column("cdpf_batch", sa.String(128)),
        sa.Column("police_batch", sa.String(128)),
        sa.Column("civil_batch", sa.String(128)),
        sa.Column("hrss_batch", sa.String(128)),
        sa.Column("record_hash", sa.BigInteger),
    ]


def upgrade() -> None:
    op.create_table(
        "person",
        *_record(),
        sa.Column("valid_from", sa.Date, nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("run_id", sa.String(64), nullable=False),
    )
    op.create_table(
        "person_version",
        sa.Column("id_number", sa.String(18), primary_key=True),
        sa.Column("version", sa.Integer, primary_key=True),
        sa.Column("valid_from", sa.Date, nullable=False),
        sa.Column("valid_to", sa.Date),
        sa.Column("caused_by", sa.Text),
        sa.Column("run_id", sa.String(64), nullable=False),
        sa.Column("removed", sa.Boolean, nullable=False),
        *_record(with_id=False),
    )
    op.create_table(
        "id_change",
        sa.Column("old_id", sa.String(18), primary_key=True),
        sa.Column("new_id", sa.String(18), primary_key=True),
        sa.Column("source", sa.String(16)),
        sa.Column("batch_id", sa.String(128)),
        sa.Column("first_run", sa.String(64), nullable=False),
    )
    op.create_index("ix_id_change_new_id", "id_change", ["new_id"])
    op.create_table(
        "conflict",
        sa.Column("id_number", sa.String(18), primary_key=True),
        sa.Column("conflict_type", sa.String(32), primary_key=True),
        sa.Column("source_a", sa.String(16), primary_key=True),
        sa.Column("source_b", sa.String(16), primary_key=True),
        sa.Column("value_a", sa.String(128)),
        sa.Column("value_b", sa.String(128)),
        sa.Column("batch_a", sa.String(128)),
        sa.Column("batch_b", sa.String(128)),
        sa.Column("department", sa.String(16)),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("first_run", sa.String(64), nullable=False),
        sa.Column("last_run", sa.String(64), nullable=False),
        sa.Column("resolved_run", sa.String(64)),
    )
    op.create_index("ix_conflict_type", "conflict", ["conflict_type"])
    op.create_index("ix_conflict_status", "conflict", ["status"])
    op.create_table(
        "decision",
        sa.Column("run_id", sa.String(64), primary_key=True),
        sa.Column("id_number", sa.String(18), primary_key=True),
        sa.Column("service", sa.String(64), primary_key=True),
        sa.Column("period", sa.String(7), nullable=False),
        sa.Column("eligible", sa.Boolean, nullable=False),
        sa.Column("amount", sa.Float, nullable=False),
        sa.Column("reasons", sa.String(256), nullable=False),
        sa.Column("policy", sa.String(64), nullable=False),
        sa.Column("policy_version", sa.String(32), nullable=False),
    )
    op.create_table(
        "run",
        sa.Column("run_id", sa.String(64), primary_key=True),
        sa.Column("as_of", sa.Date),
        sa.Column("persons", sa.Integer),
        sa.Column("conflicts", sa.Integer),
        sa.Column("decisions", sa.Integer),
        sa.Column("master_written_at", sa.String(32)),
        sa.Column("decisions_written_at", sa.String(32)),
        sa.Column("mode", sa.String(16)),
        sa.Column("scope", sa.Integer),
        sa.Column("written", sa.Integer),
        sa.Column("batches", sa.Text),
    )


def downgrade() -> None:
    for table in ("run", "decision", "conflict", "id_change", "person_version", "person"):
        op.drop_table(table)
