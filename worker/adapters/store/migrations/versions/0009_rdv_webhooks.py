"""RDV-Solidarités' webhooks (issue 16): its appointments as Relance applied them, per participant

- rdvs_participations: one row per organisation, appointment (rdv_id) and participant (u<user id> or
  p<participation id>): the person recognised (or not: match = pending, an agent's task, with the
  payload kept until an agent links or discards it), the meta.timestamp and the body's digest of the
  last delivery taken in (older and repeated deliveries change nothing), RDV-Solidarités' status and
  the appointment date Relance holds as booked.

Revision ID: 0009
Revises: 0008
Create Date: 2027-01-10
"""
from alembic import op
import sqlalchemy as sa


revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        'rdvs_participations',
        sa.Column('id', _ID, nullable=False),
        sa.Column('organisation', sa.String(length=64), nullable=False),
        sa.Column('rdv_id', sa.BigInteger(), nullable=False),
        sa.Column('participant', sa.String(length=24), nullable=False),
        sa.Column('rdvs_user_id', sa.BigInteger(), nullable=True),
        sa.Column('person_id', _ID, nullable=True),
        sa.Column('case_id', sa.BigInteger(), nullable=True),
        sa.Column('match', sa.String(length=16), nullable=False),
        sa.Column('matched_by', sa.String(length=24), nullable=True),
        sa.Column('event_at', sa.DateTime(), nullable=True),
        sa.Column('digest', sa.String(length=64), nullable=True),
        sa.Column('starts_at', sa.DateTime(), nullable=True),
        sa.Column('status', sa.String(length=16), nullable=True),
        sa.Column('booked_at', sa.DateTime(), nullable=True),
        sa.Column('payload', sa.JSON(), nullable=True),
        sa.Column('note', sa.Text(), nullable=True),
        sa.Column('created_at', sa.DateTime(), nullable=False),
        sa.Column('updated_at', sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(['person_id'], ['persons.id']),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('organisation', 'rdv_id', 'participant', name='uq_rdvs_participation'),
    )
    op.create_index('ix_rdvs_participations_person_id', 'rdvs_participations', ['person_id'])
    op.create_index('ix_rdvs_participations_match', 'rdvs_participations', ['match', 'organisation'])
    op.create_index('ix_rdvs_participations_user', 'rdvs_participations', ['organisation', 'rdvs_user_id'])


def downgrade() -> None:
    op.drop_index('ix_rdvs_participations_user', table_name='rdvs_participations')
    op.drop_index('ix_rdvs_participations_match', table_name='rdvs_participations')
    op.drop_index('ix_rdvs_participations_person_id', table_name='rdvs_participations')
    op.drop_table('rdvs_participations')
