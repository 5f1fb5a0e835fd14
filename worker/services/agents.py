"""The workspace's agents, their sessions and their e-mail sign-in links.

* Agents (``relance agents add|list|disable``): an e-mail (how they are recognised, by ProConnect or
  by the address an e-mail link goes to), a name, a role and, for the role ``agent``, an organisation
  of ``config/territory.yaml``. Roles (:data:`ROLES`): ``agent`` sees and acts on their organisation's
  cases only; ``department`` (the department's RSA team) sees and acts on every case; ``ops`` sees
  every case and acts on none.
* Sessions: the browser's cookie carries a random token; the database keeps its SHA-256 only, the
  last activity (a session unused for ``RELANCE_WEB_IDLE_MINUTES`` is over) and its end (sign-out,
  or ``RELANCE_WEB_SESSION_HOURS`` after sign-in).
* E-mail sign-in links: a random token, of which the database keeps an HMAC keyed with
  ``RELANCE_WEB_SECRET_KEY`` (a copy of the database does not give a usable link); single use (one
  conditional UPDATE marks it used), expiring after ``RELANCE_WEB_LOGIN_LINK_MINUTES``.

Every sign-in, sign-out and change of an agent is in the audit log, by agent id (no name, no e-mail).
"""
from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass

from sqlalchemy import delete, or_, select, update

from worker.adapters.store import audit
from worker.adapters.store.models import Agent, AgentSession, LoginLink
from worker.adapters.store.session import session_scope
from worker.services.errors import ServiceError

ROLES = {
    "agent": "agent (son organisation)",
    "department": "équipe RSA du Département (tous les dossiers)",
    "ops": "exploitation (lecture seule)",
}
_EMAIL_RE = re.compile(r"[^@\s]{1,64}@[^@\s]{1,189}\.[^@\s]{2,}")


@dataclass(frozen=True)
class AgentView:
    id: int
    email: str
    name: str
    organisation: str | None
    role: str
    active: bool = True

    @property
    def sees_all(self) -> bool:
        return self.role in ("department", "ops")

    @property
    def can_act(self) -> bool:
        return self.role in ("agent", "department")

    @property
    def scope(self) -> str | None:
        """The organisation whose cases this agent sees; None: every case."""
        return None if self.sees_all else self.organisation

    @property
    def role_label(self) -> str:
        return ROLES.get(self.role, self.role)


def _view(a: Agent) -> AgentView:
    return AgentView(a.id, a.email, a.name, a.organisation, a.role, a.active)


def normalise_email(email: str) -> str:
    return (email or "").strip().lower()


def save_agent(app, *, email: str, name: str, role: str, organisation: str | None,
               now: dt.datetime) -> tuple[AgentView, bool]:
    """Create the agent, or update the one with this e-mail (and make it active); (agent, created)."""
    email = normalise_email(email)
    if not _EMAIL_RE.fullmatch(email) or len(email) > 254:
        raise ServiceError("adresse e-mail invalide")
    name = " ".join((name or "").split())
    if not name or len(name) > 200:
        raise ServiceError("nom obligatoire (200 caractères au plus)")
    if role not in ROLES:
        raise ServiceError(f"rôle inconnu {role!r} (attendu : {', '.join(ROLES)})")
    if organisation is not None and organisation not in app.territory.organisations:
        raise ServiceError(f"organisation inconnue {organisation!r} (voir config/territory.yaml)")
    if role == "agent" and organisation is None:
        raise ServiceError("un agent appartient à une organisation (--org)")
    with session_scope(app.db_url) as s:
        agent = s.execute(select(Agent).where(Agent.email == email)).scalar()
        created = agent is None
        if created:
            agent = Agent(email=email, created_at=now)
            s.add(agent)
        agent.name, agent.role, agent.organisation, agent.active, agent.updated_at = name, role, organisation, True, now
        s.flush()
        audit.append(s, at=now, kind="agent", entity_id=agent.id,
                     data={"agent_id": agent.id, "action": "created" if created else "updated", "role": role,
                           "organisation": organisation})
        return _view(agent), created


def disable_agent(app, email: str, now: dt.datetime) -> AgentView:
    """The agent can no longer sign in; their open sessions end now."""
    with session_scope(app.db_url) as s:
        agent = s.execute(select(Agent).where(Agent.email == normalise_email(email))).scalar()
        if agent is None:
            raise ServiceError("agent inconnu")
        agent.active, agent.updated_at = False, now
        s.execute(update(AgentSession).where(AgentSession.agent_id == agent.id, AgentSession.ended_at.is_(None))
                  .values(ended_at=now))
        audit.append(s, at=now, kind="agent", entity_id=agent.id, data={"agent_id": agent.id, "action": "disabled"})
        return _view(agent)


def list_agents(app) -> list[AgentView]:
    with session_scope(app.db_url) as s:
        return [_view(a) for a in s.execute(select(Agent).order_by(Agent.organisation, Agent.email)).scalars()]


def agent_names(app, ids) -> dict[int, str]:
    """{agent id: name} for the authors shown on a case page."""
    ids = {i for i in ids if i is not None}
    if not ids:
        return {}
    with session_scope(app.db_url) as s:
        return dict(s.execute(select(Agent.id, Agent.name).where(Agent.id.in_(ids))).all())


def author_of(source: str | None, names: dict[int, str]) -> str:
    """Who recorded an event, in French: the agent's name for the workspace (``web:<agent id>``)."""
    source = source or ""
    if source.startswith("web:") and source[4:].isdigit():
        return names.get(int(source[4:]), f"agent n° {source[4:]}")
    return {"cli": "agent (ligne de commande)", "api": "outil de l'organisation", "returns": "service courrier",
            "mailroom": "service courrier", "demo": "démonstration", "mail": "boîte aux lettres",
            "twilio": "opérateur SMS", "bounce": "avis de non-remise", "ingest": "flux",
            "rdv-solidarites": "RDV-Solidarités"}.get(source, source or "Relance")


def authors(app, sources) -> dict[int, str]:
    """{agent id: name} of the ``web:<id>`` sources among ``sources``."""
    return agent_names(app, [int(x[4:]) for x in sources if (x or "").startswith("web:") and x[4:].isdigit()])


# --- sign-in --------------------------------------------------------------------------------------


def _sha256(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _link_hash(app, token: str) -> str:
    return hmac.new(app.settings.web_key, b"relance-login-link\0" + token.encode(), hashlib.sha256).hexdigest()


def oidc_agent(app, *, email: str | None, subject: str, now: dt.datetime) -> AgentView | None:
    """The active agent an OpenID Connect identity belongs to (by e-mail; the subject is then kept and
    must stay the same), else None."""
    email = normalise_email(email or "")
    if not email:
        return None
    with session_scope(app.db_url) as s:
        agent = s.execute(select(Agent).where(Agent.email == email, Agent.active.is_(True))).scalar()
        if agent is None or (agent.oidc_subject and agent.oidc_subject != subject):
            return None
        agent.oidc_subject = subject[:255]
        return _view(agent)


def start_session(app, agent_id: int, method: str, now: dt.datetime, id_token: str | None = None) -> str:
    """A new session for the agent; returns the token the cookie carries (kept here as a hash only)."""
    token = secrets.token_urlsafe(32)
    with session_scope(app.db_url) as s:
        agent = s.get(Agent, agent_id)
        if agent is None or not agent.active:
            raise ServiceError("agent inconnu ou désactivé")
        # housekeeping: the sessions and links over for a day go
        old = now - dt.timedelta(days=1)
        s.execute(delete(AgentSession).where(or_(AgentSession.ended_at < old, AgentSession.last_seen_at < old
                                                 - dt.timedelta(hours=app.settings.web_session_hours))))
        s.execute(delete(LoginLink).where(LoginLink.expires_at < old))
        record = AgentSession(token_hash=_sha256(token), agent_id=agent_id, method=method, created_at=now,
                              last_seen_at=now, id_token=id_token)
        s.add(record)
        agent.last_login_at = now
        s.flush()
        audit.append(s, at=now, kind="agent", entity_id=agent_id,
                     data={"agent_id": agent_id, "action": "signed_in", "method": method, "session": record.id})
    return token


def resume_session(app, token: str | None, now: dt.datetime) -> AgentView | None:
    """The agent of a live session (and its activity noted), or None: unknown, signed out, idle for
    longer than RELANCE_WEB_IDLE_MINUTES or older than RELANCE_WEB_SESSION_HOURS (then ended)."""
    if not token or len(token) > 100:
        return None
    settings = app.settings
    with session_scope(app.db_url) as s:
        row = s.execute(select(AgentSession, Agent).join(Agent, Agent.id == AgentSession.agent_id)
                        .where(AgentSession.token_hash == _sha256(token))).first()
        if row is None:
            return None
        record, agent = row
        if record.ended_at is not None or not agent.active:
            return None
        idle = now - record.last_seen_at > dt.timedelta(minutes=settings.web_idle_minutes)
        old = now - record.created_at > dt.timedelta(hours=settings.web_session_hours)
        if idle or old:
            record.ended_at = now
            audit.append(s, at=now, kind="agent", entity_id=agent.id,
                         data={"agent_id": agent.id, "action": "session_expired", "session": record.id,
                               "why": "idle" if idle else "max_age"})
            return None
        if now - record.last_seen_at > dt.timedelta(seconds=30):
            record.last_seen_at = now
        return _view(agent)


def end_session(app, token: str | None, now: dt.datetime) -> str | None:
    """Sign-out: the session ends now; returns its OpenID Connect id token (the provider's sign-out hint)."""
    if not token or len(token) > 100:
        return None
    with session_scope(app.db_url) as s:
        record = s.execute(select(AgentSession).where(AgentSession.token_hash == _sha256(token))).scalar()
        if record is None or record.ended_at is not None:
            return None
        record.ended_at = now
        audit.append(s, at=now, kind="agent", entity_id=record.agent_id,
                     data={"agent_id": record.agent_id, "action": "signed_out", "session": record.id})
        return record.id_token


def create_login_link(app, email: str, now: dt.datetime) -> tuple[str, AgentView] | None:
    """A sign-in link's token for an active agent with this e-mail (None for any other address: the
    caller answers the same either way)."""
    with session_scope(app.db_url) as s:
        agent = s.execute(select(Agent).where(Agent.email == normalise_email(email), Agent.active.is_(True))).scalar()
        if agent is None:
            return None
        token = secrets.token_urlsafe(32)
        minutes = app.settings.web_login_link_minutes
        link = LoginLink(token_hash=_link_hash(app, token), agent_id=agent.id, created_at=now,
                         expires_at=now + dt.timedelta(minutes=minutes))
        s.add(link)
        s.flush()
        audit.append(s, at=now, kind="agent", entity_id=agent.id,
                     data={"agent_id": agent.id, "action": "login_link_sent", "link": link.id})
        return token, _view(agent)


class LoginLinkRefused(ServiceError):
    """An e-mail sign-in link that cannot be used (``reason``: unknown | expired | used)."""

    def __init__(self, reason: str):
        super().__init__({"unknown": "lien de connexion inconnu",
                          "expired": "lien de connexion expiré : demandez-en un nouveau",
                          "used": "lien de connexion déjà utilisé : demandez-en un nouveau"}[reason])
        self.reason = reason


def use_login_link(app, token: str, now: dt.datetime) -> AgentView:
    """Spend a sign-in link (once: a conditional UPDATE); the agent it signs in, or LoginLinkRefused."""
    if not token or len(token) > 100:
        raise LoginLinkRefused("unknown")
    digest = _link_hash(app, token)
    with session_scope(app.db_url) as s:
        link = s.execute(select(LoginLink).where(LoginLink.token_hash == digest)).scalar()
        if link is None:
            raise LoginLinkRefused("unknown")
        if link.used_at is not None:
            raise LoginLinkRefused("used")
        if link.expires_at <= now:
            raise LoginLinkRefused("expired")
        spent = s.execute(update(LoginLink).where(LoginLink.id == link.id, LoginLink.used_at.is_(None))
                          .values(used_at=now).execution_options(synchronize_session=False)).rowcount
        if spent != 1:
            raise LoginLinkRefused("used")
        agent = s.get(Agent, link.agent_id)
        if agent is None or not agent.active:
            raise LoginLinkRefused("unknown")
        return _view(agent)
