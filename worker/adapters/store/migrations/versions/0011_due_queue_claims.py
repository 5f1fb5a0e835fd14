"""throughput (issue 15): the sweep's claims move to a table of their own, ``case_claim``

- case_claim (case_id, due_at, claimed_until): the cases the sweep handed out. A claim *moves* its
  rows from case_due to case_claim (worker/adapters/store/due_queue.py); the end of an ``advance``
  moves back the claims of the cases whose due moment did not change; an expired claim is claimed
  again. Filled with the claims held in case_due, whose ``claimed_until`` column goes.
- The trigger on an update of ``cases.due_at`` / ``status`` deletes the case's queue row and claim
  and inserts a new row, instead of updating the row in place: rows of case_due are only inserted
  and deleted, so its pages never fill past their fillfactor (90) and PostgreSQL does not prune
  them while a claim reads through them (bench/RESULTS.md section 2: the claim of 1 000 due cases
  among 1 000 000 right after the previous batch advanced, 7.6 ms; 12-13 ms with 0010).

Deployment: as for 0010, stop every worker and scheduler of the previous version first.

Revision ID: 0011
Revises: 0010
Create Date: 2027-01-13
"""
import importlib.util
from pathlib import Path

from alembic import op
import sqlalchemy as sa


revision = '0011'
down_revision = '0010'
branch_labels = None
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

_PG_UP = [
    "ALTER TABLE case_due SET (fillfactor = 90)",
    "ALTER TABLE case_claim SET (autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 500, "
    "autovacuum_vacuum_cost_delay = 0)",
    """
    CREATE OR REPLACE FUNCTION relance_case_due_added() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        INSERT INTO case_due (case_id, due_at)
            SELECT id, due_at FROM added WHERE status = 'active' AND due_at IS NOT NULL
        ON CONFLICT (case_id) DO UPDATE SET due_at = EXCLUDED.due_at;
        RETURN NULL;
    END $$
    """,
    # The queue row first, then the claim: a claim moving this row at the same moment either waits
    # for this transaction (and then finds the row gone) or has committed before it (and then the
    # claim it inserted is visible to the second DELETE).
    """
    CREATE OR REPLACE FUNCTION relance_case_due_changed() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        DELETE FROM case_due WHERE case_id = NEW.id;
        DELETE FROM case_claim WHERE case_id = NEW.id;
        IF NEW.status = 'active' AND NEW.due_at IS NOT NULL THEN
            INSERT INTO case_due (case_id, due_at) VALUES (NEW.id, NEW.due_at);
        END IF;
        RETURN NULL;
    END $$
    """,
]

_SQLITE_TRIGGERS = ["DROP TRIGGER IF EXISTS cases_due_changed", "DROP TRIGGER IF EXISTS cases_due_added"]

_SQLITE_UP = [
    """
    CREATE TRIGGER cases_due_added AFTER INSERT ON cases
    WHEN NEW.status = 'active' AND NEW.due_at IS NOT NULL
    BEGIN
        INSERT INTO case_due (case_id, due_at) VALUES (NEW.id, NEW.due_at)
        ON CONFLICT (case_id) DO UPDATE SET due_at = excluded.due_at;
    END
    """,
    """
    CREATE TRIGGER cases_due_changed AFTER UPDATE OF due_at, status ON cases
    WHEN OLD.due_at IS NOT NEW.due_at OR OLD.status IS NOT NEW.status
    BEGIN
        DELETE FROM case_due WHERE case_id = NEW.id;
        DELETE FROM case_claim WHERE case_id = NEW.id;
        INSERT INTO case_due (case_id, due_at) SELECT NEW.id, NEW.due_at
            WHERE NEW.status = 'active' AND NEW.due_at IS NOT NULL;
    END
    """,
]


def _revision_0010():
    """The previous revision's module (its trigger statements, put back by the downgrade)."""
    path = next(Path(__file__).parent.glob("0010_*.py"))
    spec = importlib.util.spec_from_file_location("relance_migration_0010", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def upgrade() -> None:
    dialect = op.get_bind().dialect.name
    if dialect == "sqlite":  # before the table is rebuilt: SQLite checks the triggers that name it
        for statement in _SQLITE_TRIGGERS:
            op.execute(statement)
    op.create_table(
        'case_claim',
        sa.Column('case_id', _ID, autoincrement=False, nullable=False),
        sa.Column('due_at', sa.DateTime(), nullable=False),
        sa.Column('claimed_until', sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint('case_id'),  # no foreign key (see models.CaseClaim)
    )
    op.execute("INSERT INTO case_claim (case_id, due_at, claimed_until) "
               "SELECT case_id, due_at, claimed_until FROM case_due WHERE claimed_until IS NOT NULL")
    op.execute("DELETE FROM case_due WHERE claimed_until IS NOT NULL")
    with op.batch_alter_table('case_due') as batch:
        batch.drop_column('claimed_until')
    for statement in _PG_UP if dialect == "postgresql" else _SQLITE_UP if dialect == "sqlite" else []:
        op.execute(statement)


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    if dialect == "sqlite":
        for statement in _SQLITE_TRIGGERS:
            op.execute(statement)
    with op.batch_alter_table('case_due') as batch:
        batch.add_column(sa.Column('claimed_until', sa.DateTime(), nullable=True))
    op.execute("INSERT INTO case_due (case_id, due_at, claimed_until) "
               "SELECT case_id, due_at, claimed_until FROM case_claim WHERE true ON CONFLICT (case_id) DO NOTHING")
    op.drop_table('case_claim')
    previous = _revision_0010()
    if dialect == "postgresql":
        for statement in previous._PG_UP:  # its functions (the triggers that call them stayed)
            if "CREATE TRIGGER" not in statement:
                op.execute(statement)
    elif dialect == "sqlite":
        for statement in previous._SQLITE_UP:
            op.execute(statement)
