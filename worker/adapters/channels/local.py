"""Local backends (embedded default, demo, tests): files in the outbox folder.

SMS and e-mails are appended to ``sms.jsonl`` / ``email.jsonl``; letters are
written as one HTML file each under ``letters/<YYYY-MM-DD>/``. These files hold
personal data, like real letters: the outbox folder is not a log.
"""
from __future__ import annotations

import json
import os
import threading
from pathlib import Path

from worker.adapters.channels.base import Delivery, OutgoingMessage

_LOCK = threading.Lock()


def _append_jsonl(path: Path, record: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    line = json.dumps(record, ensure_ascii=False) + "\n"
    with _LOCK, open(path, "a", encoding="utf-8") as fh:
        fh.write(line)
        fh.flush()
        os.fsync(fh.fileno())


class LocalSmsChannel:
    name = "sms"
    is_local = True

    def __init__(self, outbox: Path):
        self.path = Path(outbox) / "sms.jsonl"

    def send(self, message: OutgoingMessage) -> Delivery:
        from worker.domain.gsm7 import segments, to_gsm7

        body = to_gsm7(message.text)
        _append_jsonl(self.path, {"reference": message.reference, "step": message.step, "to": message.to,
                                  "from": message.organisation, "body": body})
        return Delivery(status="sent", provider_ref=f"local-sms-{message.message_id}", segments=segments(body))


class LocalEmailChannel:
    name = "email"
    is_local = True

    def __init__(self, outbox: Path):
        self.path = Path(outbox) / "email.jsonl"

    def send(self, message: OutgoingMessage) -> Delivery:
        _append_jsonl(self.path, {"reference": message.reference, "step": message.step, "to": message.to,
                                  "from": message.sender_name, "subject": message.subject,
                                  "text": message.text, "html": message.html})
        return Delivery(status="sent", provider_ref=f"local-email-{message.message_id}")


class LocalLetterChannel:
    name = "letter"
    is_local = True

    def __init__(self, letters_dir: Path):
        self.root = Path(letters_dir)

    def send(self, message: OutgoingMessage) -> Delivery:
        day = message.extra.get("day", "undated")
        folder = self.root / day
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / f"{message.reference}_{message.step}_{message.postage or 'simple'}.html"
        tmp = target.with_suffix(".tmp")
        tmp.write_text(message.html or message.text, encoding="utf-8")
        os.replace(tmp, target)
        return Delivery(status="sent", provider_ref=str(target.relative_to(self.root)))
