"""Builds the configured backend of each channel from the settings."""
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the settings are passed in; this module does not read them
    from worker.settings import Settings
from worker.adapters.channels.local import LocalEmailChannel, LocalLetterChannel, LocalSmsChannel


def build_channel(name: str, settings: Settings):
    outbox = settings.outbox
    if name == "sms":
        if settings.sms_backend == "twilio":
            from worker.adapters.channels.twilio_sms import TwilioSmsChannel

            return TwilioSmsChannel(settings.twilio_settings())
        return LocalSmsChannel(outbox)
    if name == "email":
        if settings.email_backend == "smtp":
            from worker.adapters.channels.smtp_email import SmtpEmailChannel

            return SmtpEmailChannel(settings.smtp_settings())
        return LocalEmailChannel(outbox)
    if name == "letter":
        # PDF letters are rendered and gathered by the print batch; the send
        # step only records the letter as ready for it (see worker.services.print_batches).
        return LocalLetterChannel(settings.letters)
    raise ValueError(f"canal inconnu : {name}")
