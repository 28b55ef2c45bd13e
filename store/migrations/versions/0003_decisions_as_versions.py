"""Decisions become versions: a row per change of a person's decision for a service, not per run.

Revision 0001 wrote every decision again on every run (2.6 million rows a run at provincial scale).
`decision_version` keeps one row per (person, service) while the decision (eligible, amount, reasons)
stays the same, with valid_from/valid_to like person_version, the run that opened it and the run
that closed it. The upgrade folds the per-run rows into versions: consecutive runs (ordered by as_of,
then write time) with the same decision make one version; a change, or a run the person is missing
from, starts the next. The downgrade gives every run that wrote decisions its rows back: the versions
open at that run. Both are set-based SQL (window functions), so they run inside the database.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-03
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# the runs that wrote decisions, in the order they stand for (as_of, then when they were written)
RUNS = (
    "SELECT run_id, as_of, ROW_NUMBER() OVER (ORDER BY as_of, decisions_written_at, run_id) AS seq "
    "FROM run WHERE decisions_written_at IS NOT NULL"
)

UPGRADE = f"""
INSERT INTO decision_version (id_number, service, version, valid_from, valid_to, period, eligible,
    amount, reasons, policy, policy_version, policy_hash, caused_by, run_id, closed_run)
WITH runs AS ({RUNS}),
d AS (
    SELECT d.*, r.seq,
        LAG(r.seq) OVER w AS prev_seq, LAG(d.eligible) OVER w AS prev_eligible,
        LAG(d.amount) OVER w AS prev_amount, LAG(d.reasons) OVER w AS prev_reasons
    FROM decision d JOIN runs r ON r.run_id = d.run_id
    WINDOW w AS (PARTITION BY d.id_number, d.service ORDER BY r.seq)),
s AS (
    SELECT d.*, CASE WHEN prev_seq IS NULL OR prev_seq <> seq - 1 OR prev_eligible <> eligible
        OR prev_amount <> amount OR prev_reasons <> reasons THEN 1 ELSE 0 END AS starts
    FROM d),
v AS (
    SELECT s.*, SUM(starts) OVER (PARTITION BY id_number, service ORDER BY seq ROWS UNBOUNDED PRECEDING)
        AS version
    FROM s),
g AS (
    SELECT id_number, service, version, MIN(seq) AS first_seq, MAX(seq) AS last_seq
    FROM v GROUP BY id_number, service, version)
SELECT g.id_number, g.service, g.version, o.as_of, c.as_of, f.period, f.eligible, f.amount, f.reasons,
    f.policy, f.policy_version, '', NULL, o.run_id, c.run_id
FROM g
JOIN v f ON f.id_number = g.id_number AND f.service = g.service AND f.seq = g.first_seq
JOIN runs o ON o.seq = g.first_seq
LEFT JOIN runs c ON c.seq = g.last_seq + 1
"""  # noqa: S608 - composed of the constant RUNS above, no outside value

DOWNGRADE = f"""
INSERT INTO decision (run_id, id_number, service, period, eligible, amount, reasons, policy, policy_version)
WITH runs AS ({RUNS})
SELECT r.run_id, v.id_number, v.service, SUBSTR(CAST(r.as_of AS VARCHAR(10)), 1, 7), v.eligible, v.amount,
    v.reasons, v.policy, v.policy_version
FROM decision_version v
JOIN runs o ON o.run_id = v.run_id
LEFT JOIN runs c ON c.run_id = v.closed_run
JOIN runs r ON r.seq >= o.seq AND (c.seq IS NULL OR r.seq < c.seq)
"""  # noqa: S608 - composed of the constant RUNS above, no outside value


def _decision_0001() -> list[sa.Column]:
    return [
        sa.Column("run_id", sa.String(64), primary_key=True),
        sa.Column("id_number", sa.String(18), primary_key=True),
        sa.Column("service", sa.String(64), primary_key=True),
        sa.Column("period", sa.String(7), nullable=False),
        sa.Column("eligible", sa.Boolean, nullable=False),
        sa.Column("amount", sa.Float, nullable=False),
        sa.Column("reasons", sa.String(256), nullable=False),
        sa.Column("policy", sa.String(64), nullable=False),
        sa.Column("policy_version", sa.String(32), nullable=False),
    ]


def upgrade() -> None:
    op.create_table(
        "decision_version",
        sa.Column("id_number", sa.String(18), primary_key=True),
        sa.Column("service", sa.String(64), primary_key=True),
        sa.Column("version", sa.Integer, primary_key=True),
        sa.Column("valid_from", sa.Date, nullable=False),
        sa.Column("valid_to", sa.Date),
        sa.Column("period", sa.String(7), nullable=False),
        sa.Column("eligible", sa.Boolean, nullable=False),
        sa.Column("amount", sa.Float, nullable=False),
        sa.Column("reasons", sa.String(256), nullable=False),
        sa.Column("policy", sa.String(64), nullable=False),
        sa.Column("policy_version", sa.String(32), nullable=False),
        sa.Column("policy_hash", sa.String(64), nullable=False),
        sa.Column("caused_by", sa.Text),
        sa.Column("run_id", sa.String(64), nullable=False),
        sa.Column("closed_run", sa.String(64)),
    )
    with op.batch_alter_table("run") as batch:
        batch.add_column(sa.Column("decisions_written", sa.Integer))
        batch.add_column(sa.Column("decisions_sha256", sa.String(64)))
    op.execute(UPGRADE)
    op.drop_table("decision")


def downgrade() -> None:
    """Back to one row per run, person and service; each run gets the versions open at it."""
    op.create_table("decision", *_decision_0001())
    op.execute(DOWNGRADE)
    op.drop_table("decision_version")
    with op.batch_alter_table("run") as batch:
        batch.drop_column("decisions_sha256")
        batch.drop_column("decisions_written")
