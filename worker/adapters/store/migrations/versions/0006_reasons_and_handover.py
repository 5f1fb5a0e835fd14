"""cases: the legitimate reason's category, and who reported a France Travail failure (issue 9)

- pause_category: the category of the legitimate reason running or that stopped the procedure
  (config/paths.yaml ``legitimate_reasons``); the person's own words are never stored;
- reported_by: the France Travail organisation whose ft_report handed the case to the
  department's reviewing organisation (the case's ``organisation`` after the handoff).

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-29
"""
from alembic import op
import sqlalchemy as sa


revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('cases', schema=None) as batch_op:
        batch_op.add_column(sa.Column('pause_category', sa.String(length=32), nullable=True))
        batch_op.add_column(sa.Column('reported_by', sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('cases', schema=None) as batch_op:
        batch_op.drop_column('reported_by')
        batch_op.drop_column('pause_category')
