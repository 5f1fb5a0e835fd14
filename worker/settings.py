"""Settings, from the environment (prefix ``RELANCE_``) or a ``.env`` file.

Every setting has a default that runs the embedded configuration: SQLite under
``RELANCE_DATA_DIR``, Celery eager in-process, local outbox backends. The
README lists them all.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import hmac
from functools import lru_cache
from pathlib import Path

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

PROJECT_ROOT = Path(__file__).resolve().parent.parent

# Development keys: any process may use them on fictional data (tests), but
# check_secrets refuses them, and keys shorter than MIN_SECRET_BYTES, for real data.
DEV_NIR_HASH_KEY = "relance-dev-only-key-change-me"
DEV_AUDIT_KEY = "relance-dev-only-audit-key-change-me"
MIN_SECRET_BYTES = 32
MIN_WEBHOOK_SECRET = 16  # characters of an RDV-Solidarités webhook secret (RELANCE_RDV_SOLIDARITES_SECRETS)
GENERATE_SECRET = 'python -c "import secrets; print(secrets.token_hex(32))"'


def _default_dir(name: str) -> Path:
    return PROJECT_ROOT / name


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="RELANCE_", env_file=".env", extra="ignore")

    # --- where things are -------------------------------------------------
    data_dir: Path = Path("./var")
    database_url: str | None = None  # default: sqlite:///<data_dir>/relance.db
    # The owner role's URL, for `relance db upgrade` and `relance audit purge` only (the application's
    # role may only insert into and read the audit log); default: database_url.
    database_owner_url: str | None = None
    config_dir: Path = Field(default_factory=lambda: _default_dir("config"))
    templates_dir: Path = Field(default_factory=lambda: _default_dir("templates"))
    inbox_dir: Path | None = None  # default: <data_dir>/inbox
    outbox_dir: Path | None = None  # default: <data_dir>/outbox (local backends, letters, print batches)

    # --- runtime -----------------------------------------------------------
    broker_url: str = "memory://"  # "memory://" = eager, in-process (embedded default)
    timezone: str = "Europe/Paris"
    nir_hash_key: str = DEV_NIR_HASH_KEY  # refused for real data (check_secrets): >= 32 bytes, not this
    audit_key: str = DEV_AUDIT_KEY  # key of the audit chain's HMAC; same rule
    sweep_batch_size: int = 500
    relay_batch_size: int = 1000
    # Batches (issue 15): cases per `advance` task (the sweep's claim is cut into these), messages
    # per send task (the relay's), provider requests at once per worker process (Twilio, SMTP).
    advance_batch_size: int = 100
    send_batch_size: int = 32
    send_concurrency: int = 32
    # The providers' rate limits, across every worker (messages per second per sender; 0: none).
    sms_rate_limit: float = 0.0
    email_rate_limit: float = 0.0
    # Audit log: chains concurrent writers spread over (PostgreSQL; SQLite has one).
    audit_chains: int = 8
    sending_timeout_minutes: int = 15  # messages stuck in "sending" longer are surfaced to ops
    retention_months: int = 24
    inbox_done_days: int = 7  # ingested flux files (clear NIRs) kept this many days in inbox/done|failed
    # The relay publishes a pending message once; it publishes it again only when its queue
    # is empty in the broker (the task was lost or failed) and it was published more than
    # this many minutes ago. At most relay_max_per_pass messages per relay pass.
    relay_requeue_minutes: int = 5
    relay_max_per_pass: int = 5000
    # Celery: hard time limit of every task (seconds; the soft limit, which lets a task record
    # its outcome, is 80 % of it); ingestion and the bounce scan get ingest_time_limit.
    # The broker's visibility timeout must outlast the longest hard limit.
    task_time_limit: int = 300
    ingest_time_limit: int = 1800
    broker_visibility_timeout: int = 3600
    log_level: str = "INFO"  # DEBUG | INFO | WARNING | ERROR (scheduler, api, workers)

    # --- channels ------------------------------------------------------------
    sms_backend: str = "local"  # "local" | "twilio"
    email_backend: str = "local"  # "local" | "smtp"
    letter_backend: str = "local"  # "local" (HTML files) | "pdf" (WeasyPrint + print batches)

    # --- Twilio (RELANCE_SMS_BACKEND=twilio) ----------------------------------
    twilio_account_sid: str | None = None
    twilio_auth_token: str | None = None
    twilio_messaging_service_sid: str | None = None  # either this...
    twilio_sender_id: str | None = None  # ...or an alphanumeric sender ID (1-11 letters/digits)
    twilio_validity_period: int = 36000  # seconds (Twilio's maximum)
    twilio_api_base_url: str | None = None  # only to point the client at a fake server (tests, dev)
    public_base_url: str | None = None  # public URL of `relance api` (Twilio status callbacks)

    # --- SMTP (RELANCE_EMAIL_BACKEND=smtp; also the agents' digests) ------------
    smtp_host: str = "127.0.0.1"
    smtp_port: int = 25
    smtp_security: str = "none"  # none | starttls | ssl
    smtp_username: str | None = None
    smtp_password: str | None = None
    smtp_from_address: str = "relance@example.org"
    smtp_from_name: str | None = None
    smtp_timeout: float = 30.0
    smtp_verify_tls: bool = True
    # Maildir where the mail server delivers the bounces sent to smtp_from_address
    # (delivery status notifications); scanned with the inbox. Unset: no scan.
    bounce_maildir: Path | None = None
    # Key of the token each e-mail carries, without which a bounce is not applied
    # (HMAC of the message's reference). Default: derived from nir_hash_key.
    bounce_key: str | None = None
    smtp_verp: bool = False  # the token in the envelope sender too (relance+<ref>.<token>@…)

    # --- letters and print batches ----------------------------------------------
    letters_dir: Path | None = None  # default: <outbox>/letters (shared between machines)
    print_batch_dir: Path | None = None  # default: <outbox>/print (shared between machines)
    print_batch_time: str = "16:00"  # local time of the daily print batch (working days)

    # --- agents' daily digests -------------------------------------------------------
    digests_dir: Path | None = None  # default: <outbox>/digests
    digest_time: str = "08:00"  # local time from which the day's digests go (working days)

    # --- HTTP API and Flower ---------------------------------------------------------
    api_host: str = "127.0.0.1"
    api_port: int = 8080
    api_keys: str = ""  # comma-separated keys accepted in the X-Api-Key header for POST /events
    api_max_body_bytes: int = 65536  # larger request bodies get 413 before being read whole
    api_auth_failures_per_minute: int = 10  # failed authentications per client address, then 429
    # RDV-Solidarités' webhooks (POST /webhooks/rdv-solidarites/{ORG}, issue 16): the secret shared with it,
    # per organisation, as comma-separated ORG=secret pairs (an organisation twice while its secret changes).
    rdv_solidarites_secrets: str = ""
    rdv_solidarites_max_body_bytes: int = 524288  # a collective appointment lists every participant
    flower_user: str = "ops"
    flower_password: str | None = None

    # --- the agents' workspace (/espace: worker/entrypoints/web) -----------------------
    # Key of the session cookie's signature and of the e-mail sign-in links' hashes; default:
    # derived from nir_hash_key (changing it signs every agent out).
    web_secret_key: str | None = None
    web_idle_minutes: int = 30  # a session unused this long is over (sign in again)
    web_session_hours: int = 10  # a session lasts at most this long, however active
    web_login_link_minutes: int = 15  # an e-mail sign-in link expires after this (and is single use)
    web_cookie_secure: bool = True  # the session cookie only over HTTPS (false: local development only)
    # OpenID Connect (ProConnect): the issuer (its /.well-known/openid-configuration is read), the
    # client registered for this service, the scopes asked. Unset issuer: sign-in by e-mail link only.
    oidc_issuer: str | None = None
    oidc_client_id: str | None = None
    oidc_client_secret: str | None = None
    oidc_scopes: str = "openid email given_name usual_name"

    # --- the evaluation's export (`relance export evaluation`, issue 13) ----------------------
    # Key of the pseudonyms of the export (HMAC-SHA256 of each person's internal id): required by that
    # command only; >= 32 bytes, not the NIR key nor the audit key (evaluation_key_problem).
    evaluation_key: str | None = None

    # --- business calendar -------------------------------------------------
    sms_window_start: str = "09:00"
    sms_window_end: str = "19:00"

    # --- the stock campaign (issue 14: relance ingest --stock, relance campaign; config/campaign.yaml) ---
    campaign_start: dt.date = dt.date(2023, 6, 1)  # no campaign invitation before this day
    # the share of the stock to have seen by each date: PERCENT%:YYYY-MM-DD, comma-separated
    campaign_targets: str = "20%:2023-07-15,80%:2023-12-31"
    # share of the people invited expected to book an appointment (the others are convoked by their path)
    campaign_response_rate: float = 0.5
    # local time from which each working day's campaign invitations go: after the morning's flux files
    # (the flux comes first), before the print batch (RELANCE_PRINT_BATCH_TIME) so their letters leave that day
    campaign_time: str = "14:00"

    @field_validator("sms_backend")
    @classmethod
    def _sms_backend(cls, v: str) -> str:
        if v not in ("local", "twilio"):
            raise ValueError("doit valoir 'local' ou 'twilio'")
        return v

    @field_validator("email_backend")
    @classmethod
    def _email_backend(cls, v: str) -> str:
        if v not in ("local", "smtp"):
            raise ValueError("doit valoir 'local' ou 'smtp'")
        return v

    @field_validator("letter_backend")
    @classmethod
    def _letter_backend(cls, v: str) -> str:
        if v not in ("local", "pdf"):
            raise ValueError("doit valoir 'local' ou 'pdf'")
        return v

    # --- every other setting, checked at start-up (one French line naming the variable) ----
    @field_validator("database_url", "database_owner_url")
    @classmethod
    def _database_url(cls, v: str | None) -> str | None:
        if v is None or not v.strip():
            return None
        from sqlalchemy.engine import make_url

        try:
            url = make_url(v.strip())
        except Exception:  # noqa: BLE001 - sqlalchemy's ArgumentError and the like
            raise ValueError("URL de base de données illisible (ex. postgresql+psycopg://relance:<mot de passe>@hôte:5432/relance)") from None
        if url.drivername in ("postgresql", "postgres"):
            raise ValueError("pilote PostgreSQL non précisé : écrivez postgresql+psycopg://…")
        if url.drivername not in ("sqlite", "sqlite+pysqlite", "postgresql+psycopg"):
            raise ValueError(f"base non prise en charge {url.drivername!r} (sqlite:/// ou postgresql+psycopg://)")
        if url.drivername.startswith("postgresql") and not url.host:
            raise ValueError("hôte PostgreSQL manquant (postgresql+psycopg://utilisateur:motdepasse@hôte:5432/base)")
        return v.strip()

    @field_validator("broker_url")
    @classmethod
    def _broker_url(cls, v: str) -> str:
        if not v.startswith(("memory://", "redis://", "rediss://")):
            raise ValueError("doit commencer par memory:// (mode embarqué), redis:// ou rediss://")
        return v

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, v: str) -> str:
        from zoneinfo import ZoneInfo

        try:
            ZoneInfo(v)
        except Exception:  # noqa: BLE001 - ZoneInfoNotFoundError, ValueError on odd names
            raise ValueError("fuseau horaire inconnu (ex. Europe/Paris, America/Cayenne, Indian/Reunion)") from None
        return v

    @field_validator("sms_window_start", "sms_window_end", "print_batch_time", "digest_time", "campaign_time")
    @classmethod
    def _hhmm(cls, v: str) -> str:
        import re

        m = re.fullmatch(r"([01]?\d|2[0-3]):([0-5]\d)", v.strip())
        if not m:
            raise ValueError("heure HH:MM attendue (ex. 09:00)")
        return f"{int(m.group(1)):02d}:{m.group(2)}"

    @field_validator("campaign_targets")
    @classmethod
    def _campaign_targets(cls, v: str) -> str:
        from worker.domain.campaign import parse_targets

        parse_targets(v)  # ValueError in French
        return v.strip()

    @field_validator("campaign_response_rate")
    @classmethod
    def _response_rate(cls, v: float) -> float:
        if not 0 < v <= 1:
            raise ValueError("une part entre 0 et 1 (ex. 0.5 pour la moitié des personnes invitées)")
        return v

    @field_validator("smtp_security")
    @classmethod
    def _smtp_security(cls, v: str) -> str:
        if v not in ("none", "starttls", "ssl"):
            raise ValueError("doit valoir 'none', 'starttls' ou 'ssl'")
        return v

    @field_validator("log_level")
    @classmethod
    def _log_level(cls, v: str) -> str:
        if v.strip().upper() not in ("DEBUG", "INFO", "WARNING", "ERROR"):
            raise ValueError("doit valoir DEBUG, INFO, WARNING ou ERROR")
        return v.strip().upper()

    @field_validator("smtp_port", "api_port")
    @classmethod
    def _port(cls, v: int) -> int:
        if not 1 <= v <= 65535:
            raise ValueError("port entre 1 et 65535 attendu")
        return v

    @field_validator("sweep_batch_size", "relay_batch_size", "sending_timeout_minutes", "retention_months",
                     "relay_requeue_minutes", "relay_max_per_pass", "task_time_limit", "ingest_time_limit",
                     "broker_visibility_timeout", "api_max_body_bytes", "api_auth_failures_per_minute",
                     "rdv_solidarites_max_body_bytes")
    @classmethod
    def _positive(cls, v: int) -> int:
        if v < 1:
            raise ValueError("doit être un entier strictement positif")
        return v

    @field_validator("advance_batch_size", "send_batch_size", "send_concurrency")
    @classmethod
    def _batch(cls, v: int) -> int:
        if not 1 <= v <= 1000:
            raise ValueError("doit être un entier entre 1 et 1000")
        return v

    @field_validator("sms_rate_limit", "email_rate_limit")
    @classmethod
    def _rate(cls, v: float) -> float:
        if not 0 <= v <= 10000:
            raise ValueError("messages par seconde entre 0 (sans limite) et 10000 attendu")
        return v

    @field_validator("audit_chains")
    @classmethod
    def _audit_chains(cls, v: int) -> int:
        if not 1 <= v <= 64:
            raise ValueError("doit être un entier entre 1 et 64")
        return v

    @field_validator("rdv_solidarites_secrets")
    @classmethod
    def _rdvs_secrets(cls, v: str) -> str:
        # Never quote a secret in the message: the organisation's code at most.
        for i, pair in enumerate(p.strip() for p in v.split(",")):
            if not pair:
                continue
            org, sep, secret = pair.partition("=")
            if not sep or not org.strip():
                raise ValueError(f"paire n° {i + 1} : ORG=secret attendu (ex. CDAS-REDON=…)")
            if len(secret.strip()) < MIN_WEBHOOK_SECRET:
                raise ValueError(f"{org.strip()[:64]} : secret trop court ({MIN_WEBHOOK_SECRET} caractères au moins)")
        return v

    @field_validator("inbox_done_days")
    @classmethod
    def _inbox_done_days(cls, v: int) -> int:
        if not 0 <= v <= 3650:
            raise ValueError("nombre de jours entre 0 et 3650 attendu")
        return v

    @field_validator("smtp_timeout")
    @classmethod
    def _smtp_timeout(cls, v: float) -> float:
        if not 0 < v <= 600:
            raise ValueError("nombre de secondes entre 0 et 600 attendu")
        return v

    @field_validator("twilio_validity_period")
    @classmethod
    def _validity(cls, v: int) -> int:
        if not 1 <= v <= 36000:
            raise ValueError("nombre de secondes entre 1 et 36000 attendu")
        return v

    @field_validator("public_base_url", "twilio_api_base_url")
    @classmethod
    def _http_url(cls, v: str | None) -> str | None:
        if v is None or not v.strip():
            return None
        if not v.strip().startswith(("https://", "http://")):
            raise ValueError("URL http(s):// attendue")
        return v.strip()

    @field_validator("web_idle_minutes", "web_session_hours", "web_login_link_minutes")
    @classmethod
    def _web_durations(cls, v: int) -> int:
        if not 1 <= v <= 10080:
            raise ValueError("doit être un entier entre 1 et 10080")
        return v

    @field_validator("oidc_issuer")
    @classmethod
    def _oidc_issuer(cls, v: str | None) -> str | None:
        if v is None or not v.strip():
            return None
        if not v.strip().startswith(("https://", "http://")):
            raise ValueError("URL http(s):// attendue (l'émetteur OpenID Connect, ex. celui de ProConnect)")
        return v.strip().rstrip("/")

    @model_validator(mode="after")
    def _consistent(self) -> "Settings":
        if self.sms_window_start >= self.sms_window_end:
            raise ValueError("RELANCE_SMS_WINDOW_START doit précéder RELANCE_SMS_WINDOW_END")
        if self.campaign_target_list[0][1] <= self.campaign_start:
            raise ValueError("RELANCE_CAMPAIGN_TARGETS : la première cible doit suivre RELANCE_CAMPAIGN_START")
        if self.broker_visibility_timeout <= max(self.task_time_limit, self.ingest_time_limit):
            raise ValueError("RELANCE_BROKER_VISIBILITY_TIMEOUT doit dépasser RELANCE_TASK_TIME_LIMIT et "
                             "RELANCE_INGEST_TIME_LIMIT (sinon une tâche encore en cours serait redistribuée)")
        return self

    # --- derived -------------------------------------------------------------
    @property
    def campaign_target_list(self):
        """((share, date), ...) of RELANCE_CAMPAIGN_TARGETS, in date order (shares as fractions)."""
        from worker.domain.campaign import parse_targets

        return parse_targets(self.campaign_targets)

    @property
    def letters(self) -> Path:
        return self.letters_dir or self.outbox / "letters"

    @property
    def print_dir(self) -> Path:
        return self.print_batch_dir or self.outbox / "print"

    @property
    def digests(self) -> Path:
        return self.digests_dir or self.outbox / "digests"

    @property
    def api_key_list(self) -> list[str]:
        return [k.strip() for k in self.api_keys.split(",") if k.strip()]

    def rdv_solidarites_secret_list(self, organisation: str) -> list[str]:
        """The webhook secrets of one organisation (RELANCE_RDV_SOLIDARITES_SECRETS); [] when none."""
        out = []
        for pair in self.rdv_solidarites_secrets.split(","):
            org, sep, secret = pair.strip().partition("=")
            if sep and org.strip() == organisation and secret.strip():
                out.append(secret.strip())
        return out

    def twilio_settings(self):
        """The Twilio channel's settings; ValueError naming the missing/invalid setting."""
        from worker.adapters.channels.twilio_sms import TwilioSettings

        missing = [name for name in ("twilio_account_sid", "twilio_auth_token", "public_base_url")
                   if not getattr(self, name)]
        if missing:
            raise ValueError("RELANCE_" + missing[0].upper() + " est obligatoire avec RELANCE_SMS_BACKEND=twilio")
        return TwilioSettings(account_sid=self.twilio_account_sid, auth_token=self.twilio_auth_token,
                              status_callback_base_url=self.public_base_url,
                              messaging_service_sid=self.twilio_messaging_service_sid,
                              sender_id=self.twilio_sender_id, validity_period=self.twilio_validity_period,
                              api_base_url=self.twilio_api_base_url, pool_size=self.send_concurrency)

    def smtp_settings(self):
        from worker.adapters.channels.smtp_email import SmtpSettings

        return SmtpSettings(host=self.smtp_host, port=self.smtp_port, security=self.smtp_security,
                            username=self.smtp_username, password=self.smtp_password,
                            from_address=self.smtp_from_address, from_name=self.smtp_from_name,
                            timeout=self.smtp_timeout, verify_tls=self.smtp_verify_tls,
                            bounce_key=self.bounce_token_key, verp=self.smtp_verp, pool_size=self.send_concurrency)

    @property
    def web_key(self) -> bytes:
        """The workspace's key (session cookie, sign-in links): RELANCE_WEB_SECRET_KEY, else derived."""
        if self.web_secret_key:
            return self.web_secret_key.encode()
        return hmac.new(self.nir_hash_key.encode(), b"relance-web-key", hashlib.sha256).digest()

    @property
    def oidc_enabled(self) -> bool:
        return bool(self.oidc_issuer and self.oidc_client_id)

    @property
    def bounce_token_key(self) -> bytes:
        """The HMAC key of the bounce tokens: RELANCE_BOUNCE_KEY, else derived from the NIR key."""
        if self.bounce_key:
            return self.bounce_key.encode()
        return hmac.new(self.nir_hash_key.encode(), b"relance-bounce-token-key", hashlib.sha256).digest()

    @property
    def db_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'relance.db').resolve()}"

    @property
    def owner_db_url(self) -> str:
        return self.database_owner_url or self.db_url

    @property
    def inbox(self) -> Path:
        return self.inbox_dir or self.data_dir / "inbox"

    @property
    def outbox(self) -> Path:
        return self.outbox_dir or self.data_dir / "outbox"

    def weak_secrets(self) -> list[tuple[str, str]]:
        """``(variable, French reason)`` for each key unfit for real data: the development
        default, shorter than MIN_SECRET_BYTES, or the same key for two uses."""
        problems = []
        for name, value, default in (("RELANCE_NIR_HASH_KEY", self.nir_hash_key, DEV_NIR_HASH_KEY),
                                     ("RELANCE_AUDIT_KEY", self.audit_key, DEV_AUDIT_KEY)):
            if value == default:
                why = "c'est la clé de développement, connue de tous"
            elif len(value.encode()) < MIN_SECRET_BYTES:
                why = f"clé trop courte ({len(value.encode())} octets, {MIN_SECRET_BYTES} au moins)"
            else:
                continue
            problems.append((name, f"{why} : refusée pour des données réelles ; générez-en une avec "
                                   f"{GENERATE_SECRET} et gardez-la secrète, hors de la base"))
        if not problems and self.nir_hash_key == self.audit_key:
            problems.append(("RELANCE_AUDIT_KEY", "doit différer de RELANCE_NIR_HASH_KEY ; générez-en une avec "
                                                  f"{GENERATE_SECRET}"))
        return problems

    def evaluation_key_problem(self) -> str | None:
        """Why RELANCE_EVALUATION_KEY cannot pseudonymise an export (French), or None."""
        key = self.evaluation_key or ""
        if not key:
            why = "est obligatoire pour l'export d'évaluation (clé des pseudonymes)"
        elif len(key.encode()) < MIN_SECRET_BYTES:
            why = f"clé trop courte ({len(key.encode())} octets, {MIN_SECRET_BYTES} au moins)"
        elif key in (self.nir_hash_key, self.audit_key):
            why = "doit différer de RELANCE_NIR_HASH_KEY et de RELANCE_AUDIT_KEY"
        else:
            return None
        return f"RELANCE_EVALUATION_KEY {why} ; générez-en une avec {GENERATE_SECRET} et gardez-la secrète"

    @property
    def eager(self) -> bool:
        return self.broker_url.startswith("memory://")

    @property
    def local_channels(self) -> bool:
        return self.sms_backend == "local" and self.email_backend == "local" and self.letter_backend == "local"

    @property
    def simulated_time_allowed(self) -> bool:
        """May a task carry a simulated ``now``? Only when nothing dated then can reach a real
        provider: local channels, or SMS to a fake Twilio (``RELANCE_TWILIO_API_BASE_URL``, tests)."""
        sms_ok = self.sms_backend == "local" or bool(self.twilio_api_base_url)
        return sms_ok and self.email_backend == "local" and self.letter_backend == "local"

    @property
    def task_soft_time_limit(self) -> int:
        return max(1, int(self.task_time_limit * 0.8))

    @property
    def ingest_soft_time_limit(self) -> int:
        return max(1, int(self.ingest_time_limit * 0.9))


class SettingsError(ValueError):
    """A bad RELANCE_* value: one French line naming the variable (never a secret's value)."""


_SECRET = ("password", "token", "key", "sid", "secret")
_PYDANTIC_FR = {
    "int_parsing": "nombre entier attendu", "int_type": "nombre entier attendu",
    "int_from_float": "nombre entier attendu", "float_parsing": "nombre attendu", "float_type": "nombre attendu",
    "bool_parsing": "true ou false attendu", "bool_type": "true ou false attendu",
    "path_type": "chemin attendu", "string_type": "texte attendu", "missing": "obligatoire",
    "date_from_datetime_parsing": "date AAAA-MM-JJ attendue", "date_parsing": "date AAAA-MM-JJ attendue",
    "date_from_datetime_inexact": "date AAAA-MM-JJ attendue", "date_type": "date AAAA-MM-JJ attendue",
}


def _french(error: dict) -> tuple[str, str]:
    """(variable, reason) for one pydantic error of :class:`Settings`."""
    import re

    loc = [str(p) for p in error.get("loc", ())]
    kind = error.get("type", "")
    ctx = error.get("ctx") or {}
    if kind == "value_error" and ctx.get("error") is not None:
        reason = str(ctx["error"])
    else:
        reason = _PYDANTIC_FR.get(kind, "valeur invalide")
    named = re.match(r"(RELANCE_[A-Z0-9_]+)\b", reason)
    if named and not loc:
        return named.group(1), reason[named.end():].lstrip(" :")
    name = f"RELANCE_{loc[0].upper()}" if loc else "RELANCE_*"
    value = error.get("input")
    if loc and not any(word in loc[0] for word in _SECRET) and isinstance(value, (str, int, float)):
        shown = redact_url(str(value)) if loc[0].endswith("_url") else str(value)
        reason += f" (reçu {shown[:80]!r})"
    return name, reason


def load_settings(**overrides) -> Settings:
    """Settings from the environment, or :class:`SettingsError` naming the first bad variable."""
    from pydantic import ValidationError

    try:
        return Settings(**overrides)
    except ValidationError as exc:
        name, reason = _french(exc.errors()[0])
        raise SettingsError(f"{name} : {reason}") from None


def redact_url(url: str | None) -> str:
    """A URL fit for a log line: its password (if any) replaced by ``***``."""
    if not url:
        return ""
    from urllib.parse import urlsplit, urlunsplit

    try:
        parts = urlsplit(url)
    except ValueError:
        return "<URL illisible>"
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return load_settings()


def reset_settings() -> None:
    get_settings.cache_clear()
