"""What ops do with messages by hand: list them by status, put one back in the outbox.

A message in ``technical-failure`` was never confirmed by the provider: a
worker died while sending it (surfaced by the reconcile job), the provider
answered an error nobody knows how to read, or retries gave up. It is never
resent automatically, because the person may already have it. Once ops have
checked at the provider that it did not go out, :func:`requeue_message` puts
it back to ``pending`` -- only if it is still wanted, by the engine's own
re-check before sending (:func:`worker.domain.engine.send_verdict`: case
active and on that step, no pause, no booking since, channel usable, the
reminder's appointment still the booked one and not passed). The relay then sends it
through the same claim as any message. Each requeue is in the audit log with
the reason given.

Nothing here returns or logs a name, a number or an address: ids, references,
steps, statuses and the messages' own error texts (which never hold any).
"""
from __future__ import annotations

import datetime as dt

from sqlalchemy import select

from worker.adapters.store import audit
from worker.adapters.store.models import Case, Message
from worker.adapters.store.session import session_scope
from worker.domain import engine
from worker.domain.model import PENDING, MessageView
from worker.adapters.store.repository import to_state

REQUEUABLE = "technical-failure"


class MessageOpsError(ValueError):
    """The request cannot be carried out; the text (French) says why."""


def list_messages(app, *, status: str | None = None, channel: str | None = None,
                  since: dt.datetime | None = None, limit: int = 50) -> list[dict]:
    """The latest messages (by status change), newest first, filtered."""
    with session_scope(app.db_url) as s:
        q = select(Message).order_by(Message.status_at.desc(), Message.id.desc()).limit(limit)
        if status:
            q = q.where(Message.status == status)
        if channel:
            q = q.where(Message.channel == channel)
        if since is not None:
            q = q.where(Message.status_at >= since)
        return [
            {"id": m.id, "reference": m.reference, "case": f"RL-{m.case_id:06d}", "step": m.step,
             "channel": m.channel, "status": m.status, "status_at": m.status_at, "attempts": m.attempts,
             "error": m.error}
            for m in s.execute(q).scalars()
        ]


def requeue_message(app, message_id: int, *, reason: str, now: dt.datetime) -> dict:
    """Put a ``technical-failure`` message back to ``pending`` (sent by the next relay).

    Raises :class:`MessageOpsError` when the message is not in
    ``technical-failure`` or is no longer wanted.
    """
    reason = (reason or "").strip()
    if not reason:
        raise MessageOpsError("motif obligatoire (--reason) : ce qui a été vérifié chez le fournisseur")
    with session_scope(app.db_url) as s:
        msg = s.get(Message, message_id, with_for_update=True)
        if msg is None:
            raise MessageOpsError(f"message inconnu : {message_id}")
        if msg.status != REQUEUABLE:
            raise MessageOpsError(
                f"le message {msg.reference} est au statut {msg.status} : seul un message en "
                f"{REQUEUABLE} peut être remis en envoi")
        case = s.get(Case, msg.case_id)
        state = to_state(case)
        why_not = _not_wanted(app, state, msg, now)
        if why_not:
            raise MessageOpsError(f"le message {msg.reference} n'est plus à envoyer : {why_not}")
        previous_error = msg.error
        msg.status = PENDING
        msg.status_at = now
        msg.not_before = now
        msg.enqueued_at = None
        msg.claimed_at = None
        msg.error = None
        audit.append(s, at=now, kind="message", case_id=msg.case_id, entity_id=msg.id,
                     data={"step": msg.step, "channel": msg.channel, "seq": msg.seq, "status": PENDING,
                           "reason": "requeued_by_ops", "note": reason[:300],
                           "previous_error": (previous_error or "")[:300]})
        return {"id": msg.id, "reference": msg.reference, "step": msg.step, "channel": msg.channel,
                "status": PENDING}


_REASONS = {
    "case_closed": "dossier clos",
    "legitimate_reason": "motif légitime en cours",
    "appointment_changed": "le rendez-vous de ce rappel n'est plus celui qui est pris",
    "appointment_passed": "le rendez-vous est passé",
    "rdv_booked": "la personne a pris rendez-vous depuis",
}


def _not_wanted(app, state, msg: Message, now: dt.datetime) -> str | None:
    """Why the engine would cancel this message if it were pending now (None: it would send it)."""
    view = MessageView(msg.step, msg.channel, msg.seq, PENDING, msg.address_version, msg.id)
    verdict = engine.send_verdict(state, view, now, app.policy, app.calendar)
    if not verdict.startswith("cancel:"):
        return None  # send, or defer to the sending window
    code = verdict.split(":", 1)[1]
    if code == "step_changed":
        return f"le dossier est passé à l'étape {state.step}"
    if code.startswith("channel_unusable_"):
        return f"canal {msg.channel} inutilisable pour ce dossier"
    return _REASONS.get(code, code)
