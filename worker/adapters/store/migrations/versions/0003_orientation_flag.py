"""persons: the droit whose 6-week orientation deadline was flagged

CASF D262-65-2: when the department has not oriented a person within 6 weeks
of receiving the information, France Travail does. worker/services/orientation.py flags
each unoriented person's case once, some days before that deadline, and
remembers it here (the droit flagged for: a new droit is watched again).

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28
"""
from alembic import op
import sqlalchemy as sa


revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('persons', schema=None) as batch_op:
        batch_op.add_column(sa.Column('orientation_flagged_for', sa.Date(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('persons', schema=None) as batch_op:
        batch_op.drop_column('orientation_flagged_for')
