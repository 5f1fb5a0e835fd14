"""cases: the measure envisaged, observations and the commission's decision (issue 9)

- notice_on: the day the pre-sanction notice (LRAR) was issued: no receipt before it;
- measure_rate / measure_months / measure_repeat: the suspension envisaged at
  review_decision proceed, printed in the notice (CASF L262-37, R262-68);
- observations_at: observations or a hearing request received after the notice;
- decision_rate / decision_months / decision_from / lifted_on: the measure the
  Président du Conseil départemental decided after the commission, and its end.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-29
"""
from alembic import op
import sqlalchemy as sa


revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('cases', schema=None) as batch_op:
        batch_op.add_column(sa.Column('notice_on', sa.Date(), nullable=True))
        batch_op.add_column(sa.Column('measure_rate', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('measure_months', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('measure_repeat', sa.Boolean(), nullable=False, server_default=sa.false()))
        batch_op.add_column(sa.Column('observations_at', sa.DateTime(), nullable=True))
        batch_op.add_column(sa.Column('decision_rate', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('decision_months', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('decision_from', sa.Date(), nullable=True))
        batch_op.add_column(sa.Column('lifted_on', sa.Date(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('cases', schema=None) as batch_op:
        for column in ('lifted_on', 'decision_from', 'decision_months', 'decision_rate', 'observations_at',
                       'measure_repeat', 'measure_months', 'measure_rate', 'notice_on'):
            batch_op.drop_column(column)
