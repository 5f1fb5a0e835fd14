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
