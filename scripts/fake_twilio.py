#!/usr/bin/env python3
"""A fake Twilio on loopback for local development, with the real channels.

    .venv/bin/python scripts/fake_twilio.py [--port 8091] [--rule +33612345678=invalid_number ...]

Starts the fake Twilio REST API of the tests (tests/fakes/fake_twilio.py: the
Messages API of the official client, signed status callbacks "sent" then
"delivered" to each message's StatusCallback, errors on demand) on 127.0.0.1,
prints the settings that point Relance at it, then one line per message it
accepts (SID, segments, what will happen; never the number or the text), until
Ctrl-C. With ``--rule NUMBER=KIND`` every message to NUMBER gets KIND:
rate_limit, server_error, unavailable, invalid_number, not_mobile, opt_out,
unknown, undelivered, failed, out_of_order, no_callback.

Then, in another shell: export the printed settings, start ``relance api``
(the callbacks go to RELANCE_PUBLIC_BASE_URL) and run ``relance tick``; see
README, "Local development with the real channels".
"""
from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.fakes.fake_twilio import KINDS, FakeTwilio  # noqa: E402


def _rule(value: str) -> tuple[str, str]:
    number, sep, kind = value.partition("=")
    if not sep or not number.startswith("+") or kind not in KINDS:
        raise argparse.ArgumentTypeError(
            f"{value!r}: attendu +33612345678=TYPE, TYPE parmi {', '.join(sorted(KINDS))}")
    return number, kind


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8091, help="port on 127.0.0.1 (0: any free port)")
    parser.add_argument("--api-url", default="http://127.0.0.1:8080",
                        help="where `relance api` listens (RELANCE_PUBLIC_BASE_URL)")
    parser.add_argument("--rule", type=_rule, action="append", default=[], metavar="NUMBER=KIND")
    args = parser.parse_args(argv)

    fake = FakeTwilio(port=args.port).start()
    for number, kind in args.rule:
        fake.set_rule(number, kind)
    print("Fake Twilio prêt. Réglages à exporter :", flush=True)
    for name, value in (
        ("RELANCE_SMS_BACKEND", "twilio"),
        ("RELANCE_TWILIO_ACCOUNT_SID", fake.account_sid),
        ("RELANCE_TWILIO_AUTH_TOKEN", fake.auth_token),
        ("RELANCE_TWILIO_SENDER_ID", "RSA35"),
        ("RELANCE_TWILIO_API_BASE_URL", fake.url),
        ("RELANCE_PUBLIC_BASE_URL", args.api_url),
    ):
        print(f"export {name}={value}", flush=True)

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    seen = 0
    try:
        while not stop.wait(0.2):
            messages = fake.messages
            for message in messages[seen:]:
                print(f"accepté {message.sid} : {message.num_segments} segment(s), suite : {message.kind}",
                      flush=True)
            seen = len(messages)
    except KeyboardInterrupt:
        pass
    finally:
        fake.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
