"""A real SMTP server on 127.0.0.1 for tests (aiosmtpd in a background thread).

    with FakeSmtpServer(mode="starttls", username="u", password="p") as server:
        ...send to server.host / server.port...
        msg = server.messages[0].message        # email.message.EmailMessage

Modes: ``"plain"``, ``"starttls"`` (STARTTLS offered; AUTH only after it) and
``"ssl"`` (implicit TLS from the first byte). With ``username``/``password``
the server offers AUTH PLAIN and LOGIN and, by default, requires it before
MAIL (``auth_required``).

Error injection (may be changed while the server runs)::

    server.refuse("x@example.org")           # 550 at RCPT for this address
    server.defer("y@example.org")            # 451 at RCPT (temporary)
    server.drop_on = "DATA"                  # close the connection at MAIL/RCPT/DATA

TLS certificates are self-signed, generated once per process for
CN=localhost / IP 127.0.0.1, with the ``cryptography`` package when installed,
else with the ``openssl`` command line tool; ``server.cert_file`` is the PEM
certificate (a client may trust it with ``ssl.create_default_context(cafile=...)``).
"""
from __future__ import annotations

import email
import email.policy
import shutil
import socket
import ssl
import subprocess
import tempfile
import threading
import warnings
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

MODES = ("plain", "starttls", "ssl")
DROP_POINTS = ("MAIL", "RCPT", "DATA")


@dataclass
class ReceivedMessage:
    mail_from: str
    rcpt_tos: list[str]
    raw: bytes
    message: EmailMessage
    authenticated_as: str | None = None
    tls: bool = False


@dataclass
class _Injections:
    refused: dict[str, tuple[int, str]] = field(default_factory=dict)
    deferred: dict[str, tuple[int, str]] = field(default_factory=dict)
    drop_on: str | None = None


def free_port() -> int:
    """A TCP port that was free a moment ago on 127.0.0.1 (also useful for "server down" tests)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --------------------------------------------------------------------------- certificates

_cert_lock = threading.Lock()
_cert_paths: tuple[Path, Path] | None = None


def _generate_with_cryptography(cert: Path, key: Path) -> bool:
    try:
        import datetime
        import ipaddress

        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID
    except ImportError:
        return False
    private_key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(private_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(private_key, hashes.SHA256())
    )
    key.write_bytes(
        private_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    cert.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    return True


def _generate_with_openssl(cert: Path, key: Path) -> bool:
    openssl = shutil.which("openssl")
    if openssl is None:
        return False
    subprocess.run(
        [
            openssl, "req", "-x509", "-nodes",
            "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-keyout", str(key), "-out", str(cert),
            "-days", "2", "-subj", "/CN=localhost",
            "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return True


def self_signed_cert() -> tuple[Path, Path]:
    """(cert.pem, key.pem) for localhost/127.0.0.1, generated once per process."""
    global _cert_paths
    with _cert_lock:
        if _cert_paths is None:
            directory = Path(tempfile.mkdtemp(prefix="relance-smtp-tls-"))
            cert, key = directory / "cert.pem", directory / "key.pem"
            if not (_generate_with_cryptography(cert, key) or _generate_with_openssl(cert, key)):
                raise RuntimeError("cannot make a TLS certificate: neither `cryptography` nor `openssl` is available")
            _cert_paths = (cert, key)
        return _cert_paths


def _server_context(cert: Path, key: Path) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(str(cert), str(key))
    return context


# --------------------------------------------------------------------------- handler

class _Handler:
    def __init__(self, server: "FakeSmtpServer"):
        self._server = server

    def _maybe_drop(self, server, point: str) -> bool:
        if self._server.drop_on == point:
            self._server.dropped += 1
            server.transport.abort()
            return True
        return False

    async def handle_MAIL(self, server, session, envelope, address, mail_options):
        if self._maybe_drop(server, "MAIL"):
            return "421 4.3.0 connection dropped"
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if self._maybe_drop(server, "RCPT"):
            return "421 4.3.0 connection dropped"
        key = address.lower()
        injections = self._server._injections
        if key in injections.refused:
            code, text = injections.refused[key]
            return f"{code} {text}"
        if key in injections.deferred:
            code, text = injections.deferred[key]
            return f"{code} {text}"
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        if self._maybe_drop(server, "DATA"):
            return "421 4.3.0 connection dropped"
        raw = envelope.original_content or envelope.content
        if isinstance(raw, str):
            raw = raw.encode("utf-8", "surrogateescape")
        message = email.message_from_bytes(raw, policy=email.policy.default)
        auth = session.auth_data
        login = auth.login.decode() if isinstance(auth, LoginPassword) else None
        transport = server.transport
        tls = transport is not None and transport.get_extra_info("ssl_object") is not None
        received = ReceivedMessage(
            mail_from=envelope.mail_from,
            rcpt_tos=list(envelope.rcpt_tos),
            raw=raw,
            message=message,
            authenticated_as=login,
            tls=tls,
        )
        with self._server._lock:
            self._server.messages.append(received)
        return "250 2.0.0 OK queued"


# --------------------------------------------------------------------------- server

class _QuietController(Controller):
    def factory(self):
        # Implicit TLS with AUTH: aiosmtpd warns that AUTH does not require
        # (STARTTLS) TLS, although the whole connection is TLS. Silence that.
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Requiring AUTH while not requiring TLS")
            return super().factory()


class FakeSmtpServer:
    def __init__(
        self,
        *,
        mode: str = "plain",
        username: str | None = None,
        password: str | None = None,
        auth_required: bool | None = None,
        auth_require_tls: bool | None = None,
        require_starttls: bool = False,
        port: int | None = None,
    ):
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
        if (username is None) != (password is None):
            raise ValueError("give both username and password, or neither")
        self.mode = mode
        self.host = "127.0.0.1"
        self.port = port or free_port()
        self.username = username
        self.password = password
        self.messages: list[ReceivedMessage] = []
        self.auth_attempts: list[tuple[str, bool]] = []  # (login, success)
        self.dropped = 0
        self._injections = _Injections()
        self._lock = threading.Lock()
        self._controller: Controller | None = None
        self.cert_file: Path | None = None

        smtp_kwargs: dict = {}
        controller_kwargs: dict = {}
        if mode in ("starttls", "ssl"):
            cert, key = self_signed_cert()
            self.cert_file = cert
            context = _server_context(cert, key)
            if mode == "starttls":
                smtp_kwargs["tls_context"] = context
                smtp_kwargs["require_starttls"] = require_starttls
            else:
                controller_kwargs["ssl_context"] = context
        if username is not None:
            smtp_kwargs["authenticator"] = self._authenticate
            smtp_kwargs["auth_required"] = True if auth_required is None else auth_required
            if auth_require_tls is None:
                # aiosmtpd only counts STARTTLS as TLS: with implicit TLS (or no
                # TLS at all) AUTH must be allowed "in clear" to be offered.
                auth_require_tls = mode == "starttls"
            smtp_kwargs["auth_require_tls"] = auth_require_tls
        self._controller_args = (controller_kwargs, smtp_kwargs)

    # -- error injection -----------------------------------------------------------------
    def refuse(self, address: str, code: int = 550, text: str = "5.1.1 mailbox unavailable") -> None:
        self._injections.refused[address.lower()] = (code, text)

    def defer(self, address: str, code: int = 451, text: str = "4.3.0 try again later") -> None:
        self._injections.deferred[address.lower()] = (code, text)

    @property
    def drop_on(self) -> str | None:
        return self._injections.drop_on

    @drop_on.setter
    def drop_on(self, point: str | None) -> None:
        if point is not None and point.upper() not in DROP_POINTS:
            raise ValueError(f"drop_on must be one of {DROP_POINTS} or None")
        self._injections.drop_on = point.upper() if point else None

    def reset(self) -> None:
        """Forget received messages and injected errors."""
        with self._lock:
            self.messages.clear()
            self.auth_attempts.clear()
            self.dropped = 0
        self._injections = _Injections()

    # -- auth ----------------------------------------------------------------------------
    def _authenticate(self, server, session, envelope, mechanism, auth_data):
        if not isinstance(auth_data, LoginPassword):
            return AuthResult(success=False, handled=False)
        login = auth_data.login.decode("utf-8", "replace")
        ok = login == self.username and auth_data.password.decode("utf-8", "replace") == self.password
        with self._lock:
            self.auth_attempts.append((login, ok))
        return AuthResult(success=ok, handled=False, auth_data=auth_data if ok else None)

    # -- lifecycle -----------------------------------------------------------------------
    def start(self) -> "FakeSmtpServer":
        if self._controller is not None:
            return self
        controller_kwargs, smtp_kwargs = self._controller_args
        controller = _QuietController(
            _Handler(self),
            hostname=self.host,
            port=self.port,
            server_hostname="localhost",
            **controller_kwargs,
            **smtp_kwargs,
        )
        controller.start()
        self._controller = controller
        return self

    def stop(self) -> None:
        if self._controller is not None:
            controller, self._controller = self._controller, None
            controller.stop()

    def __enter__(self) -> "FakeSmtpServer":
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()

    # -- convenience ---------------------------------------------------------------------
    def settings(self, **overrides):
        """SmtpSettings pointing at this server (unverified TLS: the cert is self-signed)."""
        from worker.adapters.channels.smtp_email import SmtpSettings

        values = {
            "host": self.host,
            "port": self.port,
            "security": {"plain": "none", "starttls": "starttls", "ssl": "ssl"}[self.mode],
            "username": self.username,
            "password": self.password,
            "timeout": 5.0,
            "verify_tls": False,
        }
        values.update(overrides)
        return SmtpSettings(**values)
