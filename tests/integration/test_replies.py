"""A beneficiary's answer reaches a person (issue 10): e-mails carry Reply-To = the organisation's
mailbox; an answer that lands in the bounce Maildir anyway is a reply, not a bounce: forwarded to
the organisation's mailbox with the case reference, counted, shown in the agenda until read."""
from __future__ import annotations

import datetime as dt
import email
import email.policy
import json
import smtplib
from email.message import EmailMessage

from sqlalchemy import select

from tests.integration.test_real_channels import CD_WITH_EMAIL, NOW, _ingest, running_world
from worker.adapters.store.models import AuditEntry, InboundEvent
from worker.adapters.store.session import session_scope
from worker.services import bounces, replies
from worker.services.agenda import agenda


def _reply_to(w, original: EmailMessage, *, text: str, auto: bool = False) -> bytes:
    """The person answers the e-mail, through the local SMTP test server, to its envelope sender."""
    reply = EmailMessage()
    reply["From"] = original["To"]
    reply["To"] = "relance@cd35.example.org"
    reply["Subject"] = "Re: " + str(original["Subject"])
    reply["In-Reply-To"] = original["Message-ID"]
    reply["References"] = original["Message-ID"]
    if auto:
        reply["Auto-Submitted"] = "auto-replied"
    reply.set_content(text)
    with smtplib.SMTP(w.smtp.host, w.smtp.port, timeout=5) as client:
        client.send_message(reply)
    got = w.smtp.messages[-1]
    assert got.rcpt_tos == ["relance@cd35.example.org"]
    return got.raw


def test_a_reply_lands_as_a_reply_is_forwarded_and_waits_in_the_agenda(tmp_path):
    with running_world(f"sqlite:///{tmp_path / 'relance.db'}", tmp_path) as w:
        _ingest(w)
        w.cycle(NOW)
        person = w.person(CD_WITH_EMAIL)
        case = w.case(CD_WITH_EMAIL)
        org = w.app.territory.organisations[case.organisation]
        [sent] = [r for r in w.smtp.messages if person.email in r.rcpt_tos]
        # the e-mail itself says where answers go
        assert email.utils.parseaddr(str(sent.message["Reply-To"]))[1] == org.email

        raw = _reply_to(w, sent.message, text="Bonjour, je suis hospitalisée jusqu'au 20 juin.")
        new = w.app.settings.bounce_maildir / "new"
        new.mkdir(parents=True, exist_ok=True)
        (new / "1717405400.R1.mx").write_bytes(raw)
        before = len(w.smtp.messages)
        report = bounces.scan_bounces(w.app, NOW + dt.timedelta(hours=1))
        assert report["replies"] == 1 and report["applied"] == 0 and not report["rejected"], report

        # not a bounce: the e-mail and the address are untouched
        assert [m.status for m in w.messages(CD_WITH_EMAIL, "email")] == ["sent"]
        assert w.person(CD_WITH_EMAIL).email_status == "ok"
        # forwarded to the organisation's mailbox, with the case reference and the answer attached
        [fwd] = w.smtp.messages[before:]
        assert fwd.rcpt_tos == [org.email]
        assert case.reference in str(fwd.message["Subject"])
        assert "hospitalisée" in fwd.raw.decode("utf-8", "replace") or b"hospitalis" in fwd.raw
        # shown to agents until read; its text is stored nowhere
        [item] = [i for i in agenda(w.app, NOW + dt.timedelta(hours=2), case.organisation) if i.section == "replies"]
        assert item.case_reference == case.reference and "réponse reçue — à lire" in item.todo
        with session_scope(w.app.db_url) as s:
            stored = json.dumps([e.payload for e in s.execute(select(InboundEvent)).scalars()]
                                + [a.data for a in s.execute(select(AuditEntry)).scalars()], default=str)
        assert "hospitalis" not in stored
        [pending] = replies.pending(w.app)
        replies.mark_read(w.app, pending.id, NOW + dt.timedelta(hours=3))
        assert not [i for i in agenda(w.app, NOW + dt.timedelta(hours=3)) if i.section == "replies"]

        # the same file again: not forwarded twice; an out-of-office answer: counted, not forwarded
        (new / "1717405401.R2.mx").write_bytes(raw)
        (new / "1717405402.R3.mx").write_bytes(_reply_to(w, sent.message, text="Absent du bureau", auto=True))
        before = len(w.smtp.messages)
        report = bounces.scan_bounces(w.app, NOW + dt.timedelta(hours=4))
        assert report["duplicates"] == 1 and report["replies"] == 1
        assert len(w.smtp.messages) == before
        assert not replies.pending(w.app)
        cur = w.app.settings.bounce_maildir / "cur"
        assert all(name.endswith(":2,S") for name in (p.name for p in cur.iterdir()))
