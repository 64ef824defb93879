"""Bring replies into their tasks: sync an account's INBOX, keep what threads.

The IMAP session runs outside any database transaction; each batch the mail
core yields is written in one short transaction (messages, files, cursor), so
a crash loses at most one batch, which the next run fetches again.
"""

import logging
from datetime import timedelta
from email.utils import formataddr

from flask import current_app
from flask_babel import lazy_gettext as _l
from flask_babel import ngettext
from sqlalchemy import select, update

from posta.extensions import db
from posta.mail.errors import AuthError, FolderGone, MailError
from posta.mail.imap import ImapSession
from posta.mail.parse import ParsedMessage
from posta.mail.sync import FolderState, SyncBatch, sync_folder
from posta.mail.threads import reference_ids
from posta.models import (
    AccountStatus,
    Attachment,
    Direction,
    EmailAccount,
    MailFolder,
    Message,
    utcnow,
)
from posta.services import accounts, storage

logger = logging.getLogger(__name__)

FOLDERS = ("INBOX",)
BATCH_SIZE = 100


def sync_account(account_id: int) -> int | None:
    """Import new replies of one account; return how many, or None if skipped."""
    until = utcnow() + timedelta(seconds=current_app.config["POSTA_SYNC_LEASE_SECONDS"])
    acquired = EmailAccount.acquire_sync_lease(account_id, until)
    db.session.commit()
    if not acquired:
        logger.info("account %s: another sync holds the lease; skipped", account_id)
        return None
    logger.info("account %s: sync started", account_id)
    account = db.session.get(EmailAccount, account_id)
    if account is None or account.status != AccountStatus.ACTIVE:
        _release(account_id)
        return None
    added = 0
    error = None
    try:
        settings = accounts.imap_settings(account)
        address = account.email
        states = {name: _load_state(account_id, name) for name in FOLDERS}
        # The IMAP session must not hold a database transaction open.
        db.session.commit()
        added, error = _sync_folders(account_id, address, settings, states)
    except Exception:
        db.session.rollback()
        error = str(_l("The sync failed unexpectedly; it will be tried again."))
        raise
    finally:
        _finish(account_id, added, error)
    return added


def _sync_folders(account_id, address, settings, states) -> tuple[int, str | None]:
    """Run the mail core over each folder; return (messages added, account error)."""
    added = 0
    try:
        with ImapSession(settings) as session:
            for name, state in states.items():
                try:
                    for batch in sync_folder(
                        session, state, _wanted(account_id), BATCH_SIZE
                    ):
                        added += _store_batch(account_id, name, batch)
                except FolderGone as exc:
                    logger.warning("account %s folder %s: gone", account_id, name)
                    _folder_error(account_id, name, exc.detail)
    except AuthError as exc:
        logger.warning("account %s: login refused", account_id)
        return added, accounts.auth_failure_text(exc, address, settings.host)
    except MailError as exc:
        logger.warning("account %s: sync failed: %s", account_id, exc.kind)
        return added, exc.detail
    return added, None


def _wanted(account_id: int):
    """Return the filter that keeps only messages threading into a task."""

    def wanted(headers) -> set[int]:
        uids = {
            h.uid
            for h in headers
            if Message.task_for_references(reference_ids(h.in_reply_to, h.references))
        }
        db.session.commit()
        logger.debug(
            "account %s: %d of %d headers belong to tasks",
            account_id,
            len(uids),
            len(headers),
        )
        return uids

    return wanted


def _store_batch(account_id: int, folder: str, batch: SyncBatch) -> int:
    """Write one batch's messages, files and folder cursor in one transaction."""
    keys = [parsed.dedupe_key for _, parsed in batch.messages]
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
        for uid, parsed in batch.messages:
            if parsed.dedupe_key in seen:
                continue
            seen.add(parsed.dedupe_key)
            task_id = Message.task_for_references(
                reference_ids(parsed.in_reply_to, parsed.references)
            )
            if task_id is None:
                continue
            message = _message_row(account_id, folder, uid, task_id, parsed)
            for part in parsed.attachments:
                key = storage.save_bytes(part.data)
                stored_files.append(key)
                message.attachments.append(
                    Attachment(
                        filename=part.filename[:255] or "attachment",
                        content_type=part.content_type[:255],
                        size=len(part.data),
                        storage_key=key,
                        content_id=part.content_id,
                        inline=part.inline,
                    )
                )
            db.session.add(message)
            added += 1
        _save_state(account_id, batch.state)
        db.session.commit()
    except BaseException:
        db.session.rollback()
        storage.delete(stored_files)
        raise
    logger.info(
        "account %s folder %s: %d new messages up to uid %s",
        account_id,
        folder,
        added,
        batch.state.last_uid,
    )
    return added


def _message_row(account_id, folder, uid, task_id, parsed: ParsedMessage) -> Message:
    return Message(
        account_id=account_id,
        task_id=task_id,
        direction=Direction.IN.value,
        message_id=parsed.message_id,
        dedupe_key=parsed.dedupe_key,
        in_reply_to=parsed.in_reply_to,
        references=" ".join(parsed.references),
        subject=parsed.subject[:998],
        from_addr=(parsed.from_addr or "")[:254],
        from_name=parsed.from_name[:254],
        to_addrs=_join(parsed.to),
        cc_addrs=_join(parsed.cc),
        text_body=parsed.text,
        html_body=parsed.html,
        sent_date=parsed.date,
        folder=folder,
        uid=uid,
        defects="\n".join(parsed.defects),
    )


def _load_state(account_id: int, name: str) -> FolderState:
    row = _folder_row(account_id, name)
    if row is None:
        return FolderState(name=name, uidvalidity=None, last_uid=0, uidnext=None)
    return FolderState(
        name=name,
        uidvalidity=row.uidvalidity,
        last_uid=row.last_uid,
        uidnext=row.uidnext,
    )


def _save_state(account_id: int, state: FolderState) -> None:
    row = _folder_row(account_id, state.name) or MailFolder(
        account_id=account_id, name=state.name
    )
    row.uidvalidity = state.uidvalidity
    row.uidnext = state.uidnext
    row.last_uid = state.last_uid
    row.last_error = None
    row.last_synced_at = utcnow()
    db.session.add(row)


def _folder_error(account_id: int, name: str, detail: str) -> None:
    row = _folder_row(account_id, name) or MailFolder(account_id=account_id, name=name)
    row.last_error = detail[:500]
    db.session.add(row)
    db.session.commit()


def _folder_row(account_id: int, name: str) -> MailFolder | None:
    return db.session.scalars(
        select(MailFolder).where(
            MailFolder.account_id == account_id, MailFolder.name == name
        )
    ).first()


def _finish(account_id: int, added: int, error: str | None) -> None:
    """Record the outcome on the account and release its sync lease."""
    result = ngettext("%(num)d new message", "%(num)d new messages", added)
    db.session.execute(
        update(EmailAccount)
        .where(EmailAccount.id == account_id)
        .values(
            sync_lease_until=None,
            last_sync_at=utcnow(),
            last_sync_result=result,
            last_error=error[:500] if error else None,
        )
    )
    db.session.commit()
    logger.info(
        "account %s: sync finished, %d new%s",
        account_id,
        added,
        "; failed" if error else "",
    )


def _release(account_id: int) -> None:
    db.session.execute(
        update(EmailAccount)
        .where(EmailAccount.id == account_id)
        .values(sync_lease_until=None)
    )
    db.session.commit()


def _join(pairs: list[tuple[str, str]]) -> str:
    return ", ".join(formataddr(pair) for pair in pairs)
