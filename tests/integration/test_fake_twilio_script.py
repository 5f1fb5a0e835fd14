"""scripts/fake_twilio.py: the fake Twilio for local development, driven by
the real Twilio channel (the official client) exactly as `relance` would."""
from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

from worker.adapters.channels.base import OutgoingMessage, RecipientError
from worker.adapters.channels.twilio_sms import TwilioSmsChannel
from worker.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
BLOCKED = "+33612345678"
OTHER = "+33698765432"


def _message(to: str, message_id: int) -> OutgoingMessage:
    return OutgoingMessage(message_id=message_id, reference=f"RL-000001-{message_id:07d}", channel="sms",
                           step="invitation_1", organisation="CDAS-REDON", case_reference="RL-000001", to=to,
                           subject=None, text="RSA : prenez rendez-vous sur https://rdv.example.org")


def test_the_script_prints_the_settings_and_answers_like_twilio(tmp_path):
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "scripts" / "fake_twilio.py"), "--port", "0",
         "--api-url", "http://127.0.0.1:9", "--rule", f"{BLOCKED}=invalid_number"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        assert proc.stdout.readline().startswith("Fake Twilio prêt")
        exported = {}
        for _ in range(6):
            name, _, value = proc.stdout.readline().strip().removeprefix("export ").partition("=")
            exported[name] = value
        assert exported["RELANCE_SMS_BACKEND"] == "twilio"
        assert exported["RELANCE_TWILIO_API_BASE_URL"].startswith("http://127.0.0.1:")
        settings = Settings(**{name.removeprefix("RELANCE_").lower(): value for name, value in exported.items()})
        channel = TwilioSmsChannel(settings.twilio_settings())

        delivery = channel.send(_message(OTHER, 1))
        assert delivery.status == "sent" and delivery.provider_ref.startswith("SM")
        line = proc.stdout.readline().strip()
        assert line == f"accepté {delivery.provider_ref} : 1 segment(s), suite : deliver"
        assert OTHER not in line
        with pytest.raises(RecipientError) as refused:
            channel.send(_message(BLOCKED, 2))
        assert str(refused.value.code) == "21211"
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    assert BLOCKED not in out


def test_a_bad_rule_is_refused_in_one_line():
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "fake_twilio.py"), "--rule", "0612=oops"],
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2 and "attendu +33612345678=TYPE" in proc.stderr
