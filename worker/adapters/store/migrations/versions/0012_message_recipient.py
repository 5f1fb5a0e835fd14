"""where each message went: messages.recipient

- recipient: the number, e-mail address or postal address (its lines, as printed) the provider was
  given, recorded with the provider's answer. The case page and the commission's pack show it, and
  say when the person's contact changed since (they showed the current one, wrong for a message
  sent before a change). Deleted with the message (retention).

Revision ID: 0012
Revises: 0011
Create Date: 2027-01-14
"""
from alembic import op
import sqlalchemy as sa


revision = '0012'
down_revision = '0011'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column('messages', sa.Column('recipient', sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('messages') as batch:
        batch.drop_column('recipient')
