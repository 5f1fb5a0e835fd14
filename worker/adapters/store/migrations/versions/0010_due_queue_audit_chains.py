"""throughput (issue 15): the sweep's narrow due queue; the audit log in parallel chains

- case_due: one row per active case with a due moment (case_id, due_at, claimed_until), kept by
  triggers on ``cases`` -- after INSERT (PostgreSQL: once per statement, from its transition table,
  so that the ingestion's COPY pays one INSERT ... SELECT), after UPDATE of ``due_at`` or
  ``status`` (per row, only when one of them changed: a new due moment clears the claim; a case
  no longer active, or without a due moment, leaves the queue); a deleted case leaves it too
  (foreign key ON DELETE CASCADE). The sweep claims here (worker/services/cases.py,
  ``due_case_ids``): 1 000 claims touch 1 000 rows of ~50 bytes instead of 1 000 pages of the
  wide ``cases`` table. Filled from ``cases`` (with the current claims) by this migration.
  ``cases.claimed_until`` is no longer used.
- audit_log.chain (0 for every existing entry) and the index (chain, id): each transaction
  extends one chain, locked for it alone, so that concurrent writers do not wait for one another
  (worker/adapters/store/audit.py). The append-only triggers of 0005 are untouched.

Deployment: stop every worker and scheduler of the previous version before this migration: a
process of the previous version reads the log's last entry whatever its chain.

SQLite: a later migration that rebuilds ``cases`` (batch mode) must create its triggers again.

Revision ID: 0010
Revises: 0009
Create Date: 2027-01-12
"""
from alembic import op
import sqlalchemy as sa


revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

_PG_UP = [
    # Room for the claims' HOT updates; vacuumed as soon as 500 rows moved (a sweep's worth), so that
    # the next claim does not first visit the dead index entries that advancing cases left behind.
    "ALTER TABLE case_due SET (fillfactor = 70, autovacuum_vacuum_scale_factor = 0, "
    "autovacuum_vacuum_threshold = 500, autovacuum_vacuum_cost_delay = 0)",
    """
    CREATE OR REPLACE FUNCTION relance_case_due_added() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        INSERT INTO case_due (case_id, due_at)
            SELECT id, due_at FROM added WHERE status = 'active' AND due_at IS NOT NULL
        ON CONFLICT (case_id) DO UPDATE SET due_at = EXCLUDED.due_at, claimed_until = NULL;
        RETURN NULL;
    END $$
    """,
    """
    CREATE OR REPLACE FUNCTION relance_case_due_changed() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        IF NEW.status = 'active' AND NEW.due_at IS NOT NULL THEN
            INSERT INTO case_due (case_id, due_at) VALUES (NEW.id, NEW.due_at)
            ON CONFLICT (case_id) DO UPDATE SET due_at = EXCLUDED.due_at, claimed_until = NULL
                WHERE case_due.due_at IS DISTINCT FROM EXCLUDED.due_at;
        ELSE
            DELETE FROM case_due WHERE case_id = NEW.id;
        END IF;
        RETURN NULL;
    END $$
    """,
    """
    CREATE TRIGGER cases_due_added AFTER INSERT ON cases REFERENCING NEW TABLE AS added
        FOR EACH STATEMENT EXECUTE FUNCTION relance_case_due_added()
    """,
    """
    CREATE TRIGGER cases_due_changed AFTER UPDATE OF due_at, status ON cases FOR EACH ROW
        WHEN (OLD.due_at IS DISTINCT FROM NEW.due_at OR OLD.status IS DISTINCT FROM NEW.status)
        EXECUTE FUNCTION relance_case_due_changed()
    """,
]

_PG_DOWN = [
    "DROP TRIGGER IF EXISTS cases_due_changed ON cases",
    "DROP TRIGGER IF EXISTS cases_due_added ON cases",
    "DROP FUNCTION IF EXISTS relance_case_due_changed()",
    "DROP FUNCTION IF EXISTS relance_case_due_added()",
]

_SQLITE_UP = [
    """
    CREATE TRIGGER cases_due_added AFTER INSERT ON cases
    WHEN NEW.status = 'active' AND NEW.due_at IS NOT NULL
    BEGIN
        INSERT INTO case_due (case_id, due_at) VALUES (NEW.id, NEW.due_at)
        ON CONFLICT (case_id) DO UPDATE SET due_at = excluded.due_at, claimed_until = NULL;
    END
    """,
    """
    CREATE TRIGGER cases_due_changed AFTER UPDATE OF due_at, status ON cases
    WHEN OLD.due_at IS NOT NEW.due_at OR OLD.status IS NOT NEW.status
    BEGIN
        DELETE FROM case_due WHERE case_id = NEW.id AND (NEW.status <> 'active' OR NEW.due_at IS NULL);
        INSERT INTO case_due (case_id, due_at) SELECT NEW.id, NEW.due_at
            WHERE NEW.status = 'active' AND NEW.due_at IS NOT NULL
        ON CONFLICT (case_id) DO UPDATE SET due_at = excluded.due_at, claimed_until = NULL;
    END
    """,
]

_SQLITE_DOWN = [
    "DROP TRIGGER IF EXISTS cases_due_changed",
    "DROP TRIGGER IF EXISTS cases_due_added",
]


def upgrade() -> None:
    dialect = op.get_bind().dialect.name
    op.create_table(
        'case_due',
        sa.Column('case_id', _ID, autoincrement=False, nullable=False),
        sa.Column('due_at', sa.DateTime(), nullable=False),
        sa.Column('claimed_until', sa.DateTime(), nullable=True),
        sa.ForeignKeyConstraint(['case_id'], ['cases.id'], ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('case_id'),
    )
    op.create_index('ix_case_due_due_at', 'case_due', ['due_at'], unique=False)
    op.execute("INSERT INTO case_due (case_id, due_at, claimed_until) SELECT id, due_at, claimed_until FROM cases "
               "WHERE status = 'active' AND due_at IS NOT NULL")
    for statement in _PG_UP if dialect == "postgresql" else _SQLITE_UP if dialect == "sqlite" else []:
        op.execute(statement)
    op.add_column('audit_log', sa.Column('chain', sa.SmallInteger(), server_default=sa.text('0'), nullable=False))
    op.create_index('ix_audit_log_chain_id', 'audit_log', ['chain', 'id'], unique=False)


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    op.drop_index('ix_audit_log_chain_id', table_name='audit_log')
    op.drop_column('audit_log', 'chain')
    for statement in _PG_DOWN if dialect == "postgresql" else _SQLITE_DOWN if dialect == "sqlite" else []:
        op.execute(statement)
    op.drop_index('ix_case_due_due_at', table_name='case_due')
    op.drop_table('case_due')
