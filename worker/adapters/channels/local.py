"""Local backends (embedded default, demo, tests): files in the outbox folder.

SMS and e-mails are appended to ``sms.jsonl`` / ``email.jsonl``; letters are
written as one HTML file each under ``letters/<YYYY-MM-DD>/``. These files hold
personal data, like real letters: the outbox folder is not a log. They are
written 0600 (letters 0640, for the mail room), never through a symbolic link,
and purged by the retention job with the rows they belong to.
"""
from __future__ import annotations

import json
import threading
from pathlib import Path

from worker.adapters.channels.base import Delivery, OutgoingMessage, RecipientError
from worker.adapters.files import PRIVATE_MODE, SHARED_MODE, append_line, replace_file, safe_dir

_LOCK = threading.Lock()


def _append_jsonl(path: Path, record: dict) -> None:
    # 0600, never through a link, locked against the retention job's rewrite (worker.adapters.files)
    with _LOCK:
        append_line(path, json.dumps(record, ensure_ascii=False), PRIVATE_MODE)


class LocalSmsChannel:
    name = "sms"
    is_local = True

    def __init__(self, outbox: Path):
        self.path = Path(outbox) / "sms.jsonl"

    def send(self, message: OutgoingMessage) -> Delivery:
        from worker.domain.contact import can_receive_sms
        from worker.domain.gsm7 import sms_body, sms_segments

        if not can_receive_sms(message.to):  # a landline or a foreign number, as Twilio's channel refuses it
            raise RecipientError("recipient is not a French mobile number", code="not_mobile")
        body = sms_body(message.text)
        _append_jsonl(self.path, {"reference": message.reference, "step": message.step, "to": message.to,
                                  "from": message.organisation, "body": body})
        return Delivery(status="sent", provider_ref=f"local-sms-{message.message_id}", segments=sms_segments(body))


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
        folder = safe_dir(self.root, day)  # a link planted in the shared folder is refused, never followed
        target = folder / f"{message.reference}_{message.step}_{message.postage or 'simple'}.html"
        # unpredictable temporary name (O_EXCL), 0640 (the mail room reads the shared folder), renamed whole
        replace_file(target, (message.html or message.text).encode("utf-8"), SHARED_MODE)
        return Delivery(status="sent", provider_ref=str(target.relative_to(self.root)))
