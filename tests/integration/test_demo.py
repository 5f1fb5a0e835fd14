"""`make demo` exercises the whole due process (issue 9): observations and a hearing request after a
notice, a legitimate reason during the observation period, a commission decision and a lifting."""
from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import select

from worker.adapters.store.models import AuditEntry, Case, InboundEvent, Message
from worker.adapters.store.session import session_scope
from worker.bootstrap import build_app
from worker.entrypoints.demo import DEMO_SECRETS, run_demo
from worker.settings import Settings


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo90") / "demo"
    summary = run_demo(days=90, out=out)
    app = build_app(Settings(data_dir=out, database_url=f"sqlite:///{out / 'relance.db'}",
                             **{k.removeprefix("RELANCE_").lower(): v for k, v in DEMO_SECRETS.items()}))
    return app, summary


def _applied(app, type_: str) -> list[InboundEvent]:
    with session_scope(app.db_url) as s:
        rows = s.execute(select(InboundEvent).where(InboundEvent.type == type_,
                                                    InboundEvent.status == "applied")).scalars().all()
        s.expunge_all()
        return rows


def test_the_demo_hears_the_person_after_the_notice(demo):
    app, summary = demo
    assert _applied(app, "observations_received") and _applied(app, "hearing_requested")
    with session_scope(app.db_url) as s:
        steps = s.execute(select(AuditEntry.data).where(AuditEntry.kind == "step")).scalars().all()
    assert any(d.get("to_step") == "observations_review" for d in steps)
    assert "Journal d'audit : intact" in summary


def test_the_demo_has_a_legitimate_reason_during_the_observation_period(demo):
    app, _ = demo
    with session_scope(app.db_url) as s:
        notices = dict(s.execute(select(Message.case_id, Message.created_at).where(
            Message.step == "pre_sanction_notice", Message.channel == "letter")).all())
        cases = {c.id: c for c in s.execute(select(Case).where(Case.id.in_(notices))).scalars()}
        s.expunge_all()
    reasons = [e for e in _applied(app, "legitimate_reason")
               if e.case_id in notices and e.at > notices[e.case_id]]
    assert reasons, "no legitimate reason recorded after a pre-sanction notice"
    assert all(e.payload.get("category") in app.policy.legitimate_reasons.categories for e in reasons)
    for e in reasons:  # the procedure stopped: never a referral without an agent's refer after it
        case = cases[e.case_id]
        assert case.observations_at is not None
        assert case.outcome != "crsa_referral" or case.review_decision == "refer"


def test_the_demo_decides_and_lifts_a_suspension(demo):
    app, summary = demo
    decided, lifted = _applied(app, "sanction_decided"), _applied(app, "sanction_lifted")
    assert decided and lifted
    with session_scope(app.db_url) as s:
        letters = s.execute(select(Message.step, Message.postage).where(
            Message.step.in_(("sanction_decision", "sanction_lifting")), Message.channel == "letter")).all()
        cases = s.execute(select(Case).where(Case.decision_rate.is_not(None))).scalars().all()
        assert all(c.outcome == "crsa_referral" and c.decision_rate <= c.measure_rate for c in cases)
    assert ("sanction_decision", "lrar") in letters and ("sanction_lifting", "simple") in letters
    assert "suspensions décidées après la commission" in summary


def test_commission_pack_lists_the_referred_cases_with_their_facts_and_reasons(demo, tmp_path):
    from worker.services import commission

    app, _ = demo
    with session_scope(app.db_url) as s:
        sessions = sorted({d for d, in s.execute(select(Case.commission_date).where(
            Case.outcome == "crsa_referral", Case.commission_date.is_not(None)))})
    assert sessions
    session = sessions[0]
    path, pack = commission.write_pack(app, app.calendar.at(session, dt.time(9)), session, tmp_path / "pack.html")
    assert pack.cases and oct(path.stat().st_mode & 0o777) == "0o600"
    html = path.read_text(encoding="utf-8")
    for c in pack.cases:
        assert c.reference in html and c.external_id in html
        assert c.facts, f"{c.reference}: a referral without facts"
        assert any("décision d'examen (décision : poursuivre (préavis)" in e for e in c.events)
        assert c.notice_on is not None and "suspension de" in c.measure
    # every legitimate reason shows its category label, never free text
    labels = {cat.label for cat in app.policy.legitimate_reasons.categories.values()}
    reasons = [e for c in pack.cases for e in c.events if "motif :" in e]
    assert all(any(label in e for label in labels) for e in reasons)


def test_timeline_finds_a_person_by_matricule_case_or_letter_reference(demo):
    from worker.services import errors, timeline

    app, _ = demo
    with session_scope(app.db_url) as s:
        msg = s.execute(select(Message).where(Message.channel == "letter").order_by(Message.id.desc())
                        .limit(1)).scalar_one()
        case = s.get(Case, msg.case_id)
        person_ext = case.person.external_id
        refs = (msg.reference, msg.reference.lower(), f" {case.reference} ")
    by_matricule = timeline.timeline(app, person_ext)
    for ref in refs:
        assert timeline.timeline(app, ref) == by_matricule
    other = f"RL-{msg.case_id + 1:06d}-{msg.id:07d}"  # a real letter number under another case: refused
    for wrong in (other, "RL-999999", "RL-99999999999999999999", "CAF35-9999999"):
        with pytest.raises(errors.ServiceError, match="personne inconnue"):
            timeline.timeline(app, wrong)


def test_the_demo_books_through_rdv_solidarites_signed_webhooks(demo):
    """Issue 16: the people of the organisations that book in RDV-Solidarités book there; its signed
    notifications, posted to the API's route, become the bookings, attendances, absences and excused
    cancellations of their cases; a person not recognised waits for an agent, who links them."""
    app, summary = demo
    with session_scope(app.db_url) as s:
        by_webhook = s.execute(select(InboundEvent.type, InboundEvent.payload).where(
            InboundEvent.source == "rdv-solidarites", InboundEvent.status == "applied")).all()
        deliveries = s.execute(select(AuditEntry.data).where(AuditEntry.kind == "rdvs_webhook")).scalars().all()
        links = s.execute(select(AuditEntry.data).where(AuditEntry.kind == "rdvs_link")).scalars().all()
        direct = s.execute(select(InboundEvent.id).where(InboundEvent.source == "demo",
                                                         InboundEvent.type == "rdv_booked")).all()
    types = {t for t, _ in by_webhook}
    assert {"rdv_booked", "rdv_attended", "rdv_missed", "rdv_cancelled"} <= types, types
    assert all(p["rdv_solidarites"]["rdv_id"] for _t, p in by_webhook)
    assert any(p.get("excused") for t, p in by_webhook if t == "rdv_cancelled")
    assert direct, "the organisations without RDV-Solidarités still record their bookings directly"
    assert deliveries and all(d["outcome"] in ("applied", "unchanged", "pending") for d in deliveries)
    assert any(d["outcome"] == "pending" for d in deliveries) and links
    assert "RDV-Solidarités (webhooks signés)" in summary
