"""Mail through Microsoft Graph: bring replies into tasks, send from tasks.

Sync follows the Inbox's delta rounds. Each page is written in one short
transaction together with the link that resumes after it: the page's nextLink
while the round goes on, the deltaLink once the last page is stored. A pass cut
short (throttled, crashed) therefore resumes where it stopped, and a 410 starts
over with no link, the replayed messages being skipped by their dedupe key.
"""

import logging
from datetime import timedelta
from email.utils import formataddr

from flask import current_app
from flask_babel import lazy_gettext as _l
from flask_babel import ngettext
from sqlalchemy import select, update

from posta.extensions import db
from posta.mail import graph
from posta.mail.compose import OutgoingMail
from posta.mail.errors import (
    AmbiguousSendError,
    AuthError,
    MailError,
    ResyncNeeded,
)
from posta.mail.sanitize import html_to_text, sanitize_html
from posta.models import (
    AccountStatus,
    Attachment,
    Direction,
    EmailAccount,
    MailFolder,
    Message,
    utcnow,
)
from posta.services import linking, microsoft, storage
from posta.services.linking import Link

logger = logging.getLogger(__name__)

FOLDER = "Inbox"
PAGE_SIZE = 100
RECONNECT = microsoft.RECONNECT


def sync_account(account_id: int) -> int | None:
    """Import new replies of one Microsoft account; return how many, or None."""
    until = utcnow() + timedelta(seconds=current_app.config["POSTA_SYNC_LEASE_SECONDS"])
    acquired = EmailAccount.acquire_sync_lease(account_id, until)
    db.session.commit()
    if not acquired:
        logger.info("account %s: another sync holds the lease; skipped", account_id)
        return None
    account = db.session.get(EmailAccount, account_id)
    if account is None or account.status != AccountStatus.ACTIVE:
        _release(account_id)
        return None
    logger.info("account %s: Graph sync started", account_id)
    pages: list[int] = []
    error, note = None, None
    try:
        client = microsoft.client_for(account)
        folder = _folder_row(account_id)
        link = (folder.next_link or folder.delta_link) if folder else None
        # The Graph session must not hold a database transaction open.
        db.session.commit()
        try:
            _run(account_id, client, link, pages)
        except ResyncNeeded:
            logger.warning("account %s: delta state lost; starting over", account_id)
            _save_links(account_id, next_link=None, delta_link=None)
            db.session.commit()
            _run(account_id, client, None, pages)
    except graph.Throttled as exc:
        logger.warning("account %s: throttled (%s)", account_id, exc.detail)
        note = str(_l("throttled, will resume"))
    except AuthError as exc:
        logger.warning("account %s: sign-in refused: %s", account_id, exc.kind)
        error = str(RECONNECT)
        microsoft.needs_reconnect(account_id, error)
    except ValueError:
        # The encryption key changed since the account was connected.
        error = str(RECONNECT)
        microsoft.needs_reconnect(account_id, error)
    except MailError as exc:
        logger.warning("account %s: Graph sync failed: %s", account_id, exc.kind)
        error = exc.detail
    except Exception:
        db.session.rollback()
        error = str(_l("The sync failed unexpectedly; it will be tried again."))
        raise
    finally:
        _finish(account_id, sum(pages), error, note)
    return sum(pages)


def send(account: EmailAccount, mail: OutgoingMail, reply_to_remote_id: str | None):
    """Send through Graph; return (error or None, SentMail or None).

    The caller has claimed the message and committed; no transaction is open.
    """
    try:
        client = microsoft.client_for(account)
        return None, graph.send_mail(client, mail, reply_to_remote_id)
    except ValueError:
        return str(RECONNECT), None
    except AmbiguousSendError as exc:
        reason = (
            "The connection broke after the message went out; it may have been "
            f"delivered. Check the Sent folder before retrying. ({exc.detail})"
        )
        return reason, None
    except AuthError as exc:
        microsoft.needs_reconnect(account.id, str(RECONNECT))
        return f"{RECONNECT} ({exc.detail})", None
    except MailError as exc:
        return exc.detail, None


def reply_target(message: Message) -> str | None:
    """Return the Graph id of the received message this one answers, if any."""
    if not message.in_reply_to:
        return None
    return db.session.scalars(
        select(Message.remote_id)
        .where(
            Message.account_id == message.account_id,
            Message.message_id == message.in_reply_to,
            Message.direction == Direction.IN,
            Message.remote_id.is_not(None),
        )
        .limit(1)
    ).first()


def _run(account_id: int, client, link: str | None, pages: list[int]) -> None:
    """Store every page of one delta round, appending each page's count to pages."""
    for page in graph.delta_inbox(client, link, page_size=PAGE_SIZE):
        kept = _threaded(account_id, page.messages)
        files = graph.fetch_parallel(
            client,
            graph.fetch_attachments,
            [m.id for m, _ in kept if m.has_attachments],
        )
        pages.append(_store_page(account_id, kept, files, page))


def _threaded(account_id: int, messages) -> list[tuple[graph.GraphMessage, Link]]:
    """Return the messages that belong to a task, with their Link to it."""
    kept = []
    for message in messages:
        link = linking.graph_link(account_id, message)
        if link is not None:
            kept.append((message, link))
    db.session.commit()
    return kept


def _store_page(account_id: int, kept, files: dict, page: graph.DeltaPage) -> int:
    """Write one page's messages, files and resume link in one transaction."""
    keys = [_dedupe_key(m) for m, _ in kept]
    seen = set(
        db.session.scalars(
            select(Message.dedupe_key).where(
                Message.account_id == account_id, Message.dedupe_key.in_(keys)
            )
        )
    )
    stored_files = []
    added = 0
    try:
        for message, link in kept:
            key = _dedupe_key(message)
            if key in seen:
                continue
            seen.add(key)
            row = _message_row(account_id, link.task_id, message)
            row.link_reason = link.reason
            for item in files.get(message.id, []):
                storage_key = storage.save_bytes(item.content)
                stored_files.append(storage_key)
                row.attachments.append(
                    Attachment(
                        filename=item.name[:255] or "attachment",
                        content_type=item.content_type[:255],
                        size=len(item.content),
                        storage_key=storage_key,
                        content_id=(item.content_id or "").strip("<>") or None,
                        inline=item.is_inline,
                    )
                )
            db.session.add(row)
            added += 1
        if page.delta_link:
            _save_links(account_id, next_link=None, delta_link=page.delta_link)
        else:
            _save_links(account_id, next_link=page.next_link)
        db.session.commit()
    except BaseException:
        db.session.rollback()
        storage.delete(stored_files)
        raise
    logger.info(
        "account %s: %d new of %d on this page%s",
        account_id,
        added,
        len(page.messages),
        "; round complete" if page.delta_link else "",
    )
    return added


def _message_row(account_id: int, task_id: int, message: graph.GraphMessage):
    if message.body_type == "html":
        html = sanitize_html(message.body)
        text = html_to_text(html)
    else:
        html, text = None, message.body
    sender = message.sender
    return Message(
        account_id=account_id,
        task_id=task_id,
        direction=Direction.IN.value,
        message_id=message.internet_message_id,
        dedupe_key=_dedupe_key(message),
        in_reply_to=message.in_reply_to,
        references=" ".join(message.references),
        subject=message.subject[:998],
        from_addr=(sender.address if sender else "")[:254],
        from_name=(sender.name if sender else "")[:254],
        to_addrs=_join(message.to),
        cc_addrs=_join(message.cc),
        text_body=text,
        html_body=html,
        sent_date=message.received_at,
        folder=FOLDER,
        remote_id=message.id,
        conversation_id=message.conversation_id,
    )


def _dedupe_key(message: graph.GraphMessage) -> str:
    # Graph ids change when a message moves; the Internet id does not.
    return message.internet_message_id or f"graph:{message.id}"


def _save_links(account_id: int, next_link: str | None, **delta) -> None:
    row = _folder_row(account_id) or MailFolder(account_id=account_id, name=FOLDER)
    row.next_link = next_link
    if "delta_link" in delta:
        row.delta_link = delta["delta_link"]
    row.last_error = None
    row.last_synced_at = utcnow()
    db.session.add(row)


def _folder_row(account_id: int) -> MailFolder | None:
    return db.session.scalars(
        select(MailFolder).where(
            MailFolder.account_id == account_id, MailFolder.name == FOLDER
        )
    ).first()


def _finish(account_id: int, added: int, error: str | None, note: str | None):
    """Record the outcome on the account and release its sync lease."""
    result = ngettext("%(num)d new message", "%(num)d new messages", added)
    if note:
        result = f"{result}; {note}"
    db.session.execute(
        update(EmailAccount)
        .where(EmailAccount.id == account_id)
        .values(
            sync_lease_until=None,
            last_sync_at=utcnow(),
            last_sync_result=result[:200],
            last_error=error[:500] if error else None,
        )
    )
    db.session.commit()
    logger.info(
        "account %s: Graph sync finished, %d new%s",
        account_id,
        added,
        f"; {note}" if note else ("; failed" if error else ""),
    )


def _release(account_id: int) -> None:
    db.session.execute(
        update(EmailAccount)
        .where(EmailAccount.id == account_id)
        .values(sync_lease_until=None)
    )
    db.session.commit()


def _join(recipients) -> str:
    return ", ".join(formataddr((r.name, r.address)) for r in recipients)
