"""due cases: partial index for the sweep's claim

The sweep claims ``status = 'active' AND due_at <= now`` oldest first: a
partial index on ``due_at`` over the active cases only (closed cases, 30 % and
more of the table in steady state, are left out) replaces ix_cases_due
(status, due_at). On PostgreSQL the cases table also gets fillfactor 90: the
claim only sets claimed_until (not indexed), so with room left on the page the
update is HOT (no new index entries) -- see bench/RESULTS.md.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28
"""
from alembic import op
import sqlalchemy as sa


revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None

ACTIVE = sa.text("status = 'active'")


def upgrade() -> None:
    with op.batch_alter_table('cases', schema=None) as batch_op:
        batch_op.drop_index('ix_cases_due')
        batch_op.create_index('ix_cases_due_active', ['due_at'], unique=False,
                              postgresql_where=ACTIVE, sqlite_where=ACTIVE)
    if op.get_bind().dialect.name == 'postgresql':
        op.execute("ALTER TABLE cases SET (fillfactor = 90)")


def downgrade() -> None:
    if op.get_bind().dialect.name == 'postgresql':
        op.execute("ALTER TABLE cases RESET (fillfactor)")
    with op.batch_alter_table('cases', schema=None) as batch_op:
        batch_op.drop_index('ix_cases_due_active', postgresql_where=ACTIVE, sqlite_where=ACTIVE)
        batch_op.create_index('ix_cases_due', ['status', 'due_at'], unique=False)
