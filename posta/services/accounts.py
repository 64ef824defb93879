"""Connected mailboxes: connecting one, who may send from it, who may manage it."""

import logging

from email_validator import EmailNotValidError, validate_email
from flask import current_app
from flask_babel import lazy_gettext as _l
from sqlalchemy import select

from posta.extensions import db
from posta.mail import imap, smtp
from posta.mail.errors import (
    AuthError,
    MailError,
    TimeoutFailure,
    TLSFailure,
    UnreachableError,
)
from posta.models import AccountKind, AccountStatus, EmailAccount, User, Workspace
from posta.services import permissions

logger = logging.getLogger(__name__)

SECURITY_CHOICES = ("ssl", "starttls", "none")
ONLY_ME = "only_me"

# Microsoft's consumer domains and the servers their mailboxes answer on.
MICROSOFT_CONSUMER_DOMAINS = ("hotmail.com", "live.com", "outlook.com")
MICROSOFT_PREFILL = {
    "imap_host": "outlook.office365.com",
    "imap_port": 993,
    "imap_security": "ssl",
    "smtp_host": "smtp-mail.outlook.com",
    "smtp_port": 587,
    "smtp_security": "starttls",
}
_MICROSOFT_HOST_SUFFIXES = ("office365.com", "outlook.com", "office.com")


class AccountError(ValueError):
    """A connection attempt that failed, with a message for the person and a field."""

    def __init__(self, message, field: str | None = None):
        super().__init__(message)
        self.message = message
        self.field = field


def prefill_for(address: str | None) -> dict | None:
    """Return known server settings for an address's domain, or None."""
    domain = (address or "").rpartition("@")[2].strip().lower()
    if domain in MICROSOFT_CONSUMER_DOMAINS:
        return dict(MICROSOFT_PREFILL)
    return None


def connect_imap_account(
    user: User, form_data, from_settings: bool = False
) -> EmailAccount:
    """Check the mailbox's IMAP and SMTP logins, then save (or update) the account."""
    data = _clean(form_data)
    try:
        permissions.check_can_connect(
            user, Workspace.get(), data["email"], from_settings
        )
    except permissions.PermissionDenied as exc:
        raise AccountError(exc.message) from exc
    existing = db.session.scalars(
        select(EmailAccount).where(EmailAccount.email == data["email"])
    ).first()
    if existing and existing.connected_by_id != user.id and not user.is_admin:
        raise AccountError(
            _l(
                "%(address)s is already connected by %(name)s; ask them or an admin.",
                address=data["email"],
                name=existing.connected_by.name,
            ),
            field="email",
        )
    _check_logins(data)

    account = existing or EmailAccount(
        email=data["email"], connected_by_id=user.id, send_policy=ONLY_ME
    )
    account.kind = AccountKind.IMAP.value
    account.display_name = account.display_name or user.name
    account.username = data["username"]
    for name in ("imap_host", "imap_port", "imap_security"):
        setattr(account, name, data[name])
    for name in ("smtp_host", "smtp_port", "smtp_security"):
        setattr(account, name, data[name])
    account.secret = current_app.extensions["posta_secrets"].encrypt(data["password"])
    account.status = AccountStatus.ACTIVE.value
    account.last_error = None
    db.session.add(account)
    db.session.commit()
    logger.info(
        "account %s (%s) connected by user %s", account.id, account.email, user.id
    )
    return account


def imap_settings(account: EmailAccount) -> imap.ImapSettings:
    """Return the IMAP settings of an account, with its password decrypted."""
    return imap.ImapSettings(
        host=account.imap_host,
        port=account.imap_port,
        security=account.imap_security,
        username=account.username or account.email,
        password=_password(account),
        ca_bundle=current_app.config["POSTA_CA_BUNDLE"],
        timeout=float(current_app.config["POSTA_MAIL_TIMEOUT"]),
    )


def smtp_settings(account: EmailAccount) -> smtp.SmtpSettings:
    """Return the SMTP settings of an account, with its password decrypted."""
    return smtp.SmtpSettings(
        host=account.smtp_host,
        port=account.smtp_port,
        security=account.smtp_security,
        username=account.username or account.email,
        password=_password(account),
        ca_bundle=current_app.config["POSTA_CA_BUNDLE"],
        timeout=float(current_app.config["POSTA_MAIL_TIMEOUT"]),
    )


def accounts_user_may_send_from(user: User) -> list[EmailAccount]:
    """Return the accounts this person may pick in the composer's From list."""
    return permissions.accounts_user_may_send_from(user)


def may_send(user: User, account: EmailAccount | None) -> bool:
    """Tell whether this person may send mail from this account."""
    return permissions.may_send(user, account)


def may_manage(user: User, account: EmailAccount) -> bool:
    """Tell whether this person may see, sync or remove this account."""
    return permissions.may_manage(user, account)


def visible_accounts(user: User) -> list[EmailAccount]:
    """Return the accounts on the integration page: all for admins, else one's own."""
    query = select(EmailAccount).order_by(EmailAccount.email)
    if not user.is_admin:
        query = query.where(EmailAccount.connected_by_id == user.id)
    return db.session.scalars(query).all()


def delete_account(user: User, account: EmailAccount) -> None:
    """Remove an account and its secret; its messages stay on their tasks."""
    if not may_manage(user, account):
        raise AccountError(_l("Only the person who connected it or an admin may."))
    logger.info("account %s removed by user %s", account.id, user.id)
    db.session.delete(account)
    db.session.commit()


def auth_failure_text(error: AuthError, address: str, host: str = "") -> str:
    """Return the plain explanation of a refused login."""
    if error.basic_auth_disabled:
        if is_microsoft_hosted(address, host):
            return str(
                _l(
                    "This mailbox does not accept passwords (basic authentication is "
                    "disabled). Use Sign in with Microsoft instead."
                )
            )
        return str(
            _l(
                "This mailbox does not accept passwords (basic authentication is "
                "disabled). Ask your mail administrator to allow IMAP and SMTP logins."
            )
        )
    return str(_l("Wrong email or password."))


def is_microsoft_hosted(address: str, *hosts: str) -> bool:
    """Tell whether a mailbox lives at Microsoft (consumer domain or its servers)."""
    if prefill_for(address):
        return True
    for host in hosts:
        host = (host or "").lower().rstrip(".")
        if any(host == s or host.endswith("." + s) for s in _MICROSOFT_HOST_SUFFIXES):
            return True
    return False


def _password(account: EmailAccount) -> str:
    return current_app.extensions["posta_secrets"].decrypt(account.secret)


def _clean(form_data) -> dict:
    """Validate the connect form; fill missing servers for known domains."""
    get = form_data.get
    try:
        address = validate_email(
            (get("email") or "").strip(),
            check_deliverability=False,
            globally_deliverable=False,
            test_environment=True,
        ).normalized.lower()
    except EmailNotValidError as exc:
        raise AccountError(_l("That email address is not valid."), "email") from exc
    password = get("password") or ""
    if not password:
        raise AccountError(_l("Enter the password or app password."), "password")

    prefill = prefill_for(address) or {}
    data = {
        "email": address,
        "password": password,
        "username": (get("username") or "").strip() or address,
    }
    for proto in ("imap", "smtp"):
        host = (get(f"{proto}_host") or "").strip() or prefill.get(f"{proto}_host", "")
        if not host or any(ch.isspace() for ch in host):
            raise AccountError(_l("Enter the server name."), f"{proto}_host")
        port = get(f"{proto}_port") or prefill.get(f"{proto}_port")
        try:
            port = int(port)
        except (TypeError, ValueError):
            port = 0
        if not 1 <= port <= 65535:
            raise AccountError(
                _l("The port must be a number from 1 to 65535."), f"{proto}_port"
            )
        security = get(f"{proto}_security") or prefill.get(f"{proto}_security")
        if security not in SECURITY_CHOICES:
            raise AccountError(
                _l("Choose SSL/TLS, STARTTLS or none."), f"{proto}_security"
            )
        data.update(
            {
                f"{proto}_host": host,
                f"{proto}_port": port,
                f"{proto}_security": security,
            }
        )
    return data


def _check_logins(data: dict) -> None:
    """Log in to IMAP, then SMTP; raise AccountError naming what went wrong."""
    common = {
        "username": data["username"],
        "password": data["password"],
        "ca_bundle": current_app.config["POSTA_CA_BUNDLE"],
        "timeout": float(current_app.config["POSTA_MAIL_TIMEOUT"]),
    }
    checks = (
        ("imap", imap.check_login, imap.ImapSettings, _l("Incoming mail (IMAP)")),
        ("smtp", smtp.check_login, smtp.SmtpSettings, _l("Outgoing mail (SMTP)")),
    )
    for proto, check, settings_class, label in checks:
        host = data[f"{proto}_host"]
        settings = settings_class(
            host=host,
            port=data[f"{proto}_port"],
            security=data[f"{proto}_security"],
            **common,
        )
        try:
            check(settings)
        except MailError as exc:
            logger.info(
                "connect check %s failed for %s at %s:%s: %s",
                proto,
                data["email"],
                host,
                settings.port,
                exc.kind,
            )
            raise AccountError(
                f"{label}: {_failure_text(exc, data['email'], host)}",
                field="password" if isinstance(exc, AuthError) else f"{proto}_host",
            ) from exc


def _failure_text(error: MailError, address: str, host: str) -> str:
    if isinstance(error, AuthError):
        return auth_failure_text(error, address, host)
    if isinstance(error, UnreachableError):
        return str(
            _l("The server could not be reached. Check the server name and port.")
        )
    if isinstance(error, TLSFailure):
        return str(
            _l(
                "The secure connection failed. Check the security setting and the "
                "port, or the server's certificate."
            )
        )
    if isinstance(error, TimeoutFailure):
        return str(_l("The server did not answer in time. Try again later."))
    return str(_l("The server reported a problem: %(detail)s", detail=error.detail))
