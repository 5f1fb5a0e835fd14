"""Delivery status notifications (RFC 3464) as mail servers write them.

``postfix_dsn`` returns the raw bytes Postfix sends back to the envelope sender
when the destination refuses a message it had accepted: a human-readable part,
a ``message/delivery-status`` part, then the returned message (whole, as
``message/rfc822``, or its headers only, as ``text/rfc822-headers`` — Exim and
Exchange do the latter).
"""
from __future__ import annotations

from email.parser import BytesHeaderParser


def postfix_dsn(original: bytes, recipient: str, *, action: str = "failed", status: str = "5.1.1",
                diagnostic: str = "smtp; 550 5.1.1 <{rcpt}>: Recipient address rejected: User unknown",
                headers_only: bool = False, boundary: str = "8F1A2B3C4D.1717405200/mx.example.net",
                envelope_sender: str | None = None) -> bytes:
    """``envelope_sender``: the address the notice goes back to (the original's SMTP MAIL FROM,
    e.g. a VERP address); default the original's From."""
    headers = BytesHeaderParser().parsebytes(original)
    sender = envelope_sender or headers.get("From", "relance@example.org")
    head, _sep, _body = original.partition(b"\r\n\r\n")
    if not _sep:
        head, _sep, _body = original.partition(b"\n\n")
    returned_type = "text/rfc822-headers" if headers_only else "message/rfc822"
    returned = head.decode("utf-8", "replace") if headers_only else original.decode("utf-8", "replace")
    text = f"""Return-Path: <>
Received: by mx.example.net (Postfix) id 8F1A2B3C4D; Mon,  3 Jun 2024 11:00:00 +0200 (CEST)
Date: Mon,  3 Jun 2024 11:00:00 +0200 (CEST)
From: MAILER-DAEMON@mx.example.net (Mail Delivery System)
Subject: Undelivered Mail Returned to Sender
To: {sender}
Auto-Submitted: auto-replied
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status;
	boundary="{boundary}"
Content-Transfer-Encoding: 8bit
Message-Id: <20240603090000.8F1A2B3C4D@mx.example.net>

This is a MIME-encapsulated message.

--{boundary}
Content-Description: Notification
Content-Type: text/plain; charset=utf-8

This is the mail system at host mx.example.net.

I'm sorry to have to inform you that your message could not
be delivered to one or more recipients. It's attached below.

--{boundary}
Content-Description: Delivery report
Content-Type: message/delivery-status

Reporting-MTA: dns; mx.example.net
X-Postfix-Queue-ID: 8F1A2B3C4D
X-Postfix-Sender: rfc822; {sender}
Arrival-Date: Mon,  3 Jun 2024 10:00:00 +0200 (CEST)

Final-Recipient: rfc822; {recipient}
Original-Recipient: rfc822;{recipient}
Action: {action}
Status: {status}
Remote-MTA: dns; mail.destination.example
Diagnostic-Code: {diagnostic.format(rcpt=recipient)}

--{boundary}
Content-Description: Undelivered Message{' Headers' if headers_only else ''}
Content-Type: {returned_type}
Content-Transfer-Encoding: 8bit

{returned}
--{boundary}--
"""
    return text.replace("\r\n", "\n").replace("\n", "\r\n").encode("utf-8")
