"""audit_log: append-only in the database (issue 11)

- UPDATE (and TRUNCATE on PostgreSQL) of ``audit_log`` is refused by a trigger,
  whoever the role;
- DELETE is refused except the retention purge of the audit log
  (:func:`worker.services.retention.purge_audit_log`): it may only remove the
  *beginning* of the chain, up to a ``checkpoint`` entry already appended that
  covers it (its ``data.through_id``), and on PostgreSQL only in a transaction
  that set ``relance.audit_purge = 'on'`` — by the owner role, since the
  application's role gets only INSERT and SELECT on the table (README, "The
  database roles"). On PostgreSQL the migration also revokes UPDATE, DELETE and
  TRUNCATE on ``audit_log`` from every role but its owner.

SQLite has no roles: its triggers stop the application and an accidental
statement, not someone holding the file (the keyed chain and the anchors detect
that). A later migration that rebuilds ``audit_log`` on SQLite (batch mode)
must create these triggers again.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-29
"""
from alembic import op


revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


_PG_UP = [
    """
    CREATE OR REPLACE FUNCTION relance_audit_log_refuse() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        RAISE EXCEPTION 'audit_log est en ajout seul : % refusé', TG_OP
            USING ERRCODE = 'insufficient_privilege';
    END $$
    """,
    """
    CREATE OR REPLACE FUNCTION relance_audit_log_before_delete() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        IF coalesce(current_setting('relance.audit_purge', true), '') <> 'on' THEN
            RAISE EXCEPTION 'audit_log est en ajout seul : suppression refusée (seule la purge du début de la chaîne, par le rôle propriétaire, est permise)'
                USING ERRCODE = 'insufficient_privilege';
        END IF;
        RETURN NULL;
    END $$
    """,
    """
    CREATE OR REPLACE FUNCTION relance_audit_log_after_delete() RETURNS trigger LANGUAGE plpgsql AS $$
    DECLARE
        last_gone bigint;
    BEGIN
        SELECT max(id) INTO last_gone FROM gone;
        IF last_gone IS NULL THEN
            RETURN NULL;
        END IF;
        IF EXISTS (SELECT 1 FROM audit_log WHERE id < last_gone) THEN
            RAISE EXCEPTION 'audit_log : seul le début de la chaîne peut être purgé'
                USING ERRCODE = 'insufficient_privilege';
        END IF;
        IF NOT EXISTS (SELECT 1 FROM audit_log WHERE kind = 'checkpoint'
                       AND (data ->> 'through_id')::bigint >= last_gone) THEN
            RAISE EXCEPTION 'audit_log : purge sans point de contrôle qui la couvre'
                USING ERRCODE = 'insufficient_privilege';
        END IF;
        RETURN NULL;
    END $$
    """,
    """
    CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR TRUNCATE ON audit_log
        FOR EACH STATEMENT EXECUTE PROCEDURE relance_audit_log_refuse()
    """,
    """
    CREATE TRIGGER audit_log_delete_guard BEFORE DELETE ON audit_log
        FOR EACH STATEMENT EXECUTE PROCEDURE relance_audit_log_before_delete()
    """,
    """
    CREATE TRIGGER audit_log_delete_prefix AFTER DELETE ON audit_log
        REFERENCING OLD TABLE AS gone
        FOR EACH STATEMENT EXECUTE PROCEDURE relance_audit_log_after_delete()
    """,
    # Only the owner may ever delete (the purge); nobody may update or truncate.
    """
    DO $$
    DECLARE
        r record;
    BEGIN
        FOR r IN SELECT DISTINCT grantee FROM information_schema.table_privileges
                 WHERE table_schema = current_schema() AND table_name = 'audit_log'
                   AND privilege_type IN ('UPDATE', 'DELETE', 'TRUNCATE')
                   AND grantee NOT IN ('PUBLIC', current_user)
        LOOP
            EXECUTE format('REVOKE UPDATE, DELETE, TRUNCATE ON audit_log FROM %I', r.grantee);
        END LOOP;
    END $$
    """,
    "REVOKE UPDATE, DELETE, TRUNCATE ON audit_log FROM PUBLIC",
]

_PG_DOWN = [
    "DROP TRIGGER IF EXISTS audit_log_delete_prefix ON audit_log",
    "DROP TRIGGER IF EXISTS audit_log_delete_guard ON audit_log",
    "DROP TRIGGER IF EXISTS audit_log_append_only ON audit_log",
    "DROP FUNCTION IF EXISTS relance_audit_log_after_delete()",
    "DROP FUNCTION IF EXISTS relance_audit_log_before_delete()",
    "DROP FUNCTION IF EXISTS relance_audit_log_refuse()",
]

_SQLITE_UP = [
    """
    CREATE TRIGGER audit_log_append_only BEFORE UPDATE ON audit_log
    BEGIN
        SELECT RAISE(ABORT, 'audit_log est en ajout seul : modification refusée');
    END
    """,
    # Rows are deleted one by one in id order: each must be the first of the chain, and a
    # checkpoint entry (appended before the purge) must cover it.
    """
    CREATE TRIGGER audit_log_delete_prefix BEFORE DELETE ON audit_log
    WHEN EXISTS (SELECT 1 FROM audit_log WHERE id < OLD.id)
      OR NOT EXISTS (SELECT 1 FROM audit_log WHERE kind = 'checkpoint'
                     AND CAST(json_extract(data, '$.through_id') AS INTEGER) >= OLD.id)
    BEGIN
        SELECT RAISE(ABORT, 'audit_log est en ajout seul : suppression refusée (seul le début de la chaîne, couvert par un point de contrôle, peut être purgé)');
    END
    """,
]

_SQLITE_DOWN = [
    "DROP TRIGGER IF EXISTS audit_log_delete_prefix",
    "DROP TRIGGER IF EXISTS audit_log_append_only",
]


def upgrade() -> None:
    dialect = op.get_bind().dialect.name
    for statement in _PG_UP if dialect == "postgresql" else _SQLITE_UP if dialect == "sqlite" else []:
        op.execute(statement)


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    for statement in _PG_DOWN if dialect == "postgresql" else _SQLITE_DOWN if dialect == "sqlite" else []:
        op.execute(statement)
