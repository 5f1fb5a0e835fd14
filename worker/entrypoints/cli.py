"""``relance``: the command line agents and ops use (messages in French).

Every error is one clear line on stderr and a non-zero exit code, never a
traceback. Long operations show progress on a terminal and stay quiet when
piped.
"""
from __future__ import annotations

import datetime as dt
import json
import logging
import sys
from pathlib import Path
from typing import Optional

import typer

UTC = dt.timezone.utc

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Relance : invitations, relances, convocations et commission RSA.")
db_app = typer.Typer(no_args_is_help=True, help="Base de données.")
audit_app = typer.Typer(no_args_is_help=True, help="Journal d'audit.")
letters_app = typer.Typer(no_args_is_help=True, help="Courriers : lots d'impression, retours du service courrier.")
app.add_typer(db_app, name="db")
app.add_typer(audit_app, name="audit")
app.add_typer(letters_app, name="letters")
email_app = typer.Typer(no_args_is_help=True, help="E-mails : avis de non-remise (bounces).")
app.add_typer(email_app, name="email")
digests_app = typer.Typer(no_args_is_help=True, help="Bulletins quotidiens des agents.")
app.add_typer(digests_app, name="digests")
messages_app = typer.Typer(no_args_is_help=True, help="Messages : liste par statut, remise en envoi après vérification.")
app.add_typer(messages_app, name="messages")
commission_app = typer.Typer(no_args_is_help=True, help="Commission RSA : dossier de séance.")
replies_app = typer.Typer(no_args_is_help=True, help="Réponses des bénéficiaires arrivées par e-mail.")
app.add_typer(replies_app, name="replies")
rdvs_app = typer.Typer(no_args_is_help=True, help="RDV-Solidarités : rendez-vous à rapprocher d'une personne.")
app.add_typer(rdvs_app, name="rdvs")
app.add_typer(commission_app, name="commission")
crsa_app = typer.Typer(no_args_is_help=True, help="Commission RSA (CRSA) : dossiers de séance en PDF.")
app.add_typer(crsa_app, name="crsa")
agents_app = typer.Typer(no_args_is_help=True, help="Agents de l'espace agents : inscription, rôle, désactivation.")
app.add_typer(agents_app, name="agents")
export_app = typer.Typer(no_args_is_help=True, help="Exports : données de l'évaluation (annexe E).")
app.add_typer(export_app, name="export")
campaign_app = typer.Typer(no_args_is_help=True, help="Campagne du stock : plan, avancement, pause, reprise.")
app.add_typer(campaign_app, name="campaign")


class CliError(Exception):
    """A one-line error for agents."""


def _fail(message: str, code: int = 1) -> None:
    typer.echo(f"Erreur : {message}", err=True)
    raise typer.Exit(code)


def _context():
    from worker.bootstrap import get_app
    from worker.domain.policy import ConfigError

    try:
        return get_app()
    except ConfigError as exc:
        raise CliError(f"configuration invalide — {exc}") from None
    except Exception as exc:  # pydantic settings errors
        raise CliError(f"paramètres invalides — {_one_line(exc)}") from None


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return " ".join(t.strip() for t in text[:3]) if text else type(exc).__name__


def _parse_dt(value: str | None, name: str, app_ctx=None) -> dt.datetime | None:
    if value is None:
        return None
    try:
        parsed = dt.datetime.fromisoformat(value)
    except ValueError:
        try:
            day = dt.date.fromisoformat(value)
        except ValueError:
            raise CliError(f"{name} : date invalide {value!r} (format ISO 8601, ex. 2024-05-03T10:00)") from None
        parsed = dt.datetime.combine(day, dt.time(0, 0))
    if parsed.tzinfo is None:
        from zoneinfo import ZoneInfo

        tz = ZoneInfo(app_ctx.settings.timezone) if app_ctx else UTC
        parsed = parsed.replace(tzinfo=tz)
    return parsed.astimezone(UTC)


def _rows_reported(report) -> None:
    """The rejected rows and the warnings of an ingestion (line, field, reason: never the row's data),
    then the exit code that says whether rows were rejected."""
    for r in report.rejected:
        typer.echo(f"  ligne {r['line']} ({r['external_id'] or 'sans identifiant'}) : {r['field']} — {r['reason']}")
    for w in report.warnings:
        typer.echo(f"  avertissement ligne {w['line']} ({w['external_id'] or 'tout le fichier'}) : {w['field']} — {w['reason']}")
    _rejected(len(report.rejected))


def _simulated_now(ctx, now: str | None) -> dt.datetime | None:
    """``--now``: a simulated instant, allowed with the local channels only (nothing real goes out
    at a made-up time); None without it."""
    if now is not None and not ctx.settings.local_channels:
        raise CliError("--now n'est permis qu'avec les canaux locaux (RELANCE_SMS_BACKEND, "
                       "RELANCE_EMAIL_BACKEND et RELANCE_LETTER_BACKEND à 'local')")
    return _parse_dt(now, "--now", ctx)


def _progress_printer(label: str):
    if not sys.stderr.isatty():
        return None

    def show(done: int, total: int) -> None:
        sys.stderr.write(f"\r{label} : {done}/{total}")
        if done >= total:
            sys.stderr.write("\n")
        sys.stderr.flush()

    return show


# Exit codes (README, "Exit codes"): 0 done; 1 refused or failed (one line on stderr);
# 2 wrong usage; 3 done, but rows or files were rejected (listed in the output);
# 70 unexpected internal error (a bug: see the log); 130 interrupted.
EXIT_REJECTED = 3
EXIT_INTERNAL = 70


def _rejected(count: int, what: str = "lignes rejetées") -> None:
    """Done, with rejects: exit code 3 (distinct from a refusal and from a crash)."""
    if count:
        typer.echo(f"Attention : {count} {what} (code de sortie {EXIT_REJECTED}).", err=True)
        raise typer.Exit(EXIT_REJECTED)


def _ensure_db(ctx) -> None:
    """The schema must be there and current: ordinary commands never create or migrate it."""
    from worker.bootstrap import SchemaError, require_schema

    try:
        require_schema(ctx)
    except SchemaError as exc:
        raise CliError(str(exc)) from None


# --- commands ---------------------------------------------------------------------------------


@db_app.command("upgrade")
def db_upgrade(wait: float = typer.Option(0, "--wait", min=0, max=600,
                                          help="Attendre jusqu'à N secondes que la base réponde (démarrage)")) -> None:
    """Crée ou met à jour le schéma de la base."""
    from worker.bootstrap import SchemaError, upgrade_schema

    ctx = _context()
    try:
        upgrade_schema(ctx, wait)
    except SchemaError as exc:
        raise CliError(str(exc)) from None
    typer.echo("Base à jour.")


@app.command()
def ingest(file: Path = typer.Argument(..., help="Fichier de flux (CSV ou JSON Lines)"),
           as_json: bool = typer.Option(False, "--json", help="Résultat en JSON"),
           now: Optional[str] = typer.Option(None, "--now", help="Instant simulé (ISO 8601), comme pour tick"),
           stock: bool = typer.Option(False, "--stock", help="Fichier du stock (colonnes du flux, plus segment et "
                                                              "priority) : importé pour la campagne, personne n'est "
                                                              "invité à l'import")) -> None:
    """Intègre un fichier de flux : les lignes invalides sont rejetées avec leur motif."""
    from worker.adapters.flux import FluxFormatError
    from worker.services import ingest as ingest_service

    if stock:
        return _ingest_stock(file, as_json, now)

    ctx = _context()
    # Simulated time must date the ingestion too: cases opened now are due now,
    # and a later `tick --now` in the past would never see them.
    moment = _simulated_now(ctx, now) or dt.datetime.now(UTC)
    if not file.exists():
        raise CliError(f"fichier introuvable : {file}")
    _ensure_db(ctx)
    try:
        report = ingest_service.ingest_file(ctx, file, moment, progress=_progress_printer("Lignes"))
    except (FluxFormatError, ingest_service.IngestError) as exc:  # neither quotes a row
        raise CliError(f"{file.name} : {exc}") from None
    if as_json:
        typer.echo(json.dumps(report.as_json(), ensure_ascii=False, indent=2))
        _rejected(len(report.rejected))
        return
    typer.echo(f"{file.name} : {report.accepted} nouvelles personnes, {report.updated} mises à jour, "
               f"{report.unchanged} inchangées, {len(report.rejected)} lignes rejetées, "
               f"{report.cases_opened} dossiers ouverts.")
    _rows_reported(report)


@app.command()
def tick(now: Optional[str] = typer.Option(None, "--now", help="Instant simulé (ISO 8601)")) -> None:
    """Un cycle complet du planificateur, tout de suite."""
    from worker.entrypoints import jobs

    ctx = _context()
    moment = _simulated_now(ctx, now)
    _ensure_db(ctx)
    result = jobs.cycle(ctx, moment)
    typer.echo(f"Cycle terminé : {result['swept']} dossiers traités, {result['relayed']} messages envoyés "
               f"ou reprogrammés, {result['stuck']} messages bloqués signalés.")
    if result.get("digests"):
        typer.echo(f"{result['digests']} bulletins d'agents produits.")
    if result.get("orientation"):
        typer.echo(f"{result['orientation']} dossiers non orientés signalés : échéance des 6 semaines proche "
                   "ou dépassée (relance orientation).")
    if result.get("campaign"):
        typer.echo(f"Campagne du stock : {result['campaign']} personnes invitées aujourd'hui (relance campaign status).")


def _ingest_stock(file: Path, as_json: bool, now: str | None) -> None:
    """``relance ingest --stock FILE``: the same checks and report as a flux, and the segments."""
    from worker.adapters.flux import FluxFormatError
    from worker.services import errors, stock

    ctx = _context()
    moment = _simulated_now(ctx, now) or dt.datetime.now(UTC)
    if not file.exists():
        raise CliError(f"fichier introuvable : {file}")
    _ensure_db(ctx)
    try:
        report = stock.import_stock(ctx, file, moment, progress=_progress_printer("Lignes"))
    except (FluxFormatError, errors.ServiceError) as exc:  # neither quotes a row
        raise CliError(f"{file.name} : {exc}") from None
    if as_json:
        typer.echo(json.dumps(report.as_json(), ensure_ascii=False, indent=2))
        _rejected(len(report.rejected))
        return
    typer.echo(f"{file.name} (stock) : {report.accepted} nouvelles personnes, {report.updated} mises à jour, "
               f"{report.unchanged} inchangées, {len(report.rejected)} lignes rejetées ; aucune invitation à "
               "l'import (relance campaign plan).")
    labels = {k: seg.label for k, seg in ctx.config.campaign.segments.items()}
    for key, n in sorted(report.segments.items(), key=lambda kv: -kv[1]):
        typer.echo(f"  {labels.get(key, key)} ({key}) : {n}")
    _rows_reported(report)


@campaign_app.command("plan")
def campaign_plan(as_json: bool = typer.Option(False, "--json", help="Résultat en JSON"),
                  now: Optional[str] = typer.Option(None, "--now", help="Instant simulé (ISO 8601)")) -> None:
    """Le calendrier des invitations semaine par semaine, les dates des cibles, et ce qui manque."""
    from worker.services import campaign, errors

    ctx = _context()
    _ensure_db(ctx)
    try:
        result = campaign.plan(ctx, _parse_dt(now, "--now", ctx) or dt.datetime.now(UTC))
    except errors.ServiceError as exc:
        raise CliError(str(exc)) from None
    if as_json:
        typer.echo(json.dumps(result.as_json(), ensure_ascii=False, indent=2))
        return
    for line in result.lines():
        typer.echo(line)


@campaign_app.command("status")
def campaign_status(as_json: bool = typer.Option(False, "--json", help="Résultat en JSON"),
                    html: bool = typer.Option(False, "--html", help="Écrire aussi le rapport HTML (avec son graphique)"),
                    out: Optional[Path] = typer.Option(None, "--out", help="Fichier HTML (avec --html) ; défaut : "
                                                                          "<outbox>/reports/campagne-stock-<date>.html"),
                    now: Optional[str] = typer.Option(None, "--now", help="Instant simulé (ISO 8601)")) -> None:
    """L'avancement par rapport aux cibles, par segment et par organisation."""
    from worker.services import campaign_status as service, errors

    ctx = _context()
    _ensure_db(ctx)
    moment = _parse_dt(now, "--now", ctx) or dt.datetime.now(UTC)
    try:
        if html or out is not None:
            path, result = service.write_html(ctx, moment, out)
        else:
            path, result = None, service.status(ctx, moment)
    except errors.ServiceError as exc:
        raise CliError(str(exc)) from None
    if as_json:
        typer.echo(json.dumps(result.as_json(), ensure_ascii=False, indent=2))
    else:
        for line in result.lines():
            typer.echo(line)
    if path is not None:
        typer.echo(f"Rapport HTML : {path}", err=as_json)


@campaign_app.command("pause")
def campaign_pause(reason: Optional[str] = typer.Option(None, "--reason", help="Pourquoi (200 caractères au plus)"),
                   now: Optional[str] = typer.Option(None, "--now", help="Instant simulé (ISO 8601)")) -> None:
    """Met la campagne en pause : plus de nouvelles invitations ; les dossiers ouverts continuent."""
    _campaign_set("paused", reason, now)


@campaign_app.command("resume")
def campaign_resume(now: Optional[str] = typer.Option(None, "--now", help="Instant simulé (ISO 8601)")) -> None:
    """Reprend la campagne : les invitations repartent au rythme des places."""
    _campaign_set("active", None, now)


def _campaign_set(status: str, reason: str | None, now: str | None) -> None:
    from worker.services import campaign, errors

    ctx = _context()
    _ensure_db(ctx)
    try:
        typer.echo(campaign.set_status(ctx, _parse_dt(now, "--now", ctx) or dt.datetime.now(UTC), status, reason))
    except errors.ServiceError as exc:
        raise CliError(str(exc)) from None


def _parse_date(value: str | None, option: str) -> dt.date | None:
    if value is None:
        return None
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise CliError(f"{option} : date invalide {value!r} (attendu AAAA-MM-JJ)") from None


@app.command()
def event(type: str = typer.Argument(..., help="Type d'événement (rdv_booked, npai, ...)"),
          external_id: str = typer.Argument(..., help="Identifiant de la personne (matricule)"),
          at: Optional[str] = typer.Option(None, "--at", help="Date de l'événement (ISO 8601)"),
          until: Optional[str] = typer.Option(None, "--until", help="Fin du motif légitime"),
          appointment_at: Optional[str] = typer.Option(None, "--appointment-at", help="Date du rendez-vous"),
          decision: Optional[str] = typer.Option(None, "--decision",
                                                 help="proceed | refer | legitimate_reason | close"),
          rate: Optional[int] = typer.Option(None, "--rate", help="Taux de suspension envisagé ou décidé (%)"),
          months: Optional[int] = typer.Option(None, "--months", help="Durée de la suspension (mois)"),
          repeat: bool = typer.Option(False, "--repeat", help="review_decision proceed : manquement répété (bornes du décret plus larges)"),
          start: Optional[str] = typer.Option(None, "--from", help="sanction_decided : début de la suspension (AAAA-MM-JJ)"),
          to: Optional[str] = typer.Option(None, "--to", help="Nouveau parcours (cd, ft, ft_unregistered, ml)"),
          reason: Optional[str] = typer.Option(None, "--reason", help="Motif (texte libre, non journalisé)"),
          category: Optional[str] = typer.Option(
              None, "--category", help="legitimate_reason : catégorie du motif (hospitalisation, incarceration, "
                                       "medical_appointment, sick_leave, no_childcare, homelessness, "
                                       "training_or_work, other — config/paths.yaml)"),
          review_on: Optional[str] = typer.Option(
              None, "--review-on", help="legitimate_reason sans fin prévisible : date de réexamen (AAAA-MM-JJ)"),
          large_print: Optional[bool] = typer.Option(
              None, "--large-print/--no-large-print", help="preferences_updated : courriers en gros caractères"),
          language: Optional[str] = typer.Option(
              None, "--language", help="preferences_updated : langue des SMS et du résumé (fr, en, ar)"),
          key: Optional[str] = typer.Option(None, "--key", help="Clé d'idempotence (un même événement n'est appliqué qu'une fois)"),
          as_json: bool = typer.Option(False, "--json")) -> None:
    """Enregistre un événement pour une personne et l'applique à son dossier."""
    from worker.services import cases, errors

    ctx = _context()
    _ensure_db(ctx)
    moment = _parse_dt(at, "--at", ctx) or dt.datetime.now(UTC)
    receipt_on = None
    if type in ("ar_signed", "ar_unclaimed"):
        receipt_on = ctx.calendar.local_date(moment)
    start_on = _parse_date(start, "--from")
    try:
        res = cases.apply_event(ctx, external_id=external_id, type=type, now=moment,
                                until=_parse_dt(until, "--until", ctx),
                                appointment_at=_parse_dt(appointment_at, "--appointment-at", ctx),
                                decision=decision, to=to, reason=reason, receipt_on=receipt_on,
                                source="cli", idempotency_key=key, rate=rate, months=months, repeat=repeat,
                                start_on=start_on, category=category,
                                review_on=_parse_date(review_on, "--review-on"), large_print=large_print,
                                language=language)
    except errors.ServiceError as exc:
        raise CliError(str(exc)) from None
    if as_json:
        typer.echo(json.dumps({"event_id": res.event_id, "status": res.status, "note": res.note,
                               "case": res.case_id}, ensure_ascii=False))
        return
    label = {"applied": "appliqué", "ignored": "enregistré sans effet", "duplicate": "déjà enregistré"}[res.status]
    typer.echo(f"Événement {type} {label} (n° {res.event_id}){' — ' + res.note if res.note else ''}.")


@app.command()
def timeline(external_id: str = typer.Argument(..., help="Matricule, référence de dossier (RL-000123) ou de courrier"),
             as_json: bool = typer.Option(False, "--json")) -> None:
    """Tout ce qui est arrivé aux dossiers d'une personne, dans l'ordre."""
    from worker.domain import describe
    from worker.services import errors
    from worker.services import timeline as timeline_service

    ctx = _context()
    _ensure_db(ctx)
    try:
        items = timeline_service.timeline(ctx, external_id)
    except errors.ServiceError as exc:
        raise CliError(str(exc)) from None
    if as_json:
        typer.echo(json.dumps(items, ensure_ascii=False, indent=2, default=str))
        return
    tz = ctx.calendar.tz
    for i in items:
        when = describe.local_time(i["at"], tz)
        if i["kind"] == "message":
            channel = describe.CHANNELS.get(i["channel"], i["channel"])
            status = describe.MESSAGE_STATUSES.get(i["status"], i["status"])
            typer.echo(f"{when}  message  {i['step']:<20} {channel:<8} {status}"
                       f"{'  (' + i['detail'] + ')' if i.get('detail') else ''}")
        elif i["kind"] == "event":
            by = (i.get("source") or "").removeprefix("web:")
            typer.echo(f"{when}  événement {i['type']:<19} {describe.EVENT_STATUSES.get(i['status'], i['status'])}"
                       f"{'  (' + i['said'] + ')' if i.get('said') else ''}"
                       f"{'  [espace agents, agent n° ' + by + ']' if (i.get('source') or '').startswith('web:') else ''}")
        elif i["kind"] == "step":
            typer.echo(f"{when}  étape    {i['step']:<20} ({describe.reason(i.get('reason'))})")
        else:
            typer.echo(f"{when}  dossier  {describe.case_entry(i['detail'], tz)}")


@audit_app.command("verify")
def audit_verify(anchor: Optional[Path] = typer.Option(
        None, "--anchor", help="Fichier d'ancres (relance audit anchor) : détecte aussi une chaîne réécrite ou tronquée")) -> None:
    """Vérifie la chaîne d'empreintes (signée par RELANCE_AUDIT_KEY) du journal d'audit."""
    from worker.services.audit_log import AuditError, verify_chain

    ctx = _context()
    _ensure_db(ctx)
    try:
        result = verify_chain(ctx, anchor)
    except AuditError as exc:
        raise CliError(str(exc)) from None
    if not result.ok:
        if result.broken_id is None:
            raise CliError(f"journal d'audit rompu : {result.reason}")
        raise CliError(f"journal d'audit rompu à l'entrée n° {result.broken_id} : {result.reason} "
                       f"({result.checked} entrées valides avant elle)")
    typer.echo(f"Journal d'audit intact : {result.checked} entrées vérifiées.")
    for note in result.notes:
        typer.echo(f"  {note}")
    if anchor is not None:
        typer.echo(f"  {result.anchors_checked} ancres concordantes ({anchor})"
                   + (f", {result.anchors_purged} antérieures à la purge du début du journal"
                      if result.anchors_purged else ""))


@audit_app.command("anchor")
def audit_anchor(file: Optional[Path] = typer.Argument(
        None, help="Fichier d'ancres, hors de la base (une ligne JSON ajoutée) ; sans fichier : la ligne est affichée"),
                 accept_unsigned: bool = typer.Option(
        False, "--accept-unsigned", help="Une fois, après la mise à jour d'une base dont le journal précède la clé : "
                                         "scelle ses premières entrées non signées")) -> None:
    """Vérifie la chaîne puis note sa tête (empreinte et nombre d'entrées) hors de la base."""
    from worker.services.audit_log import AuditError, anchor_chain

    ctx = _context()
    _ensure_db(ctx)
    try:
        written = anchor_chain(ctx, dt.datetime.now(UTC), file, accept_unsigned=accept_unsigned)
    except AuditError as exc:
        raise CliError(str(exc)) from None
    except OSError as exc:
        raise CliError(f"fichier d'ancres : {file} : {exc.strerror or type(exc).__name__}") from None
    line = json.dumps(written.as_json(), ensure_ascii=False)
    typer.echo(line if file is None else f"Ancre ajoutée à {file} : {written.count} entrées, "
                                         f"tête {written.head_hash[:16]}…")


@audit_app.command("purge")
def audit_purge(before: str = typer.Option(..., "--before", help="Date (AAAA-MM-JJ) : le début du journal avant elle est supprimé")) -> None:
    """Supprime le début du journal d'audit (rôle propriétaire de la base) après un point de contrôle."""
    from worker.services.retention import AuditPurgeError, purge_audit_log

    ctx = _context()
    _ensure_db(ctx)
    moment = _parse_dt(before, "--before", ctx)
    try:
        removed = purge_audit_log(ctx, moment, dt.datetime.now(UTC))
    except AuditPurgeError as exc:
        raise CliError(str(exc)) from None
    typer.echo(f"{removed} entrées du début du journal d'audit supprimées (point de contrôle ajouté).")


@app.command()
def demo(days: int = typer.Option(90, "--days", help="Nombre de jours simulés"),
         out: Path = typer.Option(Path("demo-out"), "--out", help="Dossier de la démonstration"),
         seed: int = typer.Option(2024, "--seed"),
         campaign: bool = typer.Option(False, "--campaign", help="Avec la campagne du stock, à côté du flux")) -> None:
    """Démonstration : base neuve, flux d'exemple, N jours simulés."""
    from worker.entrypoints.demo import run_demo

    summary = run_demo(days=days, out=out, seed=seed, progress=_progress_printer("Jours simulés"),
                       campaign=campaign)
    typer.echo(summary)


@app.command()
def scheduler(check: bool = typer.Option(False, "--check",
                                         help="Vérifie que le planificateur de cette machine tourne (bilan de santé)")) -> None:
    """Lance le planificateur (un seul actif à la fois)."""
    from worker.bootstrap import configure_logging
    from worker.entrypoints.scheduler import LeaderScheduler, check_heartbeat

    ctx = _context()
    if check:
        try:
            typer.echo(check_heartbeat(ctx))
        except ValueError as exc:
            raise CliError(str(exc)) from None
        return
    _ensure_db(ctx)
    configure_logging(ctx.settings)
    LeaderScheduler(ctx).run()


@letters_app.command("batch")
def letters_batch(date: Optional[str] = typer.Option(None, "--date", help="Jour des courriers (AAAA-MM-JJ), par défaut aujourd'hui")) -> None:
    """Rassemble les courriers du jour en un PDF par organisation et affranchissement, avec leur bordereau."""
    from worker.services import print_batches as letters

    ctx = _context()
    _ensure_db(ctx)
    now = dt.datetime.now(UTC)
    try:
        day = dt.date.fromisoformat(date) if date else ctx.calendar.local_date(now)
    except ValueError:
        raise CliError(f"--date : date invalide {date!r} (format AAAA-MM-JJ)") from None
    batches = letters.produce_batches(ctx, day, now)
    if not batches:
        typer.echo(f"Aucun courrier à imprimer pour le {day:%d/%m/%Y}.")
    for b in batches:
        typer.echo(f"{b.pdf_path} : {b.letters} courriers, {b.pages} pages (bordereau {b.manifest_path.name}).")


@letters_app.command("returns")
def letters_returns(file: Path = typer.Argument(..., help="Fichier des retours (référence, date, npai|ar_signed|ar_unclaimed)"),
                    as_json: bool = typer.Option(False, "--json")) -> None:
    """Enregistre les plis revenus (NPAI) et les accusés de réception des LRAR."""
    from worker.services import letter_returns

    ctx = _context()
    _ensure_db(ctx)
    if not file.exists():
        raise CliError(f"fichier introuvable : {file}")
    report = letter_returns.process_returns(ctx, file, dt.datetime.now(UTC))
    if as_json:
        typer.echo(json.dumps(report, ensure_ascii=False, indent=2, default=str))
        _rejected(len(report["rejected"]))
        return
    typer.echo(f"{file.name} : {report['applied']} retours enregistrés, {report['duplicates']} déjà connus, "
               f"{len(report['rejected'])} lignes rejetées.")
    for r in report["rejected"]:
        typer.echo(f"  ligne {r['line']} : {r['reason']}")
    _rejected(len(report["rejected"]))


@email_app.command("bounces")
def email_bounces(paths: Optional[list[Path]] = typer.Argument(
        None, help="Avis de non-remise : fichiers .eml, ou dossiers Maildir (par défaut RELANCE_BOUNCE_MAILDIR)"),
                  as_json: bool = typer.Option(False, "--json")) -> None:
    """Enregistre les e-mails revenus en non-remise : e-mail marqué en échec, adresse signalée, courriers maintenus."""
    from worker.services import bounces

    ctx = _context()
    _ensure_db(ctx)
    now = dt.datetime.now(UTC)
    if not paths:
        if ctx.settings.bounce_maildir is None:
            raise CliError("aucun fichier indiqué et RELANCE_BOUNCE_MAILDIR n'est pas défini")
        paths = [ctx.settings.bounce_maildir]
    missing = [str(path) for path in paths if not path.exists()]
    if missing:
        raise CliError(f"introuvable : {', '.join(missing)}")
    report = bounces.record_paths(ctx, paths, now)
    if as_json:
        typer.echo(json.dumps(report, ensure_ascii=False, indent=2))
        _rejected(len(report["rejected"]), "fichiers rejetés")
        return
    typer.echo(f"{report['applied']} non-remises enregistrées, {report['duplicates']} déjà connues, "
               f"{report.get('replies', 0)} réponses de bénéficiaires transmises aux agents, "
               f"{len(report['ignored'])} sans effet, {len(report['rejected'])} fichiers rejetés.")
    for item in report["ignored"]:
        typer.echo(f"  sans effet : {item['file']} : {item['reason']}")
    for item in report["rejected"]:
        typer.echo(f"  rejeté : {item['file']} : {item['reason']}")
    _rejected(len(report["rejected"]), "fichiers rejetés")


@messages_app.command("list")
def messages_list(status: Optional[str] = typer.Option(None, "--status", help="ex. technical-failure, failed, pending"),
                  channel: Optional[str] = typer.Option(None, "--channel", help="sms, email ou letter"),
                  since: Optional[str] = typer.Option(None, "--since", help="Changés depuis (AAAA-MM-JJ ou ISO 8601)"),
                  limit: int = typer.Option(50, "--limit", min=1, max=10000),
                  as_json: bool = typer.Option(False, "--json")) -> None:
    """Liste les derniers messages (par date de changement de statut), sans donnée personnelle."""
    from worker.services.message_ops import list_messages

    ctx = _context()
    _ensure_db(ctx)
    if channel is not None and channel not in ("sms", "email", "letter"):
        raise CliError(f"--channel : canal inconnu {channel!r} (sms, email ou letter)")
    from worker.domain import model

    known = (model.PENDING, model.SENDING, model.SENT, model.DISPATCHED, model.DELIVERED, model.FAILED,
             model.TEMPORARY_FAILURE, model.TECHNICAL_FAILURE, model.CANCELLED, model.RETURNED)
    if status is not None and status not in known:
        raise CliError(f"--status : statut inconnu {status!r} (attendu : {', '.join(known)})")
    rows = list_messages(ctx, status=status, channel=channel, since=_parse_dt(since, "--since", ctx), limit=limit)
    if as_json:
        typer.echo(json.dumps(rows, ensure_ascii=False, indent=2, default=str))
        return
    if not rows:
        typer.echo("Aucun message.")
    from worker.domain.describe import local_time

    tz = ctx.calendar.tz
    for r in rows:
        when = local_time(r["status_at"].isoformat(), tz) if r["status_at"] else "-"
        typer.echo(f"{r['id']:>8}  {r['reference']}  {r['step']:<20} {r['channel']:<6} {r['status']:<18} {when}"
                   f"{'  (' + r['error'] + ')' if r['error'] else ''}")


@messages_app.command("retry")
def messages_retry(ids: list[int] = typer.Argument(..., help="Identifiants des messages (relance messages list)"),
                   reason: str = typer.Option(..., "--reason", help="Ce qui a été vérifié chez le fournisseur")) -> None:
    """Remet en envoi des messages en technical-failure, après vérification qu'ils ne sont pas partis."""
    from worker.services.message_ops import MessageOpsError, requeue_message

    ctx = _context()
    _ensure_db(ctx)
    refused = []
    for message_id in ids:
        try:
            done = requeue_message(ctx, message_id, reason=reason, now=dt.datetime.now(UTC))
        except MessageOpsError as exc:
            refused.append(str(exc))
            continue
        typer.echo(f"{done['reference']} ({done['step']}, {done['channel']}) remis en envoi : "
                   "parti au prochain relais, dans la plage d'envoi.")
    if refused:
        raise CliError(" ; ".join(refused))


@app.command()
def agenda(org: Optional[str] = typer.Option(None, "--org", help="Code de l'organisation (ex. CDAS-REDON)"),
           as_json: bool = typer.Option(False, "--json"),
           now: Optional[str] = typer.Option(None, "--now", help="Instant simulé (ISO 8601)")) -> None:
    """Les dossiers qui attendent un agent : décisions, tâches, blocages, orientation, commission."""
    from worker.services.agenda import SECTIONS, agenda as build

    ctx = _context()
    _ensure_db(ctx)
    if org is not None and org not in ctx.territory.organisations:
        raise CliError(f"--org : organisation inconnue {org!r} (voir config/territory.yaml)")
    items = build(ctx, _parse_dt(now, "--now", ctx) or dt.datetime.now(UTC), organisation=org)
    if as_json:
        typer.echo(json.dumps([i.as_json() for i in items], ensure_ascii=False, indent=2))
        return
    if not items:
        typer.echo("Rien n'attend un agent.")
        return
    current = None
    for item in items:
        if (item.organisation, item.section) != current:
            if current is None or current[0] != item.organisation:
                typer.echo(f"{item.organisation}")
            typer.echo(f"  {SECTIONS[item.section]} :")
            current = (item.organisation, item.section)
        since = f"depuis le {item.since:%d/%m/%Y}" if item.since and item.section != "commission" else ""
        typer.echo(f"    {item.case_reference}  {item.external_id}  {item.step or '-'}  {since}".rstrip()
                   + f"\n      → {item.todo}")


@digests_app.command("send")
def digests_send(now: Optional[str] = typer.Option(None, "--now", help="Instant simulé (ISO 8601)"),
                 force: bool = typer.Option(False, "--force", help="Même avant l'heure ou un jour non ouvré")) -> None:
    """Produit (et envoie par e-mail avec le SMTP) les bulletins du jour non encore faits."""
    from worker.services.digests import send_due

    ctx = _context()
    moment = _simulated_now(ctx, now) or dt.datetime.now(UTC)
    _ensure_db(ctx)
    results = send_due(ctx, moment, force=force)
    if not results:
        typer.echo("Aucun bulletin : rien n'attend un agent, ou pas encore l'heure "
                   f"({ctx.settings.digest_time}, jours ouvrés ; --force pour passer outre).")
    labels = {"written": "écrit", "sent": "envoyé", "partly-sent": "envoyé en partie (voir .error)",
              "failed": "non envoyé (voir .error)", "retry": "échec temporaire : réessayé au prochain passage",
              "already": "déjà fait"}
    for r in results:
        count = "" if r.cases is None else f"{r.cases} dossiers, "
        typer.echo(f"{r.organisation} : {count}{labels.get(r.status, r.status)} ({r.path})")


@replies_app.command("list")
def replies_list(org: Optional[str] = typer.Option(None, "--org", help="Organisation (code)"),
                 as_json: bool = typer.Option(False, "--json")) -> None:
    """Les réponses reçues et transmises, pas encore marquées lues."""
    from worker.services import replies

    ctx = _context()
    _ensure_db(ctx)
    items = replies.pending(ctx, org)
    if as_json:
        typer.echo(json.dumps([i.__dict__ for i in items], ensure_ascii=False, indent=2, default=str))
        return
    if not items:
        typer.echo("Aucune réponse à lire.")
    for i in items:
        typer.echo(f"n° {i.id}  {ctx.calendar.local(i.received_at):%d/%m/%Y %H:%M}  "
                   f"{i.case_reference or 'dossier inconnu'}  {i.external_id or ''}  transmise à {i.forwarded_to}")


@replies_app.command("read")
def replies_read(reply_id: int = typer.Argument(..., help="Numéro de la réponse (relance replies list)"),
                 now: Optional[str] = typer.Option(None, "--now", help="Instant simulé (ISO 8601)")) -> None:
    """Marque une réponse comme lue : elle quitte l'agenda."""
    from worker.services import errors, replies

    ctx = _context()
    _ensure_db(ctx)
    try:
        replies.mark_read(ctx, reply_id, _parse_dt(now, "--now", ctx) or dt.datetime.now(UTC))
    except errors.ServiceError as exc:
        raise CliError(str(exc)) from None
    typer.echo(f"Réponse n° {reply_id} marquée lue.")


@rdvs_app.command("list")
def rdvs_list(org: Optional[str] = typer.Option(None, "--org", help="Organisation (code)"),
              as_json: bool = typer.Option(False, "--json")) -> None:
    """Les rendez-vous RDV-Solidarités dont la personne n'a pas été reconnue (sans nom)."""
    from worker.services import rdv_matches

    ctx = _context()
    _ensure_db(ctx)
    items = rdv_matches.pending(ctx, org)
    if as_json:
        typer.echo(json.dumps([i.__dict__ for i in items], ensure_ascii=False, indent=2, default=str))
        return
    if not items:
        typer.echo("Aucun rendez-vous à rapprocher.")
    for i in items:
        when = f"{ctx.calendar.local(i.starts_at):%d/%m/%Y %H:%M}" if i.starts_at else "sans date"
        typer.echo(f"n° {i.id}  {i.organisation}  rendez-vous {i.rdv_id} du {when}  reçu le "
                   f"{ctx.calendar.local(i.received_at):%d/%m/%Y}  {i.note}")


@rdvs_app.command("show")
def rdvs_show(match_id: int = typer.Argument(..., help="Numéro (relance rdvs list)")) -> None:
    """Ce que RDV-Solidarités dit de la personne d'un rendez-vous à rapprocher (nom, date de naissance)."""
    from worker.services import errors, rdv_matches

    ctx = _context()
    _ensure_db(ctx)
    try:
        d = rdv_matches.detail(ctx, match_id)
    except errors.ServiceError as exc:
        raise CliError(str(exc)) from None
    user, pending = d["user"], d["pending"]
    when = f"{ctx.calendar.local(pending.starts_at):%d/%m/%Y %H:%M}" if pending.starts_at else "sans date"
    typer.echo(f"Rendez-vous {pending.rdv_id} du {when} ({d['motif'] or 'motif ?'}, {d['status_label']}) ; "
               f"{pending.note}")
    name = " ".join(x for x in (user.get("first_name"), user.get("last_name")) if x) or "nom inconnu"
    if user.get("birth_name"):
        name += f" (nom de naissance : {user['birth_name']})"
    born = f"née ou né le {d['birth_date']:%d/%m/%Y}" if d["birth_date"] else "date de naissance inconnue"
    typer.echo(f"Personne : {name}, {born}")
    typer.echo(f"Numéro d'allocataire : {user.get('affiliation_number') or 'aucun'}")


@rdvs_app.command("link")
def rdvs_link(match_id: int = typer.Argument(..., help="Numéro (relance rdvs list)"),
              external_id: str = typer.Argument(..., help="Matricule de la personne"),
              now: Optional[str] = typer.Option(None, "--now", help="Instant simulé (ISO 8601)")) -> None:
    """Rapproche un rendez-vous d'une personne : il est appliqué à son dossier."""
    from worker.services import errors, rdv_matches

    ctx = _context()
    _ensure_db(ctx)
    try:
        linked = rdv_matches.link(ctx, match_id, external_id, _parse_dt(now, "--now", ctx) or dt.datetime.now(UTC),
                                  "cli")
    except errors.ServiceError as exc:
        raise CliError(str(exc)) from None
    events = ", ".join(linked.events) or "aucun événement (rien ne change)"
    typer.echo(f"Rendez-vous n° {match_id} rapproché de {linked.external_id} "
               f"({linked.case_reference or 'sans dossier'}) : {events}.")


@rdvs_app.command("discard")
def rdvs_discard(match_id: int = typer.Argument(..., help="Numéro (relance rdvs list)"),
                 now: Optional[str] = typer.Option(None, "--now", help="Instant simulé (ISO 8601)")) -> None:
    """Écarte un rendez-vous qui ne concerne personne que Relance suit ; ce qu'il disait de la personne est effacé."""
    from worker.services import errors, rdv_matches

    ctx = _context()
    _ensure_db(ctx)
    try:
        rdv_matches.discard(ctx, match_id, _parse_dt(now, "--now", ctx) or dt.datetime.now(UTC), "cli")
    except errors.ServiceError as exc:
        raise CliError(str(exc)) from None
    typer.echo(f"Rendez-vous n° {match_id} écarté.")


@commission_app.command("pack")
def commission_pack(session: Optional[str] = typer.Option(None, "--session",
                                                        help="Date de la séance (AAAA-MM-JJ) ; défaut : la prochaine"),
                    out: Optional[Path] = typer.Option(None, "--out", help="Fichier HTML à écrire"),
                    now: Optional[str] = typer.Option(None, "--now", help="Instant simulé (ISO 8601)")) -> None:
    """Écrit le dossier de séance de la commission : faits, préavis, réponses, motifs et décisions."""
    from worker.services import commission, errors

    ctx = _context()
    _ensure_db(ctx)
    try:
        path, pack = commission.write_pack(ctx, _parse_dt(now, "--now", ctx) or dt.datetime.now(UTC),
                                           _parse_date(session, "--session"), out)
    except errors.ServiceError as exc:
        raise CliError(str(exc)) from None
    typer.echo(f"Séance du {pack.session:%d/%m/%Y} : {len(pack.cases)} dossier(s) — {path}")


@crsa_app.command("pack")
def crsa_pack(session: str = typer.Argument(..., help="Date de la séance (AAAA-MM-JJ)"),
              out: Optional[Path] = typer.Option(None, "--out", help="Dossier où écrire les PDF"),
              now: Optional[str] = typer.Option(None, "--now", help="Instant simulé (ISO 8601)")) -> None:
    """Dossier de séance en PDF : la séance entière et un PDF par dossier (comme l'espace agents)."""
    from worker.services import commission, errors

    ctx = _context()
    _ensure_db(ctx)
    try:
        folder, pack, files = commission.write_pdfs(ctx, _parse_dt(now, "--now", ctx) or dt.datetime.now(UTC),
                                                    _parse_date(session, "SESSION_DATE"), out)
    except errors.ServiceError as exc:
        raise CliError(str(exc)) from None
    typer.echo(f"Séance du {pack.session:%d/%m/%Y} : {len(pack.cases)} dossier(s), {len(files)} PDF dans {folder}")
    for f in files:
        typer.echo(f"  {f.name}")


@agents_app.command("add")
def agents_add(email: str = typer.Argument(..., help="Adresse e-mail professionnelle (celle de ProConnect)"),
               name: str = typer.Option(..., "--name", help="Prénom et nom, affichés comme auteur des décisions"),
               role: str = typer.Option("agent", "--role", help="agent (son organisation), department (tous les "
                                                                "dossiers) ou ops (lecture seule)"),
               org: Optional[str] = typer.Option(None, "--org", help="Organisation (config/territory.yaml), "
                                                                   "obligatoire pour le rôle agent")) -> None:
    """Inscrit un agent (ou met à jour son nom, son rôle, son organisation et le réactive)."""
    from worker.services import agents, errors

    ctx = _context()
    _ensure_db(ctx)
    try:
        agent, created = agents.save_agent(ctx, email=email, name=name, role=role, organisation=org,
                                           now=dt.datetime.now(UTC))
    except errors.ServiceError as exc:
        raise CliError(str(exc)) from None
    typer.echo(f"Agent n° {agent.id} {'inscrit' if created else 'mis à jour'} : {agent.email}, "
               f"{agent.role_label}{', ' + agent.organisation if agent.organisation else ''}.")


@agents_app.command("list")
def agents_list(as_json: bool = typer.Option(False, "--json")) -> None:
    """Les agents inscrits, par organisation."""
    from worker.services import agents

    ctx = _context()
    _ensure_db(ctx)
    rows = agents.list_agents(ctx)
    if as_json:
        typer.echo(json.dumps([r.__dict__ for r in rows], ensure_ascii=False, indent=2))
        return
    if not rows:
        typer.echo("Aucun agent inscrit : relance agents add EMAIL --name \"Prénom Nom\" --org ORG")
    for r in rows:
        typer.echo(f"{r.id:>5}  {r.email:<40} {r.role:<10} {r.organisation or '-':<20} "
                   f"{'actif' if r.active else 'désactivé'}  {r.name}")


@agents_app.command("disable")
def agents_disable(email: str = typer.Argument(..., help="Adresse e-mail de l'agent")) -> None:
    """Désactive un agent : il ne peut plus se connecter, ses sessions ouvertes prennent fin."""
    from worker.services import agents, errors

    ctx = _context()
    _ensure_db(ctx)
    try:
        agent = agents.disable_agent(ctx, email, dt.datetime.now(UTC))
    except errors.ServiceError as exc:
        raise CliError(str(exc)) from None
    typer.echo(f"Agent n° {agent.id} désactivé ; ses sessions sont closes.")


@app.command()
def orientation(as_json: bool = typer.Option(False, "--json"),
                now: Optional[str] = typer.Option(None, "--now", help="Instant simulé (ISO 8601)")) -> None:
    """Dossiers en attente d'orientation et leur échéance légale de 6 semaines (CASF D262-65-2)."""
    from worker.domain.describe import days_left
    from worker.services.orientation import report

    ctx = _context()
    _ensure_db(ctx)
    moment = _parse_dt(now, "--now", ctx) or dt.datetime.now(UTC)
    waiting = report(ctx, moment)
    if as_json:
        typer.echo(json.dumps([w.as_json() for w in waiting], ensure_ascii=False, indent=2))
        return
    if not waiting:
        typer.echo("Aucun dossier en attente d'orientation.")
        return
    typer.echo(f"{len(waiting)} dossiers en attente d'orientation (échéance : 6 semaines après réception du flux) :")
    for w in waiting:
        left = days_left(w.days_left)
        typer.echo(f"  {w.case_reference}  {w.external_id}  reçu le {w.received_on:%d/%m/%Y}, "
                   f"échéance le {w.deadline:%d/%m/%Y} ({left}){'  [signalé]' if w.flagged else ''}"
                   f"  étape {w.step or '-'}")


@app.command()
def report(start: Optional[str] = typer.Option(None, "--from", help="Premier jour (AAAA-MM-JJ) ; défaut : le mois "
                                                                  "du premier droit"),
           end: Optional[str] = typer.Option(None, "--to", help="Dernier jour (AAAA-MM-JJ) ; défaut : aujourd'hui"),
           org: Optional[str] = typer.Option(None, "--org", help="Une organisation (ex. CDAS-REDON) ; défaut : toutes"),
           as_json: bool = typer.Option(False, "--json", help="Le rapport en JSON"),
           html: Optional[Path] = typer.Option(None, "--html", help="Écrire le rapport HTML autonome (graphiques "
                                                                    "compris) dans ce fichier"),
           xlsx: Optional[Path] = typer.Option(None, "--xlsx", help="Écrire le classeur XLSX (une feuille par tableau)"),
           now: Optional[str] = typer.Option(None, "--now", help="Instant simulé (ISO 8601)")) -> None:
    """Tableau de bord : entrants, délais, rendez-vous, procédure, messages, orientation (docs/indicators.md)."""
    from worker.services import errors, report as report_service, report_output

    if sum(1 for chosen in (as_json, html, xlsx) if chosen) > 1:
        _fail("choisir une seule sortie : --json, --html FICHIER ou --xlsx FICHIER", 2)
    ctx = _context()
    _ensure_db(ctx)
    try:
        built = report_service.build(ctx, _parse_dt(now, "--now", ctx) or dt.datetime.now(UTC),
                                     _parse_date(start, "--from"), _parse_date(end, "--to"), org)
        if html or xlsx:
            path = report_output.write(ctx, built, html or xlsx, "html" if html else "xlsx")
            typer.echo(f"Rapport écrit : {path} ({built.organisation_label}, du {built.start:%d/%m/%Y} "
                       f"au {built.end:%d/%m/%Y}).")
            return
    except errors.ServiceError as exc:
        raise CliError(str(exc)) from None
    typer.echo(report_output.to_json(built) if as_json else report_output.to_text(built))


@export_app.command("evaluation")
def export_evaluation(file: Path = typer.Argument(..., help="Fichier à écrire (.xlsx ou .csv), mode 0600"),
                      purpose: Optional[str] = typer.Option(None, "--purpose", help="Finalité et destinataire de "
                                                                                    "l'export (journal d'audit)"),
                      start: Optional[str] = typer.Option(None, "--from", help="Droits ouverts à partir de ce jour"),
                      end: Optional[str] = typer.Option(None, "--to", help="Droits ouverts jusqu'à ce jour"),
                      now: Optional[str] = typer.Option(None, "--now", help="Instant simulé (ISO 8601)")) -> None:
    """Données de l'évaluation (annexe E), pseudonymisées : une ligne par personne et droit."""
    import getpass

    from worker.services import errors, evaluation

    ctx = _context()
    _ensure_db(ctx)
    try:
        user = getpass.getuser()
    except Exception:  # noqa: BLE001 - no user name in this environment: still recorded, as unknown
        user = "inconnu"
    try:
        result = evaluation.export(ctx, file, purpose=purpose or "", actor=f"cli:{user}",
                                   now=_parse_dt(now, "--now", ctx) or dt.datetime.now(UTC),
                                   start=_parse_date(start, "--from"), end=_parse_date(end, "--to"))
    except errors.ServiceError as exc:
        raise CliError(str(exc)) from None
    typer.echo(f"Export d'évaluation écrit : {result.path} — {result.people} personnes, {result.rows} lignes "
               "(inscrit au journal d'audit).")


@app.command()
def api(host: Optional[str] = typer.Option(None, "--host"), port: Optional[int] = typer.Option(None, "--port")) -> None:
    """Lance le service HTTP (rappels de statut Twilio, événements des agents, santé)."""
    import uvicorn

    from worker.bootstrap import configure_logging

    ctx = _context()
    _ensure_db(ctx)
    configure_logging(ctx.settings)
    # Access log: worker.entrypoints.api_guard (no query string). Behind the TLS proxy, set
    # FORWARDED_ALLOW_IPS to its address so that client addresses are the real ones (docs/ops.md).
    uvicorn.run("worker.entrypoints.api:create_app", factory=True, host=host or ctx.settings.api_host,
                port=port or ctx.settings.api_port, log_level=ctx.settings.log_level.lower(), access_log=False,
                log_config=None)


@app.command()
def worker(queues: str = typer.Option(",".join(("ingest", "cases", "sms", "letters", "email", "maintenance")),
                                      "--queues", "-Q", help="Files à consommer (séparées par des virgules)"),
           concurrency: int = typer.Option(1, "--concurrency", "-c"),
           name: Optional[str] = typer.Option(None, "--name", "-n")) -> None:
    """Lance un worker Celery sur les files indiquées (Redis requis)."""
    ctx = _context()
    if ctx.settings.eager:
        raise CliError("RELANCE_BROKER_URL n'est pas défini : les tâches s'exécutent déjà dans le processus "
                       "(mode embarqué) ; indiquez une URL Redis pour lancer des workers")
    _ensure_db(ctx)
    from worker.bootstrap import require_channel_secrets
    from worker.domain.policy import ConfigError

    try:
        require_channel_secrets(ctx, queues)
    except ConfigError as exc:
        raise CliError(f"configuration invalide — {exc}") from None
    from worker.entrypoints.celery_app import celery
    from worker.entrypoints.queues import node_name

    argv = ["worker", "-Q", queues, "-c", str(concurrency), "-E", "--loglevel", ctx.settings.log_level,
            "--without-gossip", "--without-mingle"]
    # Each worker its own node name (Flower shows one line per name): the queue group's, by default.
    argv += ["-n", name or node_name(queues)]
    celery.worker_main(argv)


@app.command()
def flower(port: int = typer.Option(5555, "--port"), address: str = typer.Option("127.0.0.1", "--address")) -> None:
    """Lance Flower (supervision des files et des tâches), avec authentification."""
    ctx = _context()
    if ctx.settings.eager:
        raise CliError("Flower a besoin d'un broker Redis (RELANCE_BROKER_URL)")
    if not ctx.settings.flower_password:
        raise CliError("RELANCE_FLOWER_PASSWORD est obligatoire : Flower n'est jamais lancé sans authentification")
    from worker.entrypoints.celery_app import celery
    from worker.entrypoints.flower_readonly import make_read_only

    make_read_only()  # no task launching, revoking or worker control from Flower (docs/ops.md)
    celery.start(["flower", f"--port={port}", f"--address={address}",
                  f"--basic-auth={ctx.settings.flower_user}:{ctx.settings.flower_password}"])


_USAGE_FR = (
    ("No such option: ", "option inconnue : "),
    ("No such command ", "commande inconnue : "),
    ("Missing argument ", "argument manquant : "),
    ("Missing option ", "option manquante : "),
    ("Invalid value for ", "valeur invalide pour "),
    ("Got unexpected extra argument", "argument en trop"),
    ("requires an argument", "attend une valeur"),
)


def _french_usage(message: str) -> str:
    for en, fr in _USAGE_FR:
        message = message.replace(en, fr)
    return message


def main() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s %(message)s",
                        datefmt="%Y-%m-%dT%H:%M:%S%z")  # times with their zone
    try:
        # Without standalone mode click returns typer.Exit's code instead of exiting.
        code = app(standalone_mode=False)
        if isinstance(code, int) and code:
            sys.exit(code)
    except CliError as exc:
        typer.echo(f"Erreur : {exc}", err=True)
        sys.exit(1)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        typer.echo("Interrompu.", err=True)
        sys.exit(130)
    except KeyboardInterrupt:
        typer.echo("Interrompu.", err=True)
        sys.exit(130)
    except Exception as exc:  # click usage errors and the unexpected: one line, no traceback
        # typer may ship its own copy of click: recognise its exceptions by class name.
        names = {cls.__name__ for cls in type(exc).__mro__}
        if "ClickException" in names and hasattr(exc, "format_message"):
            typer.echo(f"Erreur : {_french_usage(exc.format_message())}", err=True)
            sys.exit(2 if "UsageError" in names else getattr(exc, "exit_code", 1))
        logging.getLogger("relance").debug("unexpected error", exc_info=True)
        detail = _one_line(exc)
        if type(exc).__module__.split(".")[0] in ("sqlalchemy", "psycopg", "sqlite3"):  # may quote a row
            detail = "erreur de la base de données (détail non affiché : il peut citer des données personnelles)"
        typer.echo(f"Erreur inattendue : {type(exc).__name__}: {detail}", err=True)
        sys.exit(EXIT_INTERNAL)


if __name__ == "__main__":
    main()
