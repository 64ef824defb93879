"""SMTP adapter: submit one message and say precisely whether it was sent.

The SMTP dialogue is driven step by step (MAIL, RCPT, DATA, message, final reply)
instead of through smtplib.sendmail, because what a failure means depends on
where it happens: before the end of the message data nothing can have been
delivered (safe to retry); after it, the server may have accepted the message
even though we never saw the reply (retrying could send it twice).
"""

import contextlib
import logging
import re
import smtplib
import ssl
from dataclasses import dataclass, field

from posta.mail.errors import (
    AmbiguousSendError,
    MailError,
    PermanentSendError,
    TLSFailure,
    TransientError,
    auth_error_from_text,
    classify_network_error,
)

logger = logging.getLogger(__name__)

_LINE_ENDS = re.compile(rb"\r\n|\r|\n")
_LEADING_DOT = re.compile(rb"(?m)^\.")


@dataclass
class SmtpSettings:
    """Where and how to log in to an SMTP submission server."""

    host: str
    port: int
    security: str  # "ssl" | "starttls" | "none"
    username: str
    password: str = field(repr=False)
    ca_bundle: str | None = None
    timeout: float = 30.0


def check_login(settings: SmtpSettings) -> None:
    """Connect, EHLO, authenticate and QUIT, raising the error family."""
    smtp = _open(settings)
    _quit_quietly(smtp)
    logger.info("SMTP login ok for %s on %s", settings.username, settings.host)


def send(
    settings: SmtpSettings, envelope_from: str, recipients: list[str], raw: bytes
) -> None:
    """Submit the message; the error raised says refused, not sent, or maybe sent."""
    if not recipients:
        raise PermanentSendError("The message has no recipients.")
    with SmtpConnection(settings) as connection:
        connection.send(envelope_from, recipients, raw)


class SmtpConnection:
    """A logged-in SMTP connection that submits messages one after another.

    Connecting and logging in happen once, on enter; each `send` is one mail
    transaction. The errors are those of `send()`. After any error the
    connection may be mid-transaction or gone, so callers open a new one.
    """

    def __init__(self, settings: SmtpSettings):
        self.settings = settings
        self.account = f"{settings.username} on {settings.host}"
        self.sent = 0
        self._smtp: smtplib.SMTP | None = None

    def __enter__(self) -> "SmtpConnection":
        self._smtp = _open(self.settings)
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if self._smtp is not None:
            _quit_quietly(self._smtp)
            self._smtp = None

    def send(self, envelope_from: str, recipients: list[str], raw: bytes) -> None:
        """Submit one message; the error says refused, not sent, or maybe sent."""
        if self._smtp is None:
            raise RuntimeError("SmtpConnection used outside its with-block")
        if not recipients:
            raise PermanentSendError("The message has no recipients.")
        _envelope(self._smtp, envelope_from, recipients, self.account, _needs_8bit(raw))
        _transmit(self._smtp, raw)
        self.sent += 1
        logger.info(
            "Sent message for %s to %d recipients", self.account, len(recipients)
        )


def _open(settings: SmtpSettings) -> smtplib.SMTP:
    """Connect, negotiate TLS as configured, and authenticate."""
    context = ssl.create_default_context(cafile=settings.ca_bundle)
    try:
        if settings.security == "ssl":
            smtp = smtplib.SMTP_SSL(
                settings.host, settings.port, timeout=settings.timeout, context=context
            )
        else:
            smtp = smtplib.SMTP(settings.host, settings.port, timeout=settings.timeout)
    except (OSError, smtplib.SMTPException) as exc:
        raise _before_data_error(exc) from exc
    try:
        _greet(smtp, settings, context)
        _authenticate(smtp, settings)
    except BaseException:
        _quit_quietly(smtp)
        raise
    return smtp


def _greet(smtp: smtplib.SMTP, settings: SmtpSettings, context: ssl.SSLContext) -> None:
    try:
        smtp.ehlo()
        if settings.security == "starttls":
            if not smtp.has_extn("starttls"):
                raise TLSFailure("The server does not offer STARTTLS.")
            smtp.starttls(context=context)
            smtp.ehlo()
    except (OSError, smtplib.SMTPException) as exc:
        raise _before_data_error(exc) from exc


def _authenticate(smtp: smtplib.SMTP, settings: SmtpSettings) -> None:
    if not settings.username:
        return
    try:
        smtp.login(settings.username, settings.password)
    except smtplib.SMTPAuthenticationError as exc:
        text = _reply_text(exc.smtp_code, exc.smtp_error)
        if 400 <= exc.smtp_code < 500:
            raise TransientError(f"Login temporarily refused: {text}") from exc
        raise auth_error_from_text(text, settings.host) from exc
    except smtplib.SMTPNotSupportedError as exc:
        # Servers commonly hide AUTH until the connection is encrypted.
        raise TLSFailure(
            "The server offers no login on this connection; check the security setting."
        ) from exc
    except (OSError, smtplib.SMTPException) as exc:
        raise _before_data_error(exc) from exc


def _envelope(
    smtp: smtplib.SMTP,
    envelope_from: str,
    recipients: list[str],
    account: str,
    eight_bit: bool,
) -> None:
    """Send MAIL FROM and RCPT TO; raise unless at least one recipient is accepted."""
    options = ["BODY=8BITMIME"] if eight_bit and smtp.has_extn("8bitmime") else []
    try:
        code, reply = smtp.mail(envelope_from, options)
        _check(code, reply, "The sender was refused")
        refused = {}
        for rcpt in recipients:
            code, reply = smtp.rcpt(rcpt)
            if code not in (250, 251):
                refused[rcpt] = (code, reply)
    except (OSError, smtplib.SMTPException) as exc:
        raise _before_data_error(exc) from exc
    if len(refused) == len(recipients):
        codes = [code for code, _ in refused.values()]
        error = PermanentSendError if all(c >= 500 for c in codes) else TransientError
        raise error(f"All recipients were refused: {_describe(refused)}")
    if refused:
        logger.warning(
            "Some recipients refused for %s: %s", account, _describe(refused)
        )


def _transmit(smtp: smtplib.SMTP, raw: bytes) -> None:
    """Send DATA, the message and the final dot; read the final reply."""
    try:
        code, reply = smtp.docmd("DATA")
        _check(code, reply, "The server refused to take the message", expected=354)
        smtp.send(_dot_stuff(raw))
    except (OSError, smtplib.SMTPException) as exc:
        # The final dot never went out whole, so the server cannot have accepted it.
        raise _before_data_error(exc) from exc
    try:
        code, reply = smtp.getreply()
    except (OSError, smtplib.SMTPException) as exc:
        raise AmbiguousSendError(
            "The connection was lost after the message was sent, before the server "
            f"confirmed it; it may have been delivered ({exc})."
        ) from exc
    _check(code, reply, "The server refused the message")


def _check(code: int, reply: bytes, what: str, expected: int = 250) -> None:
    """Raise the error matching an unexpected SMTP reply code."""
    if code == expected or (expected == 250 and 200 <= code < 300):
        return
    text = f"{what}: {_reply_text(code, reply)}"
    if code >= 500:
        raise PermanentSendError(text)
    raise TransientError(text)


def _before_data_error(exc: BaseException) -> MailError:
    """Classify a failure that happened before the message could be accepted."""
    if isinstance(exc, smtplib.SMTPResponseException):
        text = _reply_text(exc.smtp_code, exc.smtp_error)
        if exc.smtp_code >= 500:
            return PermanentSendError(text)
        return TransientError(text)
    return classify_network_error(exc)


def _dot_stuff(raw: bytes) -> bytes:
    """Normalize line ends to CRLF, double leading dots, and add the final dot."""
    data = _LEADING_DOT.sub(b"..", _LINE_ENDS.sub(b"\r\n", raw))
    if not data.endswith(b"\r\n"):
        data += b"\r\n"
    return data + b".\r\n"


def _needs_8bit(raw: bytes) -> bool:
    return not raw.isascii()


def _reply_text(code: int, reply: bytes | str) -> str:
    if isinstance(reply, bytes):
        reply = reply.decode("utf-8", "replace")
    return f"{code} {reply}".strip()


def _describe(refused: dict[str, tuple[int, bytes]]) -> str:
    return "; ".join(
        f"{rcpt}: {_reply_text(*reply)}" for rcpt, reply in refused.items()
    )


def _quit_quietly(smtp: smtplib.SMTP) -> None:
    """Say QUIT, or just close if the connection is already broken."""
    with contextlib.suppress(Exception):
        smtp.quit()
    with contextlib.suppress(Exception):
        smtp.close()
