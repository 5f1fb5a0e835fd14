"""The agents' daily digest: what waits for them, once each working day.

From ``RELANCE_DIGEST_TIME`` (08:00) on each working day, every organisation
with something waiting (:func:`worker.services.agenda.agenda`: decisions, tasks,
blocked cases, orientation deadlines, the coming commission) gets one digest,
rendered from ``templates/email/digest.txt.j2`` and ``digest.html.j2``:

* written to ``<digests dir>/<YYYY-MM-DD>/<ORGANISATION>.txt`` and ``.html``
  (``RELANCE_DIGESTS_DIR``, default ``<outbox>/digests``): the claim -- the
  text file is published whole under its name only if the name is free
  (:func:`worker.adapters.files.create_new`), so two schedulers or a rerun never make a
  second digest for the same organisation and day;
* with ``RELANCE_EMAIL_BACKEND=smtp``, e-mailed to each of the organisation's
  ``digest_recipients`` (``config/territory.yaml``). The addresses reached are
  recorded beside the digest (``.sent``): after a temporary SMTP failure the
  claim is released and the next run sends to the others only; a permanent
  one is recorded (``.error``) and logged for ops;
* ``.done`` marks a digest handled. A claim left without it for more than
  :data:`STALE_CLAIM` (the process died while sending) is taken over by the
  next run, which sends to the recipients not in ``.sent``: a digest is never
  lost, and sent twice to one address only if the process died between the
  server's acceptance and the line in ``.sent``.

An organisation with nothing waiting at its first run of the day gets no
digest that day (a ``.done`` marker alone records it, so that later runs
compute nothing). Each digest is
in the audit log (organisation, day, number of cases, outcome). Case
references and external ids only: no name, no contact detail.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import logging
from pathlib import Path

from worker.adapters.store import audit
from worker.domain.describe import step_label
from worker.services.agenda import ACTIONS, SECTIONS, Item, agenda, plain_todo
from worker.domain.calendar import parse_hhmm
from worker.adapters.channels.base import RetryableError
from worker.adapters.store.session import session_scope
from worker.adapters.files import SHARED_MODE, append_line, create_new, replace_file

log = logging.getLogger("relance.digests")

STALE_CLAIM = dt.timedelta(minutes=10)


@dataclasses.dataclass(frozen=True)
class DigestResult:
    organisation: str
    day: dt.date
    cases: int | None  # None: done earlier (not counted again)
    status: str  # written | sent | partly-sent | retry | failed | already
    path: Path | None = None


@dataclasses.dataclass
class Line:
    """One case in the digest: its most urgent item, the others' notes, the workspace's link."""

    case_reference: str
    external_id: str
    step: str  # in French
    since: dt.date | None
    deadline: dt.date | None
    todo: str  # in French, no command line
    action: str  # what to do in the workspace
    link: str | None  # the case page (at the action's form); None without RELANCE_PUBLIC_BASE_URL
    also: list[str] = dataclasses.field(default_factory=list)


def lines(app, items: list[Item]) -> list[tuple[str, list[Line]]]:
    """(section title, lines) with each case once, in its most urgent section, sorted by deadline."""
    base = (app.settings.public_base_url or "").rstrip("/")
    seen: dict[str, Line] = {}
    out = []
    for key, title in SECTIONS.items():
        rows = []
        for i in items:
            if i.section != key:
                continue
            if i.case_reference in seen and i.case_reference != "?":
                seen[i.case_reference].also.append(plain_todo(i.todo))
                continue
            anchor = f"#action-{i.action}" if i.action else ""
            line = Line(i.case_reference, i.external_id, step_label(i.step),
                        None if key == "commission" else i.since, i.deadline, plain_todo(i.todo),
                        ACTIONS.get(i.action, "voir le dossier"),
                        f"{base}/espace/dossiers/{i.case_reference}{anchor}" if base and i.case_reference != "?"
                        else f"{base}/espace/rendez-vous/{i.match_id}" if base and i.match_id
                        else (f"{base}/espace/a-traiter" if base else None))
            seen[i.case_reference] = line
            rows.append(line)
        rows.sort(key=lambda x: (x.deadline or dt.date.max, x.case_reference))
        if rows:
            out.append((title, rows))
    return out


def render(app, organisation: str, day: dt.date, items: list[Item]):
    """The digest of one organisation (``Rendered``: subject, text, html)."""
    org = app.territory.organisations[organisation]
    base = (app.settings.public_base_url or "").rstrip("/")
    context = {
        "org": {"code": organisation, "name": org.name, "short_name": org.short_name},
        "day": day,
        "sections": lines(app, items),
        "total": len({i.case_reference for i in items}),
        "workspace": f"{base}/espace/a-traiter" if base else None,
    }
    return app.renderer.render("digest", "email", context)


def _stale(path: Path) -> bool:
    try:
        age = dt.datetime.now().timestamp() - path.stat().st_mtime
    except FileNotFoundError:
        return False
    return age > STALE_CLAIM.total_seconds()


def _as_written(path: Path, rendered):
    """The claimed digest as it was written (text, and html if any), keeping the subject."""
    html_path = path.with_suffix(".html")
    return dataclasses.replace(rendered, text=path.read_text(encoding="utf-8").rstrip("\n"),
                               html=html_path.read_text(encoding="utf-8") if html_path.exists() else None)


def _send(app, organisation: str, day: dt.date, rendered, path: Path) -> str:
    from worker.adapters.channels.smtp_email import send_email

    recipients = app.territory.organisations[organisation].digest_recipients
    if not recipients:
        log.warning("digest %s %s: no digest_recipients in territory.yaml: written only", organisation, day)
        return "written"
    sent_file = path.with_suffix(".sent")
    done = set(sent_file.read_text(encoding="utf-8").split()) if sent_file.exists() else set()
    settings = app.settings.smtp_settings()
    failures = []
    for index, recipient in enumerate(recipients):
        if recipient in done:
            continue
        try:
            send_email(settings, to=recipient, subject=rendered.subject, text=rendered.text, html=rendered.html,
                       reference=f"DIGEST-{organisation}-{day.isoformat()}-{index}",
                       sender_name=app.settings.smtp_from_name or "Relance")
        except RetryableError:
            # release the claim: the next run sends to the recipients not reached yet
            path.unlink(missing_ok=True)
            path.with_suffix(".html").unlink(missing_ok=True)
            log.warning("digest %s %s: temporary SMTP failure, retried at the next run", organisation, day)
            return "retry"
        except Exception as exc:  # noqa: BLE001 - RecipientError / TechnicalError: recorded for ops
            failures.append(f"destinataire n° {index + 1} : {exc}")
            continue
        append_line(sent_file, recipient, mode=SHARED_MODE)  # O_NOFOLLOW, explicit mode
    if failures:
        replace_file(path.with_suffix(".error"), ("\n".join(failures) + "\n").encode("utf-8"), mode=SHARED_MODE)
        log.error("digest %s %s: %d recipient(s) not reached (see %s)", organisation, day, len(failures),
                  path.with_suffix(".error").name)
        return "partly-sent" if len(failures) < len(recipients) else "failed"
    return "sent"


def send_due(app, now: dt.datetime, *, force: bool = False) -> list[DigestResult]:
    """The day's digests, if it is a working day from RELANCE_DIGEST_TIME on (``force``: any time)."""
    cal = app.calendar
    day = cal.local_date(now)
    if not force and (not cal.is_working_day(day) or cal.local(now).time() < parse_hhmm(app.settings.digest_time)):
        return []
    results = []
    directory = app.settings.digests / day.isoformat()
    pending = [org for org in app.territory.organisations if not (directory / f"{org}.done").exists()]
    if not pending:  # the steady state after the morning: nothing to compute
        return [DigestResult(org, day, None, "already", directory / f"{org}.txt")
                for org in app.territory.organisations if (directory / f"{org}.txt").exists()]
    everything = agenda(app, now)  # one pass for all organisations
    for organisation in app.territory.organisations:
        path = directory / f"{organisation}.txt"
        done = path.with_suffix(".done")
        if organisation not in pending:
            if path.exists():
                results.append(DigestResult(organisation, day, None, "already", path))
            continue
        items = [i for i in everything if i.organisation == organisation]
        if not items:
            # nothing waits this morning: no digest today (and no agenda computed again for it)
            directory.mkdir(parents=True, exist_ok=True)
            done.touch()
            continue
        cases = len({i.case_reference for i in items})
        rendered = render(app, organisation, day, items)
        if not create_new(path, (rendered.text + "\n").encode("utf-8")):
            if done.exists() or not _stale(path):
                results.append(DigestResult(organisation, day, cases, "already", path))
                continue
            log.warning("digest %s %s: claim left unfinished, taken over", organisation, day)
            rendered = _as_written(path, rendered)  # what was claimed is what goes out
        elif rendered.html:
            replace_file(path.with_suffix(".html"), rendered.html.encode("utf-8"), mode=SHARED_MODE)
        status = _send(app, organisation, day, rendered, path) if app.settings.email_backend == "smtp" else "written"
        if status != "retry":
            done.touch()
            with session_scope(app.db_url) as s:
                audit.append(s, at=now, kind="digest", data={"organisation": organisation, "day": day.isoformat(),
                                                               "cases": cases, "status": status})
        log.info("digest %s %s: %d cases, %s", organisation, day, cases, status)
        results.append(DigestResult(organisation, day, cases, status, path))
    return results
