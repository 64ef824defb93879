"""Microsoft accounts: the app registration, tokens at rest, connecting a mailbox.

The web layer runs the OAuth dance (Authlib) and hands the token here; jobs ask
for a GraphClient whose renewed tokens are encrypted and saved at once, because
Microsoft rotates the refresh token on every renewal and the old one dies.
"""

import base64
import json
import logging
import secrets

from flask import current_app
from flask_babel import lazy_gettext as _l
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from posta.extensions import db
from posta.mail import graph
from posta.mail.errors import MailError
from posta.models import AccountKind, AccountStatus, EmailAccount, User, Workspace
from posta.services import permissions

logger = logging.getLogger(__name__)

# What Posta asks for, and why: shown before leaving Posta and in the README.
PERMISSIONS = (
    ("User.Read", _l("Who you are: your name and email address.")),
    ("Mail.Read", _l("Read the replies to the emails you send from tasks.")),
    ("Mail.Send", _l("Send email from tasks as you.")),
    ("Contacts.Read", _l("Bring in your contacts as address suggestions.")),
    ("offline_access", _l("Keep syncing while you are away, until you disconnect.")),
)
SCOPES = tuple(name for name, _ in PERMISSIONS)
# The tenant id Microsoft puts in tokens of personal (consumer) accounts.
CONSUMER_TENANT_ID = "9188040d-6c67-4c5b-b112-36a304b66dad"
PERSONAL_DOMAINS = ("outlook.com", "hotmail.com", "live.com", "msn.com")

SEND_POLICIES = (
    (permissions.ONLY_ME, _l("Only me")),
    (permissions.ADMINS, _l("Me and the admins")),
    (permissions.EVERYONE, _l("Everyone in the workspace except guests")),
)
RECONNECT = _l("Microsoft no longer accepts this sign-in. Reconnect the account.")
# The token fields worth keeping; an id_token or userinfo is never stored.
TOKEN_FIELDS = ("access_token", "refresh_token", "expires_at", "token_type")


class MicrosoftError(ValueError):
    """A sign-in that failed, with a sentence saying what to do next."""


def is_configured(config=None) -> bool:
    """Tell whether an admin has entered the Entra app registration."""
    config = config or current_app.config
    return bool(
        config.get("MICROSOFT_CLIENT_ID") and config.get("MICROSOFT_CLIENT_SECRET")
    )


def endpoints(config=None) -> tuple[str, str]:
    """Return the authorize and token URLs of the configured authority and tenant."""
    config = config or current_app.config
    authority = config["MICROSOFT_AUTHORITY"].rstrip("/")
    tenant = config["MICROSOFT_TENANT"].strip("/")
    # MSAL-style authorities already end with the tenant; don't add it twice.
    if authority.rsplit("/", 1)[-1] != tenant:
        authority = f"{authority}/{tenant}"
    base = f"{authority}/oauth2/v2.0"
    return f"{base}/authorize", f"{base}/token"


def graph_settings() -> graph.GraphSettings:
    """Return the Graph endpoints and app registration for GraphClient."""
    config = current_app.config
    return graph.GraphSettings(
        graph_url=config["MICROSOFT_GRAPH_URL"],
        token_url=endpoints(config)[1],
        client_id=config["MICROSOFT_CLIENT_ID"],
        client_secret=config["MICROSOFT_CLIENT_SECRET"],
        scopes=SCOPES,
        timeout=float(config["POSTA_MAIL_TIMEOUT"]),
    )


def new_nonce() -> str:
    """Return a fresh nonce for the authorization request."""
    return secrets.token_urlsafe(24)


def error_text(error: str | None, description: str | None = None) -> str:
    """Turn an error Microsoft sent back into a sentence with a next step."""
    description = description or ""
    if "AADSTS65001" in description or error == "consent_required":
        return str(
            _l(
                "An administrator of your Microsoft organisation must approve Posta "
                "first. Ask them to grant admin consent to the app in Microsoft "
                "Entra, then sign in again."
            )
        )
    if "AADSTS50020" in description or "AADSTS50194" in description:
        return str(
            _l(
                "This kind of Microsoft account cannot sign in here: a personal "
                "account was used where only work or school accounts are allowed, "
                "or the reverse. Sign in with the other kind of account, or ask your "
                "Posta admin to change the supported account types."
            )
        )
    if "AADSTS54005" in description or "AADSTS70008" in description:
        return str(
            _l(
                "The sign-in expired or was already used. Start again with Sign in "
                "with Microsoft."
            )
        )
    if error == "access_denied":
        return str(
            _l(
                "You declined the permissions, so nothing was connected. To connect "
                "the mailbox, sign in again and accept."
            )
        )
    if error == "mismatching_state":
        return str(
            _l(
                "This sign-in does not belong to this browser session (it was "
                "started elsewhere or expired). Start again with Sign in with "
                "Microsoft."
            )
        )
    code = description.split(":", 1)[0] if description.startswith("AADSTS") else ""
    return str(
        _l(
            "Microsoft refused the sign-in (%(code)s). Try again; if it keeps "
            "failing, ask your Posta admin.",
            code=code or error or "?",
        )
    )


def id_token_claims(token: dict, nonce: str | None) -> dict:
    """Return the id_token's claims, if Microsoft sent one, after checking its nonce.

    Its signature is not checked: it came straight from the token endpoint over
    TLS, which OpenID Connect accepts in place of the signature for this flow.
    """
    raw = token.get("id_token")
    if not raw:
        return {}
    try:
        payload = raw.split(".")[1]
        claims = json.loads(
            base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
        )
    except (IndexError, ValueError):
        raise MicrosoftError(error_text("invalid_id_token")) from None
    if claims.get("nonce") is not None and claims.get("nonce") != nonce:
        raise MicrosoftError(error_text("mismatching_state"))
    return claims


def read_profile(token: dict) -> tuple[graph.GraphUser, dict]:
    """Ask Graph who signed in; return them and the token (renewed if it had to)."""
    renewed = {}
    client = graph.GraphClient(
        graph_settings(),
        token,
        renewed.update,
        mailbox="sign-in-" + secrets.token_hex(4),
    )
    try:
        profile = graph.me(client)
    except MailError as exc:
        logger.warning("reading the Microsoft profile failed: %s", exc.kind)
        raise MicrosoftError(
            _l(
                "Microsoft did not say who signed in (%(detail)s). Try again.",
                detail=exc.kind,
            )
        ) from exc
    return profile, renewed or token


def is_personal(profile: graph.GraphUser, claims: dict) -> bool:
    """Tell a personal Microsoft account from a work or school one."""
    domain = profile.address.rpartition("@")[2].lower()
    return (
        profile.personal
        or domain in PERSONAL_DOMAINS
        or claims.get("tid") == CONSUMER_TENANT_ID
    )


def connect_refusal(user: User, from_settings: bool, address: str | None = None):
    """Return why this person may not connect a mailbox now, or None."""
    return permissions.connect_refusal(user, Workspace.get(), address, from_settings)


def connect_account(
    user: User,
    token: dict,
    profile: graph.GraphUser,
    claims: dict,
    from_settings: bool = False,
) -> EmailAccount:
    """Save the signed-in mailbox, or update it when it is already connected."""
    address = profile.address.strip().lower()
    if not address:
        raise MicrosoftError(
            _l("This Microsoft account has no mailbox. Sign in with one that has.")
        )
    refusal = connect_refusal(user, from_settings, address)
    if refusal:
        raise MicrosoftError(refusal)
    existing = db.session.scalars(
        select(EmailAccount).where(EmailAccount.email == address)
    ).first()
    if existing and existing.connected_by_id != user.id and not user.is_admin:
        raise MicrosoftError(
            _l(
                "%(address)s is already connected by %(name)s; ask them or an admin.",
                address=address,
                name=existing.connected_by.name,
            )
        )
    account = existing or EmailAccount(
        email=address, connected_by_id=user.id, send_policy=permissions.ONLY_ME
    )
    if account.kind != AccountKind.GRAPH:
        # A mailbox moving from IMAP to Graph starts its Inbox cursor over.
        account.folders.clear()
    account.kind = AccountKind.GRAPH.value
    account.display_name = profile.display_name[:120] or user.name
    account.username = address
    account.personal = is_personal(profile, claims)
    for name in ("imap_host", "imap_port", "imap_security"):
        setattr(account, name, None)
    for name in ("smtp_host", "smtp_port", "smtp_security"):
        setattr(account, name, None)
    account.secret = _encrypt(token)
    account.status = AccountStatus.ACTIVE.value
    account.last_error = None
    db.session.add(account)
    db.session.commit()
    logger.info(
        "Microsoft account %s (%s) %s by user %s",
        account.id,
        address,
        "updated" if existing else "connected",
        user.id,
    )
    return account


def set_send_policy(user: User, account: EmailAccount, policy: str) -> None:
    """Record who may send from an account; only its owner or an admin may."""
    if not permissions.may_manage(user, account):
        raise MicrosoftError(_l("Only the person who connected it or an admin may."))
    if policy not in dict(SEND_POLICIES):
        raise MicrosoftError(_l("Choose who may send from this account."))
    account.send_policy = policy
    db.session.commit()
    logger.info("account %s send policy %s by user %s", account.id, policy, user.id)


def client_for(account: EmailAccount) -> graph.GraphClient:
    """Return a GraphClient that saves every renewed token, encrypted, at once."""
    token = json.loads(current_app.extensions["posta_secrets"].decrypt(account.secret))
    box = current_app.extensions["posta_secrets"]
    engine = db.engine
    account_id = account.id

    def save(new_token: dict) -> None:
        # Its own short transaction: the job may be anywhere in its work, and
        # losing the rotated refresh token would disconnect the mailbox.
        secret = box.encrypt(json.dumps(_kept(new_token)))
        with Session(engine) as session:
            session.execute(
                update(EmailAccount)
                .where(EmailAccount.id == account_id)
                .values(secret=secret)
            )
            session.commit()
        logger.info("account %s: renewed Microsoft token saved", account_id)

    return graph.GraphClient(graph_settings(), token, save, mailbox=account.email)


def needs_reconnect(account_id: int, detail: str) -> None:
    """Stop syncing an account whose sign-in Microsoft no longer accepts."""
    db.session.execute(
        update(EmailAccount)
        .where(EmailAccount.id == account_id)
        .values(status=AccountStatus.NEEDS_RECONNECT.value, last_error=detail[:500])
    )
    db.session.commit()
    logger.warning("account %s: Microsoft sign-in refused; needs reconnect", account_id)


def accounts_to_reconnect(user: User) -> list[EmailAccount]:
    """Return the accounts this person should reconnect: their own, or all if admin."""
    if not user.is_authenticated or user.is_guest:
        return []
    query = select(EmailAccount).where(
        EmailAccount.status == AccountStatus.NEEDS_RECONNECT,
        EmailAccount.kind == AccountKind.GRAPH,
    )
    if not user.is_admin:
        query = query.where(EmailAccount.connected_by_id == user.id)
    return db.session.scalars(query.order_by(EmailAccount.email)).all()


def _encrypt(token: dict) -> bytes:
    return current_app.extensions["posta_secrets"].encrypt(json.dumps(_kept(token)))


def _kept(token: dict) -> dict:
    return {k: token[k] for k in TOKEN_FIELDS if token.get(k) is not None}
