"""E-mail channel: plain SMTP (optionally STARTTLS or implicit TLS, optionally AUTH).

The beneficiaries' channel keeps its connections open (:class:`SmtpPool`, as many as the
messages a worker sends at once: ``RELANCE_SEND_CONCURRENCY``): a connection is reset
(``RSET``) before it is used again, and replaced when the server closed it meanwhile, before
anything is sent. The agents' digests open one connection per message.

Error mapping (see :mod:`worker.adapters.channels.base`):

* recipient refused with a 5xx (550, 551, 553, ...), at RCPT or at end of DATA
  -> :class:`RecipientError` (``code`` = the SMTP code);
* any 4xx reply (421, 450, 451, 452, ...), connection refused/reset, timeouts,
  server disconnects -> :class:`RetryableError`;
* authentication refused -> :class:`TechnicalError` (``code="auth"``);
* TLS problems (certificate not verified, handshake failure), STARTTLS or AUTH
  not offered, sender refused, other 5xx -> :class:`TechnicalError`.

Privacy: neither addresses nor bodies are ever logged or put into exception
messages (server replies, which often echo the address, are left out too), and
exceptions are raised ``from None`` so tracebacks do not carry smtplib's
exceptions, whose text contains the recipient. Only the message reference
(which carries no personal data) and SMTP codes are logged.

Bounces: with a ``bounce_key``, each e-mail carries ``X-Relance-Token``, an
HMAC of its reference (:func:`worker.adapters.dsn.bounce_token`), and with
``verp`` its envelope sender is ``<local>+<reference>.<token>@<domain>`` (the
mail server must deliver that address to the bounce Maildir: Postfix's
``recipient_delimiter = +``). A delivery status notification is applied only
if it gives the token back (:mod:`worker.services.bounces`).

If the connection drops after the end of DATA but before the server's reply,
the message may have been accepted: the retry then sends it twice. This is
inherent to SMTP and accepted (rare, and harmless compared to not sending).
"""
from __future__ import annotations

import base64
import logging
import smtplib
import ssl
import threading
from dataclasses import dataclass, field
from email.headerregistry import Address
from email.message import EmailMessage
import email
import email.policy
from email.utils import formatdate, make_msgid

from worker.adapters.channels.base import (
    Delivery,
    OutgoingMessage,
    RecipientError,
    RetryableError,
    TechnicalError,
)
from worker.adapters.dsn import TOKEN_HEADER, bounce_token, verp_address

log = logging.getLogger(__name__)

SECURITY_MODES = ("none", "starttls", "ssl")

# 5xx replies that say "this recipient cannot receive mail" (as opposed to a
# problem with us, the sender, or the content).
_RECIPIENT_CODES = frozenset({550, 551, 553})


@dataclass(frozen=True)
class SmtpSettings:
    host: str = "127.0.0.1"
    port: int = 25
    security: str = "none"  # "none" | "starttls" | "ssl"
    username: str | None = None
    password: str | None = None
    from_address: str = "relance@example.org"
    from_name: str | None = None
    timeout: float = 30.0
    verify_tls: bool = True  # False only for local test servers (self-signed certs)
    bounce_key: bytes | None = field(default=None, repr=False)  # HMAC key of the bounce token
    verp: bool = False  # the token in the envelope sender too (needs recipient_delimiter "+")
    pool_size: int = 32  # connections kept open by the beneficiaries' channel

    def __post_init__(self) -> None:
        if self.security not in SECURITY_MODES:
            raise ValueError(
                f"invalid SMTP security setting {self.security!r}: "
                f"expected one of {', '.join(SECURITY_MODES)}"
            )
        if not isinstance(self.port, int) or not 0 < self.port < 65536:
            raise ValueError(f"invalid SMTP port {self.port!r}: expected 1..65535")
        if not self.timeout or self.timeout <= 0:
            raise ValueError(f"invalid SMTP timeout {self.timeout!r}: expected a positive number of seconds")
        if not self.host:
            raise ValueError("SMTP host must not be empty")
        if "@" not in self.from_address:
            raise ValueError("SMTP from_address must be an e-mail address")


def _tls_context(settings: SmtpSettings) -> ssl.SSLContext:
    context = ssl.create_default_context()
    if not settings.verify_tls:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def _build_message(
    settings: SmtpSettings,
    *,
    to: str,
    subject: str,
    text: str,
    html: str | None,
    reference: str,
    sender_name: str | None,
    reply_to: str | None = None,
) -> EmailMessage:
    try:
        to_address = Address(addr_spec=to)
    except (ValueError, IndexError, TypeError):
        raise RecipientError("invalid e-mail address", code="invalid-address") from None
    if not to_address.username or not to_address.domain:
        raise RecipientError("invalid e-mail address", code="invalid-address")
    if not to.isascii():
        # Would need SMTPUTF8 end to end; addresses are normalised to ASCII upstream.
        raise RecipientError("non-ASCII e-mail address", code="invalid-address")

    domain = settings.from_address.rpartition("@")[2] or None
    msg = EmailMessage()
    try:
        msg["From"] = Address(display_name=sender_name or settings.from_name or "", addr_spec=settings.from_address)
        msg["To"] = to_address
        msg["Subject"] = subject
        msg["Date"] = formatdate(localtime=True)
        msg["Message-ID"] = make_msgid(domain=domain)
        msg["X-Relance-Reference"] = reference
        if reply_to:
            # Answers reach the organisation's mailbox, not the bounce mailbox of the envelope sender.
            msg["Reply-To"] = Address(display_name=sender_name or "", addr_spec=reply_to)
        if settings.bounce_key:
            msg[TOKEN_HEADER] = bounce_token(settings.bounce_key, reference)
        # Quoted-printable keeps the body 7-bit: safe on relays without 8BITMIME,
        # and long HTML lines are wrapped.
        msg.set_content(text, subtype="plain", charset="utf-8", cte="quoted-printable")
        if html:
            msg.add_alternative(html, subtype="html", charset="utf-8", cte="quoted-printable")
    except (ValueError, TypeError) as exc:  # e.g. a newline in the subject (header injection)
        raise TechnicalError(f"cannot build e-mail: {type(exc).__name__}", code="invalid-message") from None
    return msg


def _is_retryable_code(code: int) -> bool:
    return 400 <= code < 500


def _open(settings: SmtpSettings) -> smtplib.SMTP:
    if settings.security == "ssl":
        return smtplib.SMTP_SSL(settings.host, settings.port, timeout=settings.timeout, context=_tls_context(settings))
    smtp = smtplib.SMTP(settings.host, settings.port, timeout=settings.timeout)
    try:
        if settings.security == "starttls":
            smtp.ehlo()
            smtp.starttls(context=_tls_context(settings))
            smtp.ehlo()
    except BaseException:
        smtp.close()
        raise
    return smtp


def _login(smtp: smtplib.SMTP, username: str, password: str) -> None:
    if username.isascii() and password.isascii():
        smtp.login(username, password)
        return
    # smtplib encodes credentials as ASCII; AUTH PLAIN is defined over UTF-8
    # (RFC 4616), so non-ASCII credentials are sent that way by hand.
    smtp.ehlo_or_helo_if_needed()
    if not smtp.has_extn("auth"):
        raise smtplib.SMTPNotSupportedError("SMTP AUTH extension not supported by server.")
    if "PLAIN" not in smtp.esmtp_features["auth"].upper().split():
        raise smtplib.SMTPException("non-ASCII credentials need AUTH PLAIN, not offered by server")
    token = base64.b64encode(b"\0" + username.encode("utf-8") + b"\0" + password.encode("utf-8")).decode("ascii")
    code, reply = smtp.docmd("AUTH", "PLAIN " + token)
    if code != 235:
        raise smtplib.SMTPAuthenticationError(code, reply)


def _envelope_sender(settings: SmtpSettings, msg: EmailMessage) -> str:
    token = msg.get(TOKEN_HEADER)
    if settings.verp and token:
        return verp_address(settings.from_address, msg["X-Relance-Reference"], token) or settings.from_address
    return settings.from_address


class SmtpPool:
    """Open, authenticated connections to the SMTP server, kept for the next messages (thread-safe)."""

    def __init__(self, settings: SmtpSettings):
        self.settings = settings
        self._idle: list[smtplib.SMTP] = []
        self._lock = threading.Lock()

    def take(self) -> smtplib.SMTP:
        """An idle connection still open (RSET answered), else a new one."""
        while True:
            with self._lock:
                smtp = self._idle.pop() if self._idle else None
            if smtp is None:
                return _connect(self.settings)
            try:
                if smtp.rset()[0] == 250:
                    return smtp
            except (smtplib.SMTPException, OSError):
                pass
            _close(smtp)

    def give_back(self, smtp: smtplib.SMTP) -> None:
        with self._lock:
            if len(self._idle) < max(1, self.settings.pool_size):
                self._idle.append(smtp)
                return
        _quit(smtp)


def _connect(settings: SmtpSettings) -> smtplib.SMTP:
    smtp = _open(settings)
    try:
        if settings.username:
            _login(smtp, settings.username, settings.password or "")
    except BaseException:
        smtp.close()
        raise
    return smtp


def _close(smtp: smtplib.SMTP) -> None:
    try:
        smtp.close()
    except OSError:
        pass


def _quit(smtp: smtplib.SMTP) -> None:
    # The message is accepted: a failing QUIT must not turn into a retry.
    try:
        smtp.quit()
    except (smtplib.SMTPException, OSError):
        _close(smtp)


def _transmit(settings: SmtpSettings, msg: EmailMessage, to: str, pool: SmtpPool | None = None) -> None:
    smtp = pool.take() if pool is not None else _connect(settings)
    try:
        # Explicit envelope: the sender is from_address (with VERP, its +reference.token
        # variant), the only recipient is `to` (headers are never used to derive recipients).
        smtp.send_message(msg, from_addr=_envelope_sender(settings, msg), to_addrs=[to])
    except BaseException:
        _close(smtp)
        raise
    if pool is not None:
        pool.give_back(smtp)
    else:
        _quit(smtp)


def send_email(
    settings: SmtpSettings,
    *,
    to: str,
    subject: str,
    text: str,
    html: str | None = None,
    reference: str,
    sender_name: str | None = None,
    reply_to: str | None = None,
    attachment: bytes | None = None,
    pool: SmtpPool | None = None,
) -> str:
    """Send one e-mail and return its Message-ID (with angle brackets).

    ``attachment``: an e-mail (raw bytes) attached whole as ``message/rfc822`` (a reply forwarded to
    an organisation's mailbox).

    Reusable outside the beneficiary channel (agents' digests). Raises the
    :mod:`worker.adapters.channels.base` errors; never logs addresses or bodies.
    """
    if not subject:
        raise TechnicalError("e-mail without a subject", code="invalid-message")
    msg = _build_message(
        settings, to=to, subject=subject, text=text, html=html, reference=reference, sender_name=sender_name,
        reply_to=reply_to,
    )
    if attachment is not None:
        original = email.message_from_bytes(attachment, policy=email.policy.default)
        msg.add_attachment(original, filename="reponse.eml")
    message_id = msg["Message-ID"]
    try:
        _transmit(settings, msg, to, pool)
    except smtplib.SMTPRecipientsRefused as exc:
        # Single recipient: one (code, reply) pair. Server text is not kept (it echoes the address).
        codes = [code for code, _reply in exc.recipients.values()]
        code = codes[0] if codes else None
        if code is not None and _is_retryable_code(code):
            log.info("e-mail %s: recipient temporarily refused (%s), will retry", reference, code)
            raise RetryableError(f"recipient temporarily refused ({code})", code=code) from None
        log.info("e-mail %s: recipient refused (%s)", reference, code)
        raise RecipientError(f"recipient refused ({code})", code=code) from None
    except smtplib.SMTPAuthenticationError as exc:
        log.error("e-mail %s: SMTP authentication failed (%s)", reference, exc.smtp_code)
        raise TechnicalError(f"SMTP authentication failed ({exc.smtp_code})", code="auth") from None
    except smtplib.SMTPServerDisconnected:
        log.warning("e-mail %s: SMTP server disconnected, will retry", reference)
        raise RetryableError("SMTP server disconnected", code="disconnected") from None
    except smtplib.SMTPResponseException as exc:
        # Includes SMTPConnectError (bad greeting), SMTPSenderRefused, SMTPDataError, SMTPHeloError.
        code = exc.smtp_code
        kind = type(exc).__name__
        if _is_retryable_code(code):
            log.warning("e-mail %s: temporary SMTP failure %s (%s), will retry", reference, code, kind)
            raise RetryableError(f"temporary SMTP failure ({code})", code=code) from None
        if isinstance(exc, smtplib.SMTPConnectError):
            log.warning("e-mail %s: SMTP connection refused by server (%s), will retry", reference, code)
            raise RetryableError(f"SMTP connection refused by server ({code})", code=code) from None
        if code in _RECIPIENT_CODES and not isinstance(exc, (smtplib.SMTPSenderRefused, smtplib.SMTPHeloError)):
            log.info("e-mail %s: recipient refused (%s)", reference, code)
            raise RecipientError(f"recipient refused ({code})", code=code) from None
        log.error("e-mail %s: SMTP failure %s (%s)", reference, code, kind)
        raise TechnicalError(f"SMTP failure ({code}, {kind})", code=code) from None
    except smtplib.SMTPException as exc:
        # SMTPNotSupportedError (no STARTTLS/AUTH offered), SMTPException("No suitable
        # authentication method found."), ...: configuration problems.
        log.error("e-mail %s: SMTP error (%s)", reference, type(exc).__name__)
        raise TechnicalError(f"SMTP error ({type(exc).__name__})", code="smtp") from None
    except ssl.SSLCertVerificationError as exc:
        log.error("e-mail %s: TLS certificate not verified (%s)", reference, exc.verify_message)
        raise TechnicalError(f"TLS certificate not verified ({exc.verify_message})", code="tls") from None
    except ssl.SSLEOFError:
        log.warning("e-mail %s: connection closed during TLS, will retry", reference)
        raise RetryableError("connection closed during TLS", code="network") from None
    except ssl.SSLError as exc:
        # Wrong protocol (TLS to a plain port and the like): a configuration problem.
        log.error("e-mail %s: TLS error (%s)", reference, exc.reason)
        raise TechnicalError(f"TLS error ({exc.reason})", code="tls") from None
    except OSError as exc:  # refused, reset, unreachable, DNS, timeouts
        detail = exc.strerror or type(exc).__name__
        log.warning("e-mail %s: SMTP connection failed (%s), will retry", reference, detail)
        raise RetryableError(f"SMTP connection failed ({detail})", code="network") from None
    log.info("e-mail %s: accepted by SMTP server", reference)
    return message_id


class SmtpEmailChannel:
    name = "email"
    is_local = False

    def __init__(self, settings: SmtpSettings | None = None):
        self.settings = settings or SmtpSettings()
        self.pool = SmtpPool(self.settings)

    def send(self, message: OutgoingMessage) -> Delivery:
        message_id = send_email(
            self.settings,
            to=message.to,
            subject=message.subject or "",
            text=message.text,
            html=message.html,
            reference=message.reference,
            sender_name=message.sender_name,
            reply_to=message.reply_to,
            pool=self.pool,
        )
        return Delivery(status="sent", provider_ref=message_id)
