"""Workspace contacts: addresses the composer suggests, imported from mailboxes."""

import logging

from flask_babel import lazy_gettext as _l
from sqlalchemy import select

from posta.extensions import db
from posta.mail import graph
from posta.mail.errors import AuthError, MailError
from posta.models import AccountKind, Contact, EmailAccount, User
from posta.services import microsoft, permissions, plans

logger = logging.getLogger(__name__)


class ContactsError(ValueError):
    """An import that could not run, with a sentence for the person."""


def import_from(user: User, account: EmailAccount) -> int:
    """Bring up to the plan's limit of an account's contacts in; return how many."""
    if not permissions.may_manage(user, account):
        raise ContactsError(_l("Only the person who connected it or an admin may."))
    if account.kind != AccountKind.GRAPH:
        raise ContactsError(_l("Only Microsoft accounts can import contacts."))
    try:
        client = microsoft.client_for(account)
        # No transaction stays open while Microsoft answers.
        db.session.commit()
        found = graph.import_contacts(client, limit=plans.CONTACTS_PER_ACCOUNT)
    except (AuthError, ValueError) as exc:
        microsoft.needs_reconnect(account.id, str(microsoft.RECONNECT))
        raise ContactsError(microsoft.RECONNECT) from exc
    except MailError as exc:
        logger.warning("account %s: contacts import failed: %s", account.id, exc.kind)
        raise ContactsError(
            _l(
                "Microsoft did not answer (%(detail)s). Try again later.",
                detail=exc.kind,
            )
        ) from exc
    by_address = {c.address.strip().lower(): c for c in found if c.address.strip()}
    known = set(
        db.session.scalars(
            select(Contact.address).where(Contact.address.in_(list(by_address)))
        )
    )
    for address, contact in by_address.items():
        if address not in known:
            db.session.add(
                Contact(
                    address=address[:254],
                    name=contact.name[:254],
                    source_account_id=account.id,
                )
            )
    db.session.commit()
    added = len(by_address.keys() - known)
    logger.info(
        "account %s: %d contacts imported, %d already known by user %s",
        account.id,
        added,
        len(known),
        user.id,
    )
    return added
