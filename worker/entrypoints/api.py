"""``relance api``: the HTTP API (FastAPI, served by uvicorn).

* ``POST /twilio/status/{message_id}``: Twilio's message status callbacks
  (form-encoded, signed with ``X-Twilio-Signature``);
* ``POST /events``: agents' tools record events (``X-Api-Key``), like
  ``relance event`` does on the command line;
* ``POST /webhooks/rdv-solidarites/{ORG}``: RDV-Solidarités' notifications of appointments
  (signed with ``X-Lapin-Signature``, a secret per organisation: docs/rdv-solidarites.md);
* ``GET /health`` (the process answers) and ``GET /ready`` (the database and,
  when not eager, the broker answer);
* ``GET /openapi.json``: the schema, behind the API key.

Every date is bounded (2000-01-01 … now + 2 years), every id fits a BIGINT
(:mod:`worker.entrypoints.validation`); bodies are capped and failed
authentications throttled per client address (:mod:`worker.entrypoints.api_guard`).

Error messages are in French (agents read them). Logs carry ids, statuses
and error codes only: never a phone number, a name, an external id or the
text of a reason.
"""
from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hmac
import logging
from typing import Annotated, Any, Callable
from zoneinfo import ZoneInfo

from fastapi import FastAPI, Header, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, field_validator, model_validator
from starlette.datastructures import QueryParams

from worker.adapters.broker import ping_broker
from worker.adapters.store.session import ping_database
from worker.services import cases, errors, rdv_solidarites, sending
from worker.domain.model import EVENT_TYPES, REVIEW_DECISIONS
from worker.adapters.channels.twilio_callbacks import SIGNATURE_HEADER, parse_status_callback, status_callback_url, verify_signature
from worker.adapters import rdv_solidarites as rdvs
from worker.entrypoints.api_guard import THROTTLED, AccessLog, AuthThrottle, BodyLimit, client_address, openapi_extras
from worker.entrypoints.validation import InputError, check_event_dates, check_field, parse_id

log = logging.getLogger("relance.api")
UTC = dt.timezone.utc

MAX_FUTURE = dt.timedelta(minutes=5)  # an event's `at` may not be later than now + this
WEBHOOK_PREFIX = "/webhooks/rdv-solidarites/"
READY_TIMEOUT = 3.0  # seconds for each readiness check


def _utcnow() -> dt.datetime:
    return dt.datetime.now(UTC)


# --- POST /events: the request body -----------------------------------------------------------------


def _iso_string(value: Any) -> Any:
    """Dates travel as ISO 8601 strings (no Unix timestamps, which are easy to get wrong)."""
    if value is None or isinstance(value, (dt.date, dt.datetime)):
        return value
    if not isinstance(value, str):
        raise ValueError("une chaîne au format ISO 8601 est attendue")
    return value.strip()


IsoDateTime = Annotated[dt.datetime, BeforeValidator(_iso_string)]
IsoDate = Annotated[dt.date, BeforeValidator(_iso_string)]


class EventIn(BaseModel):
    """One event about a person, as agents' tools send it.

    Dates without a time zone are local times of the territory (Europe/Paris
    by default); a date alone means midnight.
    """

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    type: str
    external_id: str = Field(min_length=1, max_length=64)
    at: IsoDateTime | None = None
    until: IsoDateTime | None = None
    appointment_at: IsoDateTime | None = None
    decision: str | None = None
    to: str | None = Field(default=None, max_length=32)
    reason: str | None = Field(default=None, max_length=2000)
    receipt_on: IsoDate | None = None
    rate: int | None = Field(default=None, ge=0, le=100)  # review_decision proceed / sanction_decided (%)
    months: int | None = Field(default=None, ge=0, le=24)
    repeat: bool = False
    start_on: IsoDate | None = None  # sanction_decided: first day of the suspension
    # legitimate_reason (and review_decision legitimate_reason): its category (config/paths.yaml), and for a
    # category without a natural end (homelessness, incarceration) the review date instead of `until`.
    category: str | None = Field(default=None, max_length=32)
    review_on: IsoDate | None = None
    large_print: bool | None = None  # preferences_updated: letters in 16 pt
    language: str | None = Field(default=None, max_length=8)  # preferences_updated: fr | en | ar
    idempotency_key: str | None = Field(default=None, min_length=1, max_length=200)

    @field_validator("*")
    @classmethod
    def _bounded(cls, value: Any, info) -> Any:
        # No control characters, no date before 2000 (worker.entrypoints.validation); the
        # upper bounds depend on "now" and are checked by check_event_dates.
        return check_field(info.field_name, value)

    @model_validator(mode="after")
    def _required_by_type(self) -> "EventIn":
        if self.type not in EVENT_TYPES:
            raise ValueError(f"type d'événement inconnu : {self.type!r} (attendu : {', '.join(EVENT_TYPES)})")
        if self.type == "rdv_booked" and self.appointment_at is None:
            raise ValueError("rdv_booked : la date du rendez-vous (appointment_at) est obligatoire")
        if self.type == "legitimate_reason" and not self.category:
            raise ValueError("legitimate_reason : la catégorie du motif (category) est obligatoire")
        if self.type == "reoriented" and not self.to:
            raise ValueError("reoriented : le nouveau parcours (to) est obligatoire")
        if self.type == "review_decision":
            if self.decision not in REVIEW_DECISIONS:
                raise ValueError(f"review_decision : decision doit valoir {', '.join(REVIEW_DECISIONS)}")
            if self.decision == "legitimate_reason" and not self.category:
                raise ValueError("review_decision legitimate_reason : la catégorie du motif (category) est obligatoire")
        if self.type == "sanction_decided" and (self.rate is None or self.months is None or self.start_on is None):
            raise ValueError("sanction_decided : le taux (rate), la durée (months) et le début (start_on) sont obligatoires")
        return self




def _french_error(err: dict) -> dict:
    """One pydantic/FastAPI validation error, explained in French."""
    loc = [str(p) for p in err.get("loc", ()) if p not in ("body",)]
    field = ".".join(loc) or None
    kind = err.get("type", "")
    ctx = err.get("ctx") or {}
    if kind == "missing":
        message = "champ obligatoire"
    elif kind == "extra_forbidden":
        message = "champ inconnu (champs acceptés : " + ", ".join(EventIn.model_fields) + ")"
    elif kind in ("json_invalid", "json_type"):
        message = "le corps de la requête n'est pas un JSON valide"
    elif kind in ("model_type", "model_attributes_type", "dict_type"):
        message = "un objet JSON est attendu"
    elif kind.startswith("datetime"):
        message = "date-heure invalide (format ISO 8601 attendu, ex. 2024-06-03T10:00:00+02:00)"
    elif kind.startswith("date"):
        message = "date invalide (format AAAA-MM-JJ attendu)"
    elif kind == "string_type":
        message = "une chaîne de caractères est attendue"
    elif kind == "string_too_short":
        message = "ne doit pas être vide"
    elif kind == "string_too_long":
        message = f"trop long ({ctx.get('max_length')} caractères au plus)"
    elif kind in ("int_parsing", "int_type", "int_from_float"):
        message = "un nombre entier est attendu"
    elif kind in ("greater_than_equal", "less_than_equal"):
        bound = "au moins" if kind == "greater_than_equal" else "au plus"
        message = f"{bound} {ctx.get('ge', ctx.get('le'))}"
    elif kind in ("bool_parsing", "bool_type"):
        message = "true ou false attendu"
    elif kind == "value_error":
        message = str(ctx.get("error") or err.get("msg", "valeur invalide"))
    else:
        message = "valeur invalide"
    return {"field": field, "message": message}


def _validation_response(errors: list[dict]) -> JSONResponse:
    items = [_french_error(e) for e in errors]
    summary = "; ".join(f"{i['field']} : {i['message']}" if i["field"] else i["message"] for i in items)
    return JSONResponse(status_code=422, content={"detail": f"requête invalide — {summary}", "errors": items})


# --- the application --------------------------------------------------------------------------------


def create_app(app_ctx=None, *, clock: Callable[[], dt.datetime] | None = None) -> FastAPI:
    """The FastAPI application on ``app_ctx`` (the process-wide context by default).

    ``clock`` returns the current aware datetime; the real UTC clock unless a
    test gives another one. ``uvicorn worker.entrypoints.api:create_app --factory`` calls
    it without arguments.
    """
    if app_ctx is None:
        from worker.bootstrap import get_app

        app_ctx = get_app()
    now_fn = clock or _utcnow
    tz = ZoneInfo(app_ctx.settings.timezone)

    @contextlib.asynccontextmanager
    async def lifespan(_app):
        from worker.bootstrap import startup_line

        log.info(startup_line(app_ctx.settings, "api", "- (publishes nothing; reads the database)"))
        yield

    # The schema is served behind the API key (GET /openapi.json below); no HTML docs (docs/api.md).
    api = FastAPI(title="Relance", version="1", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)
    api.state.app_ctx = app_ctx
    api.add_middleware(BodyLimit, max_bytes=app_ctx.settings.api_max_body_bytes,
                       limits={WEBHOOK_PREFIX: app_ctx.settings.rdv_solidarites_max_body_bytes})
    api.add_middleware(AccessLog)
    throttle = AuthThrottle(app_ctx.settings.api_auth_failures_per_minute)
    api.state.auth_throttle = throttle
    event_schema = EventIn.model_json_schema()
    event_schema["properties"]["type"]["enum"] = list(EVENT_TYPES)  # documented (checked by the model)
    extras = openapi_extras(event_schema)

    @api.exception_handler(RequestValidationError)
    async def _on_validation_error(request: Request, exc: RequestValidationError):
        return _validation_response(list(exc.errors()))

    # --- health ---------------------------------------------------------------------------------

    @api.get("/health")
    def health() -> dict:
        return {"status": "ok"}

    @api.get("/ready")
    async def ready():
        checks: dict[str, str] = {}
        failed = False
        for name, check in (("database", _check_database), ("broker", _check_broker)):
            try:
                checks[name] = await asyncio.wait_for(run_in_threadpool(check, app_ctx), READY_TIMEOUT)
            except asyncio.TimeoutError:
                checks[name] = f"indisponible (pas de réponse en {READY_TIMEOUT:g} s)"
                failed = True
            except Exception as exc:  # noqa: BLE001 - any failure means "not ready"
                # The exception's text may quote a URL with credentials: its type only.
                checks[name] = f"indisponible ({type(exc).__name__})"
                failed = True
        if failed:
            log.warning("not ready: %s", ", ".join(f"{k}={v}" for k, v in checks.items()))
            return JSONResponse(status_code=503, content={"status": "unavailable", "checks": checks})
        return {"status": "ready", "checks": checks}

    # --- Twilio status callbacks ----------------------------------------------------------------

    @api.post("/twilio/status/{message_id}", status_code=204, openapi_extra=extras["twilio"],
              responses={403: {"description": "signature absente ou invalide"}, 409: {"description": "MessageSid"},
                         413: {"description": "corps trop volumineux"}, 422: {"description": "identifiant hors bornes"},
                         429: {"description": "trop d'échecs d'authentification"}})
    async def twilio_status(message_id: str, request: Request):
        settings = app_ctx.settings
        address = client_address(request)
        if throttle.blocked(address):
            return JSONResponse(status_code=429, content=THROTTLED, headers={"Retry-After": "60"})
        body = await request.body()  # at most RELANCE_API_MAX_BODY_BYTES (BodyLimit)
        params = QueryParams(body.decode("utf-8", "replace"))
        url = _public_url(settings.public_base_url, message_id, request)
        signature = request.headers.get(SIGNATURE_HEADER)
        if url is None or not verify_signature(settings.twilio_auth_token or "", url, params, signature):
            log.warning("twilio callback for message %s rejected: %s", message_id[:20],
                        "missing signature" if not signature else "invalid signature")
            throttle.failed(address, "twilio signature", "/twilio/status")
            return JSONResponse(status_code=403, content={"detail": "signature Twilio absente ou invalide"})
        callback = parse_status_callback(params)
        msg_id = None
        if message_id.strip().isdigit():
            try:
                msg_id = parse_id(message_id, "message_id")
            except InputError as exc:
                # Not an id of ours (they fit a BIGINT): refused before any query.
                return JSONResponse(status_code=422, content={"detail": f"requête invalide — {exc}"})
        outcome = await run_in_threadpool(sending.record_sms_callback, app_ctx, msg_id, callback, now_fn())
        if outcome == "conflict":
            return JSONResponse(status_code=409,
                                content={"detail": "MessageSid ne correspond pas au message de ce lien de rappel"})
        return Response(status_code=204)

    # --- RDV-Solidarités' webhooks (issue 16) ------------------------------------------------------

    @api.post(WEBHOOK_PREFIX + "{organisation}", openapi_extra=extras["rdvs"],
              responses={401: {"description": "signature absente ou invalide"},
                         404: {"description": "organisation sans secret configuré"},
                         413: {"description": "corps trop volumineux"}, 422: {"description": "notification illisible"},
                         429: {"description": "trop d'échecs d'authentification"}})
    async def rdv_solidarites_webhook(organisation: str, request: Request):
        """One notification of RDV-Solidarités (docs/rdv-solidarites.md): checked against the organisation's
        secret on the raw body, then taken in once (worker.services.rdv_solidarites)."""
        address = client_address(request)
        if throttle.blocked(address):
            return JSONResponse(status_code=429, content=THROTTLED, headers={"Retry-After": "60"})
        code = organisation[:64]
        secrets = (app_ctx.settings.rdv_solidarites_secret_list(code)
                   if code in app_ctx.territory.organisations else [])
        if not secrets:
            return JSONResponse(status_code=404, content={
                "detail": "aucun webhook RDV-Solidarités pour cette organisation (RELANCE_RDV_SOLIDARITES_SECRETS)"})
        body = await request.body()  # at most RELANCE_RDV_SOLIDARITES_MAX_BODY_BYTES (BodyLimit)
        signature = request.headers.get(rdvs.SIGNATURE_HEADER)
        if not rdvs.verify(secrets, body, signature):
            log.warning("rdv-solidarites webhook for %s rejected: %s", code,
                        "missing signature" if not signature else "invalid signature")
            throttle.failed(address, "rdv-solidarites signature", WEBHOOK_PREFIX + code)
            return JSONResponse(status_code=401, content={"detail": "signature X-Lapin-Signature absente ou invalide"})
        try:
            result = await run_in_threadpool(rdv_solidarites.receive, app_ctx, code, body, now_fn())
        except errors.ServiceError as exc:
            log.info("rdv-solidarites webhook for %s refused (422)", code)
            return JSONResponse(status_code=422, content={"detail": f"notification refusée — {exc}"})
        return JSONResponse(status_code=200, content=result.as_json())

    # --- events -----------------------------------------------------------------------------------

    def refused(request: Request, x_api_key: str | None) -> JSONResponse | None:
        """The answer when the agents' API is off, the address throttled or the key wrong; None when the key is good."""
        keys = app_ctx.settings.api_key_list
        if not keys:
            return JSONResponse(status_code=503, content={
                "detail": "API des événements désactivée (aucune clé configurée : RELANCE_API_KEYS)"})
        address = client_address(request)
        if throttle.blocked(address):
            return JSONResponse(status_code=429, content=THROTTLED, headers={"Retry-After": "60"})
        if not x_api_key or not any(hmac.compare_digest(x_api_key.encode(), k.encode()) for k in keys):
            throttle.failed(address, "missing API key" if not x_api_key else "wrong API key", request.url.path[:80])
            return JSONResponse(status_code=401, content={"detail": "clé d'API absente ou invalide (en-tête X-Api-Key)"},
                                headers={"WWW-Authenticate": "X-Api-Key"})
        return None

    @api.get("/openapi.json", include_in_schema=False)
    async def openapi_schema(request: Request, x_api_key: Annotated[str | None, Header()] = None):
        """The OpenAPI schema, for the agents' tools: behind the API key like the routes it describes."""
        if (answer := refused(request, x_api_key)) is not None:
            return answer
        return JSONResponse(api.openapi())

    @api.get("/agenda")
    async def get_agenda(request: Request, org: str | None = Query(default=None, max_length=64),
                         x_api_key: Annotated[str | None, Header()] = None):
        """What waits for an agent (worker.services.agenda), for one organisation or all."""
        if (answer := refused(request, x_api_key)) is not None:
            return answer
        if org is not None and org not in app_ctx.territory.organisations:
            return JSONResponse(status_code=404, content={"detail": f"organisation inconnue : {org}"})
        from worker.services.agenda import agenda

        items = await run_in_threadpool(agenda, app_ctx, now_fn(), org)
        return JSONResponse(content=[i.as_json() for i in items])

    @api.post("/events", status_code=201, openapi_extra=extras["events"])
    async def post_event(request: Request, x_api_key: Annotated[str | None, Header()] = None):
        if (answer := refused(request, x_api_key)) is not None:
            return answer
        raw = await request.body()
        try:
            event = EventIn.model_validate_json(raw or b"")
        except ValidationError as exc:
            return _validation_response(exc.errors())
        now = now_fn()
        try:
            # Every date between 2000-01-01 and now + 2 years (`at`: now + 5 minutes).
            check_event_dates(event, now, tz)
        except InputError as exc:
            return _validation_response([{"loc": (exc.field,), "type": "value_error", "ctx": {"error": exc.message}}])
        at = _aware(event.at, tz)
        moment = at or now
        if event.type == "reoriented" and event.to not in app_ctx.policy.paths:
            return JSONResponse(status_code=422, content={
                "detail": f"reoriented : parcours inconnu {event.to!r} (attendu : {', '.join(app_ctx.policy.paths)})"})
        receipt_on = event.receipt_on
        if receipt_on is None and event.type in ("ar_signed", "ar_unclaimed"):
            receipt_on = app_ctx.calendar.local_date(moment)
        try:
            result = await run_in_threadpool(
                lambda: cases.apply_event(
                    app_ctx, external_id=event.external_id, type=event.type, now=moment,
                    until=_aware(event.until, tz), appointment_at=_aware(event.appointment_at, tz),
                    decision=event.decision, to=event.to, reason=event.reason, receipt_on=receipt_on,
                    source="api", idempotency_key=event.idempotency_key, rate=event.rate, months=event.months,
                    repeat=event.repeat, start_on=event.start_on, category=event.category,
                    review_on=event.review_on, large_print=event.large_print, language=event.language))
        except errors.IdempotencyConflict as exc:  # the key was used for another content: nothing recorded
            log.info("event %s refused (409: idempotency key reused with other content)", event.type)
            return JSONResponse(status_code=409, content={"detail": str(exc)})
        except errors.ServiceError as exc:
            if not await run_in_threadpool(cases.person_exists, app_ctx, event.external_id):
                return JSONResponse(status_code=404, content={"detail": "personne inconnue"})
            log.info("event %s refused (422)", event.type)
            return JSONResponse(status_code=422, content={"detail": str(exc)})
        log.info("event %s recorded as #%s: %s", event.type, result.event_id, result.status)
        payload = {"event_id": result.event_id, "status": result.status, "note": result.note,
                   "case": result.case_id}
        return JSONResponse(status_code=200 if result.status == "duplicate" else 201, content=payload)

    from worker.entrypoints.web import create_web_app  # the agents' workspace: HTML pages under /espace

    api.mount("/espace", create_web_app(app_ctx, now_fn))
    return api


# --- helpers ------------------------------------------------------------------------------------------


def _aware(value: dt.datetime | None, tz: ZoneInfo) -> dt.datetime | None:
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=tz)
    return value.astimezone(UTC)


def _public_url(base: str | None, message_id: str, request: Request) -> str | None:
    """The URL Twilio called, rebuilt as the SMS channel built it: the public base
    URL + the route (+ the query string, if any). Never ``request.url``, which is
    the internal URL behind a proxy."""
    if not base:
        return None
    url = status_callback_url(base, message_id)
    query = request.scope.get("query_string") or b""
    if query:
        url += "?" + query.decode("latin-1")
    return url


def _check_database(app_ctx) -> str:
    ping_database(app_ctx.db_url)
    return "ok"


def _check_broker(app_ctx) -> str:
    settings = app_ctx.settings
    if settings.eager:
        return "ok (exécution locale, sans broker)"
    ping_broker(settings.broker_url)
    return "ok"
