"""The process-wide context: settings, config, calendar, renderer, channels.

Loaded once per process (CLI, Celery worker, scheduler, API). A bad config
file fails here, at start-up, with :class:`worker.domain.policy.ConfigError`.
"""
from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass, field
from functools import cached_property

from worker.domain.calendar import BusinessCalendar, parse_hhmm
from worker.adapters.config_files import load_config
from worker.domain.policy import Config, ConfigError
from worker.settings import Settings, get_settings


@dataclass
class AppContext:
    settings: Settings
    config: Config
    calendar: BusinessCalendar
    _channels: dict = field(default_factory=dict)

    @property
    def db_url(self) -> str:
        return self.settings.db_url

    @property
    def policy(self):
        return self.config.policy

    @property
    def territory(self):
        return self.config.territory

    @cached_property
    def renderer(self):
        from worker.adapters.rendering import TemplateRenderer

        return TemplateRenderer(self.settings.templates_dir)

    def channel(self, name: str):
        if name not in self._channels:
            from worker.adapters.channels.registry import build_channel

            self._channels[name] = build_channel(name, self.settings)
        return self._channels[name]

    def rate_limiter(self, name: str):
        """The channel's provider rate limit (RELANCE_SMS_RATE_LIMIT, RELANCE_EMAIL_RATE_LIMIT), shared by
        every worker through the broker's Redis; None without one."""
        key = f"limiter:{name}"
        if key not in self._channels:
            from worker.adapters.rate_limit import build_rate_limiter

            s = self.settings
            rate = {"sms": s.sms_rate_limit, "email": s.email_rate_limit}.get(name, 0.0)
            sender = {"sms": s.twilio_messaging_service_sid or s.twilio_sender_id or s.sms_backend,
                      "email": f"{s.smtp_host}:{s.smtp_port}:{s.smtp_from_address}"}.get(name, name)
            self._channels[key] = build_rate_limiter(rate, s.broker_url, f"relance:rate:{name}:{sender}")
        return self._channels[key]

    def nir_hash(self, nir: str | None) -> str | None:
        if not nir:
            return None
        key = self.settings.nir_hash_key.encode()
        return hmac.new(key, nir.strip().upper().encode(), hashlib.sha256).hexdigest()


def build_app(settings: Settings | None = None) -> AppContext:
    settings = settings or get_settings()
    config = load_config(settings.config_dir)
    try:
        cal = BusinessCalendar(
            tz_name=settings.timezone,
            window_start=parse_hhmm(settings.sms_window_start),
            window_end=parse_hhmm(settings.sms_window_end),
        )
    except ValueError as exc:
        raise ConfigError("environnement", "RELANCE_SMS_WINDOW_START/END", str(exc)) from None
    try:
        parse_hhmm(settings.digest_time)
    except ValueError as exc:
        raise ConfigError("environnement", "RELANCE_DIGEST_TIME", str(exc)) from None
    # Real channels are validated at start-up, not at the first send. The Twilio token is a
    # secret given only to the processes that send SMS or check callbacks (compose: secrets
    # per service): the others validate the rest of the Twilio settings without it, and a
    # worker consuming the `sms` queue checks it at start (require_channel_secrets).
    try:
        if settings.sms_backend == "twilio":
            (settings if settings.twilio_auth_token else
             settings.model_copy(update={"twilio_auth_token": "<absent>"})).twilio_settings()
        if settings.email_backend == "smtp":
            settings.smtp_settings()
    except ValueError as exc:
        raise ConfigError("environnement", _setting_name(str(exc)), str(exc)) from None
    from worker.adapters.store import audit

    for url in {settings.db_url, settings.owner_db_url}:  # the audit chain of this database is keyed
        audit.register_key(url, settings.audit_key)
        audit.register_chains(url, settings.audit_chains)
    return AppContext(settings=settings, config=config, calendar=cal)


def check_secrets(settings: Settings) -> None:
    """Refuse the development keys, or short ones, before touching real data (ConfigError naming the
    variable and saying how to generate a key). The demo and the tests build their context with
    :func:`build_app` and keys of their own."""
    problems = settings.weak_secrets()
    if problems:
        name, problem = problems[0]
        raise ConfigError("environnement", name, problem)


# Files written from now on (SQLite database, letters, outbox logs, reports, digests, batches: all
# personal data) are neither world-readable nor group-writable.
PROCESS_UMASK = 0o027


def restrict_umask() -> None:
    import os

    os.umask(os.umask(PROCESS_UMASK) | PROCESS_UMASK)


def _setting_name(message: str) -> str:
    import re

    m = re.search(r"RELANCE_[A-Z_]+", message)
    if m:
        return m.group(0)
    for word in ("sender_id", "messaging_service_sid", "validity_period", "status_callback_base_url",
                 "api_base_url", "security", "port", "from_address"):
        if word in message:
            prefix = "SMTP" if word in ("security", "port", "from_address") else "TWILIO"
            return f"RELANCE_{prefix}_{word.upper()}".replace("TWILIO_STATUS_CALLBACK_BASE_URL", "PUBLIC_BASE_URL")
    return "RELANCE_*"


_APP: AppContext | None = None


def get_app() -> AppContext:
    global _APP
    if _APP is None:
        settings = get_settings()
        check_secrets(settings)  # every process on real data comes here: CLI, workers, scheduler, API
        restrict_umask()
        _APP = build_app(settings)
    return _APP


def set_app(app: AppContext | None) -> None:
    global _APP
    _APP = app


# --- start-up: schema, logging, the start-up line ------------------------------------------------


class SchemaError(RuntimeError):
    """The database is unreachable or its schema is not the one this code expects (French, one line)."""


def _redacted_db(url: str) -> str:
    from worker.settings import redact_url

    return redact_url(url)


def schema_revisions(url: str) -> tuple[str | None, str]:
    """(the database's Alembic revision or None, the code's head revision)."""
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory
    from sqlalchemy import create_engine
    from sqlalchemy.pool import NullPool

    from worker.adapters.store.session import alembic_config

    head = ScriptDirectory.from_config(alembic_config(url)).get_current_head()
    # A throwaway connection: a pooled one opened here would be inherited by the Celery
    # pool's forked children and shared between processes.
    engine = create_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            current = MigrationContext.configure(conn).get_current_revision()
    finally:
        engine.dispose()
    return current, head


def require_schema(ctx: AppContext) -> None:
    """Ordinary commands and services never create or migrate the schema: they say what to run."""
    url = ctx.db_url
    if url.startswith("sqlite"):
        from pathlib import Path

        path = url.split("///", 1)[-1]
        if path and path != ":memory:" and not Path(path).exists():
            raise SchemaError(f"base absente ({path}) : lancez d'abord « relance db upgrade »")
    try:
        current, head = schema_revisions(url)
    except SchemaError:
        raise
    except Exception as exc:  # noqa: BLE001 - driver errors may quote the URL: the type only
        raise SchemaError(f"base de données injoignable ({_redacted_db(url)}) : {type(exc).__name__}") from None
    if current == head:
        return
    if current is None:
        raise SchemaError("la base n'a pas de schéma : lancez d'abord « relance db upgrade »")
    from alembic.script import ScriptDirectory

    from worker.adapters.store.session import alembic_config

    known = {rev.revision for rev in ScriptDirectory.from_config(alembic_config(url)).walk_revisions()}
    if current not in known:
        raise SchemaError(f"le schéma de la base (révision {current}) est plus récent que ce programme : "
                          "mettez Relance à jour")
    raise SchemaError(f"le schéma de la base n'est pas à jour (révision {current}, attendue {head}) : "
                      "lancez « relance db upgrade »")


def upgrade_schema(ctx: AppContext, wait_seconds: float = 0.0, *, sleep=None, clock=None) -> None:
    """``relance db upgrade``: wait up to ``wait_seconds`` for the database to answer, then migrate
    (as the owner role: ``RELANCE_DATABASE_OWNER_URL``, default ``RELANCE_DATABASE_URL``)."""
    import time

    from worker.adapters.store.session import ping_database, upgrade

    sleep = sleep or time.sleep
    clock = clock or time.monotonic
    deadline = clock() + max(0.0, wait_seconds)
    while True:
        try:
            ping_database(ctx.settings.owner_db_url)
            break
        except Exception as exc:  # noqa: BLE001 - not up yet (compose: PostgreSQL still starting)
            if clock() >= deadline:
                waited = f" après {wait_seconds:g} s d'attente" if wait_seconds else ""
                raise SchemaError(f"base de données injoignable{waited} ({_redacted_db(ctx.settings.owner_db_url)}) : "
                                  f"{type(exc).__name__}") from None
            sleep(min(2.0, max(0.1, deadline - clock())))
    upgrade(ctx.settings.owner_db_url)


LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"
LOG_DATEFMT = "%Y-%m-%dT%H:%M:%S%z"  # local time with its offset: 2024-06-03T10:00:00+0200


def configure_logging(settings: Settings) -> None:
    """The long-running services' logs (scheduler, api): RELANCE_LOG_LEVEL, times with their zone."""
    import logging

    root = logging.getLogger()
    if not root.handlers:
        logging.basicConfig(format=LOG_FORMAT, datefmt=LOG_DATEFMT)
    for handler in root.handlers:
        handler.setFormatter(logging.Formatter(LOG_FORMAT, LOG_DATEFMT))
    root.setLevel(settings.log_level)
    logging.getLogger("relance").setLevel(settings.log_level)


def version() -> str:
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as dist_version

    try:
        return dist_version("relance")
    except PackageNotFoundError:
        return "dev"


def startup_line(settings: Settings, role: str, queues: str) -> str:
    """What a service says when it starts: version, database and broker (no password), queues, zone."""
    import datetime as dt
    from zoneinfo import ZoneInfo

    offset = dt.datetime.now(ZoneInfo(settings.timezone)).strftime("%z")
    broker = "memory:// (tâches exécutées dans le processus)" if settings.eager else _redacted_db(settings.broker_url)
    return (f"relance {version()} {role} started: database {_redacted_db(settings.db_url)}, broker {broker}, "
            f"queues {queues}, time zone {settings.timezone} (UTC{offset}), log level {settings.log_level}")


def require_channel_secrets(ctx: AppContext, queues: str) -> None:
    """A worker that sends SMS through Twilio needs its token: ConfigError naming it, at start."""
    names = {q.strip() for q in queues.split(",")}
    if "sms" in names and ctx.settings.sms_backend == "twilio" and not ctx.settings.twilio_auth_token:
        raise ConfigError("environnement", "RELANCE_TWILIO_AUTH_TOKEN",
                          "obligatoire pour un worker de la file sms avec RELANCE_SMS_BACKEND=twilio")
