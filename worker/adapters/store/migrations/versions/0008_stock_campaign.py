"""the stock campaign (issue 14): campaigns, the people of the stock in them, the segment of a case

- campaigns: a campaign bringing the stock back into follow-up, active or paused (when, and why:
  ops' words);
- campaign_members: one row per campaign and person of the stock file: segment and priority, the
  contract's end when the file gives it, the status (waiting | invited | followed), the case the
  campaign opened, the day of the invitation and the appointment book (organisation) and path it
  filled;
- cases.segment / cases.first_channels: the segment of a case the campaign opened and the channels
  of its first message (none for the flux).

Revision ID: 0008
Revises: 0007
Create Date: 2027-01-05
"""
from alembic import op
import sqlalchemy as sa


revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    with op.batch_alter_table('cases', schema=None) as batch_op:
        batch_op.add_column(sa.Column('segment', sa.String(length=40), nullable=True))
        batch_op.add_column(sa.Column('first_channels', sa.String(length=40), nullable=True))
    op.create_table(
        'campaigns',
        sa.Column('id', _ID, nullable=False),
        sa.Column('name', sa.String(length=64), nullable=False),
        sa.Column('status', sa.String(length=16), nullable=False),
        sa.Column('status_changed_at', sa.DateTime(), nullable=True),
        sa.Column('status_note', sa.String(length=200), nullable=True),
        sa.Column('created_at', sa.DateTime(), nullable=False),
        sa.Column('updated_at', sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('name'),
    )
    op.create_table(
        'campaign_members',
        sa.Column('id', _ID, nullable=False),
        sa.Column('campaign_id', _ID, nullable=False),
        sa.Column('person_id', _ID, nullable=False),
        sa.Column('segment', sa.String(length=40), nullable=False),
        sa.Column('priority', sa.Integer(), nullable=False),
        sa.Column('contract_end', sa.Date(), nullable=True),
        sa.Column('status', sa.String(length=16), nullable=False),
        sa.Column('case_id', _ID, nullable=True),
        sa.Column('invited_on', sa.Date(), nullable=True),
        sa.Column('invited_at', sa.DateTime(), nullable=True),
        sa.Column('organisation', sa.String(length=64), nullable=True),
        sa.Column('path', sa.String(length=32), nullable=True),
        sa.Column('source', sa.String(length=200), nullable=True),
        sa.Column('created_at', sa.DateTime(), nullable=False),
        sa.Column('updated_at', sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(['campaign_id'], ['campaigns.id']),
        sa.ForeignKeyConstraint(['person_id'], ['persons.id']),
        sa.ForeignKeyConstraint(['case_id'], ['cases.id']),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('campaign_id', 'person_id', name='uq_campaign_member_person'),
    )
    op.create_index('ix_campaign_members_person_id', 'campaign_members', ['person_id'])
    op.create_index('ix_campaign_members_status', 'campaign_members', ['campaign_id', 'status'])


def downgrade() -> None:
    op.drop_index('ix_campaign_members_status', table_name='campaign_members')
    op.drop_index('ix_campaign_members_person_id', table_name='campaign_members')
    op.drop_table('campaign_members')
    op.drop_table('campaigns')
    with op.batch_alter_table('cases', schema=None) as batch_op:
        batch_op.drop_column('first_channels')
        batch_op.drop_column('segment')
