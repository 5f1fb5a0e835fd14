#!/bin/sh
# The application's least-privilege PostgreSQL role (docker-compose.yml mounts this folder
# as /docker-entrypoint-initdb.d: it runs once, when the postgres volume is created, as the
# owner POSTGRES_USER).
#
# - POSTGRES_USER (relance) owns the schema: `relance db upgrade` and `relance audit purge`
#   connect as it (RELANCE_DATABASE_OWNER_URL);
# - POSTGRES_APP_USER (relance_app) is what every other process connects as
#   (RELANCE_DATABASE_URL): read and write the tables the migrations create, but on
#   audit_log only INSERT and SELECT (migration 0005 revokes UPDATE, DELETE and TRUNCATE
#   there from every role but the owner, and its triggers refuse UPDATE and DELETE anyway).
#
# An existing database: run the same statements by hand as the owner (psql -v app_role=...
# -v app_password=... -f this file's SQL), then `relance db upgrade` (0005 revokes on audit_log).
set -eu
: "${POSTGRES_APP_USER:=relance_app}"
: "${POSTGRES_APP_PASSWORD:?POSTGRES_APP_PASSWORD must be set (the application role password)}"

psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
     -v app_role="$POSTGRES_APP_USER" -v app_password="$POSTGRES_APP_PASSWORD" -v db="$POSTGRES_DB" <<'SQL'
CREATE ROLE :"app_role" LOGIN PASSWORD :'app_password' NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION;
REVOKE ALL ON DATABASE :"db" FROM PUBLIC;
GRANT CONNECT, TEMPORARY ON DATABASE :"db" TO :"app_role";
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
GRANT USAGE ON SCHEMA public TO :"app_role";
-- Tables and sequences the owner creates from now on (every migration):
ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO :"app_role";
ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT USAGE, SELECT, UPDATE ON SEQUENCES TO :"app_role";
-- Tables that already exist (an existing database):
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO :"app_role";
GRANT USAGE, SELECT, UPDATE ON ALL SEQUENCES IN SCHEMA public TO :"app_role";
-- The audit log is append-only for the application (migration 0005 does it again after each upgrade).
SELECT format('REVOKE UPDATE, DELETE, TRUNCATE ON audit_log FROM %I', :'app_role')
 WHERE to_regclass('public.audit_log') IS NOT NULL \gexec
SQL
