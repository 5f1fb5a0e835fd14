"""Settings, from the environment (prefix ``RELANCE_``) or a ``.env`` file.

Every setting has a default that runs the embedded configuration: SQLite under
``RELANCE_DATA_DIR``, Celery eager in-process, local outbox backends. The
README lists them all.
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def _default_dir(name: str) -> Path:
    return PROJECT_ROOT / name


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="RELANCE_", env_file=".env", extra="ignore")

    # --- where things are -------------------------------------------------
    data_dir: Path = Path("./var")
    database_url: str | None = None  # default: sqlite:///<data_dir>/relance.db
    config_dir: Path = Field(default_factory=lambda: _default_dir("config"))
    templates_dir: Path = Field(default_factory=lambda: _default_dir("templates"))
    inbox_dir: Path | None = None  # default: <data_dir>/inbox
    outbox_dir: Path | None = None  # default: <data_dir>/outbox (local backends, letters, print batches)

    # --- runtime -----------------------------------------------------------
    broker_url: str = "memory://"  # "memory://" = eager, in-process (embedded default)
    timezone: str = "Europe/Paris"
    nir_hash_key: str = "relance-dev-only-key-change-me"
    sweep_batch_size: int = 500
    relay_batch_size: int = 1000
    sending_timeout_minutes: int = 15  # messages stuck in "sending" longer are surfaced to ops
    retention_months: int = 24

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
    flower_user: str = "ops"
    flower_password: str | None = None

    # --- business calendar -------------------------------------------------
    sms_window_start: str = "09:00"
    sms_window_end: str = "19:00"

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

    # --- derived -------------------------------------------------------------
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
                              api_base_url=self.twilio_api_base_url)

    def smtp_settings(self):
        from worker.adapters.channels.smtp_email import SmtpSettings

        return SmtpSettings(host=self.smtp_host, port=self.smtp_port, security=self.smtp_security,
                            username=self.smtp_username, password=self.smtp_password,
                            from_address=self.smtp_from_address, from_name=self.smtp_from_name,
                            timeout=self.smtp_timeout, verify_tls=self.smtp_verify_tls)

    @property
    def db_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'relance.db').resolve()}"

    @property
    def inbox(self) -> Path:
        return self.inbox_dir or self.data_dir / "inbox"

    @property
    def outbox(self) -> Path:
        return self.outbox_dir or self.data_dir / "outbox"

    @property
    def eager(self) -> bool:
        return self.broker_url.startswith("memory://")

    @property
    def local_channels(self) -> bool:
        return self.sms_backend == "local" and self.email_backend == "local" and self.letter_backend == "local"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()


def reset_settings() -> None:
    get_settings.cache_clear()
