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
    # Real channels are validated at start-up, not at the first send.
    try:
        if settings.sms_backend == "twilio":
            settings.twilio_settings()
        if settings.email_backend == "smtp":
            settings.smtp_settings()
    except ValueError as exc:
        raise ConfigError("environnement", _setting_name(str(exc)), str(exc)) from None
    return AppContext(settings=settings, config=config, calendar=cal)


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
        _APP = build_app()
    return _APP


def set_app(app: AppContext | None) -> None:
    global _APP
    _APP = app
