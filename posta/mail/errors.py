"""The mail core's error family: every adapter failure is one of these.

Callers branch on the class (or on ``kind``, which is stable enough to store in
the database and show in the UI). Retryable failures derive from TransientError,
so ``except TransientError`` means "try again later".
"""

import errno
import imaplib
import smtplib
import socket
import ssl

# Texts Microsoft 365 sends when the tenant or mailbox refuses password logins
# (SMTP AUTH disabled, security defaults, basic auth retired). Lower-case.
_BASIC_AUTH_DISABLED_MARKERS = (
    "basic authentication is disabled",
    "basicauthblocked",
    "smtpclientauthentication is disabled",
    "security defaults policy",
)

# Microsoft answers a password login on a tenant without basic auth with the same
# bare "LOGIN failed." / "AUTHENTICATE failed." it uses for a wrong password, so
# on its hosts that text is treated as "basic auth is probably disabled".
_MICROSOFT_HOST_SUFFIXES = ("office365.com", "outlook.com", "office.com")
_MICROSOFT_GENERIC_FAILURES = ("authenticate failed", "login failed")

_UNREACHABLE_ERRNOS = {
    errno.ECONNREFUSED,
    errno.EHOSTUNREACH,
    errno.ENETUNREACH,
    errno.EADDRNOTAVAIL,
    errno.EHOSTDOWN,
}


class MailError(Exception):
    """Base of every error the mail core raises."""

    kind = "error"
    default_detail = "The mail server reported an error."

    def __init__(self, detail: str | None = None):
        self.detail = detail or self.default_detail
        super().__init__(self.detail)


class AuthError(MailError):
    """The server refused the credentials."""

    kind = "auth"
    default_detail = "The server rejected the username or password."

    def __init__(self, detail: str | None = None, basic_auth_disabled: bool = False):
        super().__init__(detail)
        self.basic_auth_disabled = basic_auth_disabled


class TransientError(MailError):
    """A failure worth retrying later; nothing was changed or sent."""

    kind = "transient"
    default_detail = "The mail server had a temporary problem."


class UnreachableError(TransientError):
    """The server could not be reached (DNS failure, connection refused)."""

    kind = "unreachable"
    default_detail = "The mail server could not be reached."


class TimeoutFailure(TransientError):
    """The server did not answer in time."""

    kind = "timeout"
    default_detail = "The mail server did not answer in time."


class TLSFailure(MailError):
    """The TLS handshake or certificate check failed, or the security mode is wrong."""

    kind = "tls"
    default_detail = "The secure connection to the mail server failed."


class FolderGone(MailError):
    """The folder no longer exists on the server."""

    kind = "folder_gone"
    default_detail = "The folder no longer exists on the server."


class ResyncNeeded(MailError):
    """The server no longer honours our sync cursor; start the folder over."""

    kind = "resync"
    default_detail = "The folder has to be synchronised again from the start."


class PermanentSendError(MailError):
    """The server refused the message or all its recipients; it was not sent."""

    kind = "rejected"
    default_detail = "The server refused the message."


class AmbiguousSendError(MailError):
    """The connection broke after the message was transmitted; it may be delivered."""

    kind = "unknown"
    default_detail = (
        "The connection was lost after the message was sent; it may have been "
        "delivered."
    )


def classify_network_error(exc: BaseException) -> MailError:
    """Map a socket, TLS, timeout or protocol-abort exception into the family."""
    if isinstance(exc, MailError):
        return exc
    # smtplib turns socket errors (timeouts included) into SMTPServerDisconnected.
    if isinstance(exc, smtplib.SMTPServerDisconnected) and isinstance(
        exc.__context__, OSError
    ):
        return classify_network_error(exc.__context__)
    if isinstance(exc, socket.gaierror):
        return UnreachableError(f"The server name could not be resolved ({exc}).")
    if isinstance(exc, ssl.SSLCertVerificationError):
        return TLSFailure(
            f"The server certificate is not trusted: {exc.verify_message}."
        )
    if isinstance(exc, ssl.SSLError):
        return TLSFailure(_tls_detail(exc))
    # TimeoutError subclasses OSError, so it must be tested before the errno map.
    if isinstance(exc, TimeoutError):
        return TimeoutFailure()
    if isinstance(exc, OSError) and exc.errno in _UNREACHABLE_ERRNOS:
        return UnreachableError(f"The mail server could not be reached ({exc}).")
    if isinstance(exc, (OSError, EOFError, smtplib.SMTPServerDisconnected)):
        return TransientError(f"The connection to the mail server was lost ({exc}).")
    if isinstance(exc, imaplib.IMAP4.abort):
        return TransientError(f"The mail server closed the session ({exc}).")
    return TransientError(f"Unexpected mail server failure ({exc!r}).")


def auth_error_from_text(text: str, host: str) -> AuthError:
    """Build an AuthError from a server reply, spotting disabled password logins."""
    lowered = text.lower()
    disabled = any(marker in lowered for marker in _BASIC_AUTH_DISABLED_MARKERS)
    if not disabled and _is_microsoft_host(host):
        disabled = any(marker in lowered for marker in _MICROSOFT_GENERIC_FAILURES)
    if disabled:
        return AuthError(
            "The server does not accept password logins for this account "
            f"(basic authentication is disabled): {text}",
            basic_auth_disabled=True,
        )
    return AuthError(f"The server rejected the username or password: {text}")


def _is_microsoft_host(host: str) -> bool:
    host = host.lower().rstrip(".")
    return any(
        host == suffix or host.endswith("." + suffix)
        for suffix in _MICROSOFT_HOST_SUFFIXES
    )


def _tls_detail(exc: ssl.SSLError) -> str:
    if exc.reason in ("WRONG_VERSION_NUMBER", "RECORD_LAYER_FAILURE"):
        return (
            "The server did not answer with TLS; check the security setting "
            f"(SSL/TLS vs STARTTLS vs none) and the port ({exc.reason})."
        )
    return f"The secure connection to the mail server failed ({exc.reason or exc})."
