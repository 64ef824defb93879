"""Signatures: per account, one default, appended below the body when sending."""

from flask_babel import lazy_gettext as _l
from markupsafe import escape
from sqlalchemy import update

from posta.extensions import db
from posta.mail.sanitize import html_to_text, sanitize_html
from posta.models import EmailAccount, Signature, User, Workspace
from posta.services import permissions

MAX_NAME = 120
# The conventional "-- " line lets mail clients recognise and fold the signature.
TEXT_SEPARATOR = "\n\n-- \n"


class SignatureError(ValueError):
    """A signature that cannot be saved or used, with a message for the person."""

    def __init__(self, message):
        super().__init__(message)
        self.message = message


def create(
    user: User, account: EmailAccount, name: str, html: str, make_default: bool
) -> Signature:
    """Save a sanitized signature; the first one of an account is its default."""
    _check(permissions.signature_refusal(user, account))
    name = (name or "").strip()
    if not name or len(name) > MAX_NAME:
        raise SignatureError(_l("Give the signature a name of up to 120 characters."))
    clean = sanitize_html(html or "").strip()
    text = html_to_text(clean).strip()
    if not text and "<img" not in clean:
        raise SignatureError(_l("Write the signature."))
    first = not Signature.for_accounts([account.id])
    signature = Signature(
        account_id=account.id,
        name=name,
        html=clean,
        text=text,
        created_by_id=user.id,
    )
    db.session.add(signature)
    db.session.flush()
    if first or make_default:
        _make_default(signature)
    db.session.commit()
    return signature


def set_default(user: User, signature: Signature) -> None:
    """Make this the signature the composer picks first for its account."""
    _check(permissions.signature_refusal(user, signature.account))
    _make_default(signature)
    db.session.commit()


def delete(user: User, signature: Signature) -> None:
    """Remove a signature; emails already sent keep theirs."""
    _check(permissions.signature_refusal(user, signature.account))
    db.session.delete(signature)
    db.session.commit()


def for_sending(account: EmailAccount, signature_id: int | None) -> Signature | None:
    """Return the signature chosen in the composer, checked against the account."""
    if signature_id is None:
        return None
    _check(permissions.library_refusal(Workspace.get()))
    signature = db.session.get(Signature, signature_id)
    if signature is None or signature.account_id != account.id:
        raise SignatureError(
            _l(
                "That signature belongs to another account; pick one of "
                "%(address)s or none.",
                address=account.email,
            )
        )
    return signature


def signed(body: str, signature: Signature | None) -> tuple[str, str | None]:
    """Return the text and HTML bodies, with the signature below the body."""
    if signature is None:
        return body, None
    text = f"{body}{TEXT_SEPARATOR}{signature.text}" if body else signature.text
    paragraphs = escape(body).replace("\n", "<br>\n")
    html = (
        f'<div class="posta-body">{paragraphs}</div>\n'
        f'<div class="posta-signature">-- <br>\n{signature.html}</div>'
    )
    return text, html


def _make_default(signature: Signature) -> None:
    db.session.execute(
        update(Signature)
        .where(Signature.account_id == signature.account_id)
        .values(is_default=Signature.id == signature.id)
        .execution_options(synchronize_session=False)
    )
    db.session.refresh(signature)


def _check(reason) -> None:
    if reason:
        raise SignatureError(reason)
